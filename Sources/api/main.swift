// tern-api: the HTTP API that accepts messages and tells what became of them.
//
// Consumes HTTP requests from clients (POST /v1/send and /v1/send/batch,
// GET /v1/messages/{id}, GET /health, the operators' endpoints);
// produces, per accepted message and in one MULTI/EXEC, the record `msg:<id>`, its history
// `hist:<id>`, an entry on `submit` (read by the scheduler) and an `accepted` event on
// `events`. It reads `att:<id>` and `hist:<id>` back for GET. With TERN_WEBHOOKS set it
// also consumes `events` (group `webhooks`) and posts each event, signed, to the endpoints
// (`wh:*` keys hold what waits; TernAPI/Webhooks).
//
// Untrusted input: everything from the network. The HTTP server bounds the request line
// (8 KB), the header section (64 KB, 100 fields), the body (TERN_API_MAX_BODY, refused
// with 413 before it is read) and the time of each step; it rejects chunked bodies, header
// folding and control characters, and closes the connection after any malformed request.
// Keys are compared as SHA-256 digests in constant time and never logged. Every field of a
// send request is validated (addresses, CR/LF in headers and subject, sizes) before a byte
// reaches Redis; a refused request writes nothing.
//
// Settings (environment): TERN_REDIS_URL, TERN_REDIS_PREFIX, TERN_LOG_LEVEL, TERN_INSTANCE,
// TERN_API_LISTEN, TERN_API_KEYS, TERN_API_MAX_BODY, TERN_API_MAX_BATCH,
// TERN_API_IDEMPOTENCY_TTL, TERN_HOSTNAME, TERN_MAX_AGE,
// TERN_RECORD_TTL, TERN_API_IDLE_TIMEOUT, TERN_API_REQUEST_TIMEOUT,
// TERN_API_MAX_CONNECTIONS, TERN_API_SHUTDOWN_GRACE, TERN_DKIM_KEYS, TERN_ORG_DOMAINS,
// TERN_ORG_UNSIGNED, TERN_WEBHOOKS, TERN_WEBHOOK_*, TERN_TLS_CA_FILE and TERN_DNS_RESOLVER
// (webhook hosts); see APISettings and WebhookSettings for defaults.
//
// DKIM: each message is signed once, here, with every key of its From domain, and stored
// signed; a domain without a key is sent unsigned and counted (`dkim.unsigned`).

import TernAPI
import TernCore

await DaemonMain.run("api") { env, common, logger in
    try APIDaemon(settings: APISettings(env, common: common), logger: logger)
}
