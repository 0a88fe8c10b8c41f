// tern-scheduler: decides when each message may go and from which IP.
//
// Consumes `submit` (accepted messages), `results` (attempt outcomes from the senders) and
// `inbound` (bounces from the bounce receiver); produces `ready` (attempts that may go now)
// and `events` (message events). Its input comes only from other Tern daemons, so a
// malformed entry is a bug: it is logged at critical and acknowledged, never retried forever.
//
// Settings (environment): TERN_REDIS_URL, TERN_REDIS_PREFIX, TERN_LOG_LEVEL, TERN_INSTANCE,
// TERN_POOLS, TERN_RETRY_DELAYS, TERN_MAX_AGE, TERN_GROUP_INTERVAL, TERN_RECORD_TTL,
// TERN_SCHEDULER_CLAIM_IDLE, TERN_PROVIDERS_FILE, TERN_THROTTLE_*, TERN_BREAKER_*,
// TERN_POOL_WARMUP_FULL, TERN_WARMUP_PACING, TERN_WARMUP_BURST, TERN_ENGAGEMENT_LEAD,
// TERN_ENGAGEMENT_DEFAULT, TERN_ENGAGEMENT_WARMUP_THRESHOLD, TERN_AMBIGUOUS_RETRIES,
// TERN_AMBIGUOUS_RETRY_DELAY; see SchedulerSettings for defaults.
//
// Source IPs come only from the pool's active set the reputation monitor publishes, and an
// IP in warm-up only while it has room under its daily cap for the provider.
//
// Known limits: one fixed release interval per group; run a single scheduler (two would
// both release).

import TernCore
import TernScheduler

await DaemonMain.run("scheduler") { env, common, logger in
    try SchedulerDaemon(settings: SchedulerSettings(env, common: common), logger: logger)
}
