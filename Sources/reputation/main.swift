// tern-reputation: watches the reputation of the sending IPs.
//
// Checks every IP of every pool against the DNS blocklists of TERN_DNSBL_FILE and its own
// identity (PTR forward-confirmed and equal to its EHLO name), and publishes each pool's
// active IPs for the scheduler; writes `ip_listed` and `ip_delisted` to `events`. Consumes
// `results` and `inbound` (group `reputation`) into per-IP and per-provider statistics, and
// runs the warm-up plans of TERN_WARMUP and of the API (paused plans do not grow), publishing
// daily caps per provider profile name for the scheduler. DNS answers come from the
// network and are classified strictly: an answer a list does not document is an error to
// report, never a listing and never a clean bill.
//
// Settings (environment): TERN_REDIS_URL, TERN_REDIS_PREFIX, TERN_LOG_LEVEL, TERN_INSTANCE,
// TERN_POOLS, TERN_POOL_ALL_LISTED, TERN_DNS_RESOLVER (required), TERN_DNS_TIMEOUT,
// TERN_DNSBL_FILE, TERN_DNSBL_INTERVAL, TERN_DNSBL_CLEAN_CHECKS, TERN_WARMUP,
// TERN_WARMUP_SCHEDULE, TERN_WARMUP_MIN_SAMPLE, TERN_PROVIDERS_FILE; see ReputationSettings
// for defaults.
//
// Known limits: run one reputation
// process (a second one would check twice and not claim the first one's pending entries).

import TernCore
import TernReputation

await DaemonMain.run("reputation") { env, common, logger in
    try ReputationDaemon(settings: ReputationSettings(env, common: common), logger: logger)
}
