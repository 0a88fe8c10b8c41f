// tern-sender: delivers messages to the recipient's MX hosts over SMTP.
//
// Consumes `ready` (group "sender": one entry per attempt, with the source IP and EHLO name
// the scheduler chose) and the message records it names; produces `results` (one entry per
// attempt: outcome, reply code and text, stage, MX host and address, source IP, TLS version,
// cipher and certificate check, time taken),
// written in the same transaction that acknowledges the `ready` entry.
//
// Does not trust: DNS answers (names and record sizes are checked) and everything an SMTP
// server says (reply lines and counts are bounded, text is stored and logged only after
// being made printable). Redis entries come from other Tern daemons and are trusted to be
// well formed; one that is not is logged at critical and acknowledged.
//
// Settings (environment): TERN_REDIS_URL, TERN_REDIS_PREFIX, TERN_LOG_LEVEL, TERN_INSTANCE,
// TERN_DNS_RESOLVER (default 127.0.0.1:53; the system resolver is never used),
// TERN_DNS_TIMEOUT, TERN_SMTP_PORT (default 25), TERN_VERP_DOMAIN and TERN_VERP_SECRET
// (required), TERN_SENDER_CONCURRENCY (default 2000), TERN_MAX_MESSAGES_PER_CONNECTION (100),
// TERN_CONNECTION_IDLE (30s), TERN_GROUP_MAX_CONNECTIONS (10), TERN_GROUP_CONNECTION_WAIT
// (2m), TERN_PROVIDERS_FILE (the profiles' connection limits), TERN_SENDER_CLAIM_IDLE (default 10m), TERN_SENDER_GRACE
// (default 30s), TERN_SMTP_TIMEOUT_* (RFC 5321 §4.5.3.2 defaults), TERN_HOSTNAME,
// TERN_TLS_POLICY (default opportunistic), TERN_TLS_POLICY_DOMAINS, TERN_TLS_CA_FILE
// (default the system's trust store), TERN_TLS_FALLBACK_TTL (default 1h); see SenderSettings.
//
// Known limits: no DANE or MTA-STS (TLS is required only where configured); 8-bit bodies go
// to servers without 8BITMIME unconverted; delivery is at least once (a crash after the
// remote's acceptance sends the message again); a session keeps the lease of the group that
// opened it while it serves other groups' mail to the same MX host.

import TernCore
import TernSender

await DaemonMain.run("sender") { env, common, logger in
    try SenderDaemon(settings: SenderSettings(env, common: common), logger: logger)
}
