// tern-bounce-receiver: the SMTP server that remote MTAs send bounces and complaints to.
//
// Consumes: SMTP connections from anywhere on the Internet, carrying delivery status
// notifications (RFC 3464), text bounces and auto-replies addressed to the VERP return paths
// the sender signs, feedback-loop reports (RFC 5965 ARF, JMRP) addressed to
// TERN_FBL_ADDRESSES, and mail to postmaster (RFC 5321 §4.5.1). Produces: one entry on
// `stream:inbound` per reported recipient, as classified by `BounceClassifier`
// (docs/bounces.md) {id, kind, severity, reason, status, action, diagnostic, rcpt,
// reporter, remote_mta, feedback_type, id_source, format, cfbl, dkim, dkim_domain}, and
// operator counters in `counters` (bounce.forged, bounce.refused, bounce.unparsed,
// bounce.unmatched, bounce.accepted, bounce.postmaster, bounce.cfbl_forged). Asks DNS
// (TERN_DNS_RESOLVER only) for the DKIM keys of feedback reports.
//
// Trusts nothing it is sent. A recipient is accepted only if it is a VERP address of
// TERN_VERP_DOMAIN whose HMAC signature verifies, a configured feedback address or
// postmaster; anything else gets 550 5.7.1 at RCPT, and a bad signature is counted as a
// forgery. Every session is bounded: line lengths (RFC 5321 §4.5.3.1, text lines up to
// TERN_BOUNCE_MAX_LINE), message size (SIZE, and what actually arrives), recipients,
// commands, errors, idle time, session time, sessions at once in all and per client
// address; early talkers are refused. The classifier's work is bounded too (4 MiB read,
// MIME depth 8, 200 entities). Report text is cleaned and capped before it is stored. A
// message is answered 250 only after its entries are in Redis (451 otherwise).
//
// Settings (environment): TERN_REDIS_URL, TERN_REDIS_PREFIX, TERN_LOG_LEVEL, TERN_INSTANCE,
// TERN_BOUNCE_LISTEN (default 0.0.0.0:25; a systemd socket wins), TERN_VERP_DOMAIN and
// TERN_VERP_SECRET (required), TERN_FBL_ADDRESSES, TERN_HOSTNAME, TERN_BOUNCE_MAX_SIZE,
// TERN_BOUNCE_MAX_LINE, TERN_DNS_RESOLVER, TERN_BOUNCE_DKIM_TIMEOUT,
// TERN_BOUNCE_MAX_RECIPIENTS, TERN_BOUNCE_MAX_SESSIONS, TERN_BOUNCE_MAX_SESSIONS_PER_CLIENT,
// TERN_BOUNCE_MAX_COMMANDS, TERN_BOUNCE_MAX_ERRORS, TERN_BOUNCE_SESSION_TIMEOUT,
// TERN_BOUNCE_IDLE_TIMEOUT, TERN_BOUNCE_GREET_DELAY, TERN_BOUNCE_DRAIN_TIMEOUT,
// TERN_BOUNCE_TLS_CERT and TERN_BOUNCE_TLS_KEY (STARTTLS when both are set; re-read on
// SIGHUP); see BounceSettings for defaults.
//
// STARTTLS (RFC 3207): commands pipelined behind it are dropped unread, and the session
// starts afresh after the handshake; a failed handshake ends only that session.
//
// Known limits: a complaint that names its message only by Message-ID is not signed; a line
// ending in a bare LF is taken as a line end (no defence against SMTP smuggling is needed
// while nothing is relayed); Postmaster is refused like any other address that is not a
// bounce or feedback address.

import TernBounce
import TernCore

await DaemonMain.run("bounce-receiver") { env, common, logger in
    try BounceDaemon(settings: BounceSettings(env, common: common), logger: logger)
}
