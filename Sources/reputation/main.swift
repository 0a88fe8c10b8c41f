// tern-reputation: watches the reputation of the sending IPs.
//
// Will consume `results` and `inbound` and DNS blocklist answers, and keep each pool's set of
// active IPs, the warm-up caps and per-IP and per-provider statistics in Redis. Today it only
// connects, reports ready to systemd and stops cleanly on SIGTERM.
//
// Settings (environment): TERN_REDIS_URL, TERN_REDIS_PREFIX, TERN_LOG_LEVEL, TERN_INSTANCE.

import TernCore
import TernReputation

await DaemonMain.run("reputation") { _, common, logger in
    try ReputationDaemon(common: common, logger: logger)
}
