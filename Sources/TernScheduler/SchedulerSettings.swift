// The scheduler's settings, each with its variable, default and reason.

import Foundation
import TernCore
import TernMail

public struct SchedulerSettings: Sendable {
    public let common: CommonSettings
    /// TERN_POOLS: the IP pools; default one pool letting the kernel pick the address.
    public let pools: Pools
    /// TERN_RETRY_DELAYS: waits after the 1st, 2nd, … deferral; the last repeats. The default
    /// grows from 5 minutes to a day over the first two days, then retries daily until
    /// TERN_MAX_AGE: RFC 5321 §4.5.4.1 asks for at least 4-5 days before giving up.
    public let retryDelays: [Duration]
    /// TERN_AMBIGUOUS_RETRIES: how often a message is sent again after an ambiguous attempt
    /// (connection lost after the final dot: it may have arrived, each resend risks a
    /// duplicate); 0 never resends and takes it as delivered (unknown) at once. Default 1.
    public let ambiguousRetries: Int
    /// TERN_AMBIGUOUS_RETRY_DELAY: the wait before that resend, apart from the retry
    /// schedule (default 1h): time for a remote that did take the message to send its
    /// bounce first, which ends the message before it goes twice, and for a remote that
    /// lost the connection mid-reply to recover.
    public let ambiguousDelay: Duration
    /// TERN_MAX_AGE and TERN_RECORD_TTL (see `MessageLifetime`).
    public let lifetime: MessageLifetime
    /// TERN_GROUP_INTERVAL: the least time between two releases of one group
    /// (`{pool}:{domain}`) on top of the provider throttle; 0 leaves pacing to the throttle.
    public let groupInterval: Duration
    /// TERN_PROVIDERS_FILE: the operator's provider profiles over the built-in ones.
    public let providers: ProviderCatalog
    /// TERN_THROTTLE_BACKOFF, TERN_THROTTLE_MAX_BACKOFF, TERN_THROTTLE_BLOCK_PAUSE,
    /// TERN_THROTTLE_STEP.
    public let throttle: ThrottleSettings
    /// TERN_BREAKER_*: the organisations' circuit breakers (see `BreakerSettings`).
    public let breaker: BreakerSettings
    /// TERN_ORG_CAPS: messages an organisation may send an hour and a UTC day.
    public let orgCaps: OrgCaps
    /// TERN_POOL_WARMUP_FULL: per pool, what happens when its warm-up IPs are all capped.
    public let warmupFull: [String: WarmupFullBehaviour]
    /// TERN_WARMUP_PACING, TERN_WARMUP_BURST: how a warm-up IP's cap is spread over the day.
    public let warmupPacing: WarmupPacing
    /// TERN_ENGAGEMENT_*: how engagement scores order and route messages.
    public let engagement: EngagementSettings
    /// TERN_SCHEDULER_CLAIM_IDLE: entries pending this long on a dead consumer are taken over.
    public let claimIdle: Duration
    /// TERN_SCHEDULER_LEASE: how long the leader's lease lives unless renewed; a standby
    /// scheduler takes over within this time of the leader's death.
    public let leaderTTL: Duration
    /// TERN_METRICS_LISTEN: /metrics and /health (default 127.0.0.1:9101; `off` for none).
    public let metricsListen: SocketAddress?

    public static let defaultRetryDelays: [Duration] = [
        .seconds(300), .seconds(600), .seconds(1200), .seconds(3600), .seconds(7200),
        .seconds(14400), .seconds(28800), .seconds(43200), .seconds(86400),
    ]

    public init(_ env: Environment, common: CommonSettings) throws {
        self.common = common
        metricsListen = try MetricsListen.parse(env, default: "127.0.0.1:9101")
        pools = try Pools(env)
        retryDelays = try env.durations("TERN_RETRY_DELAYS", default: Self.defaultRetryDelays)
        guard !retryDelays.isEmpty else { throw ConfigError("TERN_RETRY_DELAYS", "empty") }
        ambiguousRetries = try env.int("TERN_AMBIGUOUS_RETRIES", default: 1, range: 0...10)
        ambiguousDelay = try env.duration("TERN_AMBIGUOUS_RETRY_DELAY", default: .seconds(3600))
        lifetime = try MessageLifetime(env)
        groupInterval = try env.duration("TERN_GROUP_INTERVAL", default: .zero)
        providers = try ProviderCatalog.load(overrides: env.values["TERN_PROVIDERS_FILE"])
        var throttle = ThrottleSettings()
        throttle.backoff = try env.duration("TERN_THROTTLE_BACKOFF", default: throttle.backoff)
        throttle.maxBackoff = try env.duration("TERN_THROTTLE_MAX_BACKOFF",
                                               default: throttle.maxBackoff)
        throttle.blockPause = try env.duration("TERN_THROTTLE_BLOCK_PAUSE",
                                               default: throttle.blockPause)
        throttle.successesPerStep = try env.int("TERN_THROTTLE_STEP",
                                                default: throttle.successesPerStep,
                                                range: 1...100_000)
        self.throttle = throttle
        var breaker = BreakerSettings()
        breaker.bounceThreshold = try env.fraction("TERN_BREAKER_BOUNCE_RATE",
                                                   default: breaker.bounceThreshold)
        breaker.complaintThreshold = try env.fraction("TERN_BREAKER_COMPLAINT_RATE",
                                                      default: breaker.complaintThreshold)
        breaker.minimumSample = try env.int("TERN_BREAKER_MIN_SAMPLE",
                                            default: breaker.minimumSample, range: 1...1_000_000)
        breaker.window = try env.duration("TERN_BREAKER_WINDOW", default: breaker.window)
        breaker.coolDown = try env.duration("TERN_BREAKER_COOL_DOWN", default: breaker.coolDown)
        breaker.trialSize = try env.int("TERN_BREAKER_TRIAL", default: breaker.trialSize,
                                        range: 1...100_000)
        guard breaker.window >= .seconds(60) else {
            throw ConfigError("TERN_BREAKER_WINDOW", "must be at least 1m")
        }
        self.breaker = breaker
        orgCaps = try OrgCaps(env.string("TERN_ORG_CAPS", default: ""))
        claimIdle = try env.duration("TERN_SCHEDULER_CLAIM_IDLE", default: .seconds(60))
        leaderTTL = try env.duration("TERN_SCHEDULER_LEASE", default: .seconds(15))
        guard leaderTTL >= .seconds(3) else {
            throw ConfigError("TERN_SCHEDULER_LEASE", "must be at least 3s")
        }
        warmupFull = try WarmupFullBehaviour.parse(env.string("TERN_POOL_WARMUP_FULL",
                                                              default: "wait"), pools: pools)
        var pacing = WarmupPacing()
        switch env.string("TERN_WARMUP_PACING", default: "on") {
        case "on": pacing.enabled = true
        case "off": pacing.enabled = false
        case let other: throw ConfigError("TERN_WARMUP_PACING", "'\(other)' is not on or off")
        }
        pacing.burst = try env.fraction("TERN_WARMUP_BURST", default: pacing.burst)
        warmupPacing = pacing
        engagement = try EngagementSettings(env)
    }
}

extension Environment {
    /// A share between 0 and 1, written `0.05` or `5%`.
    func fraction(_ name: String, default value: Double) throws -> Double {
        guard let raw = values[name], !raw.isEmpty else { return value }
        let percent = raw.hasSuffix("%")
        guard let n = Double(percent ? String(raw.dropLast()) : raw) else {
            throw ConfigError(name, "'\(raw)' is not a number or a percentage")
        }
        let share = percent ? n / 100 : n
        guard share > 0, share <= 1 else { throw ConfigError(name, "'\(raw)' is not in (0, 1]") }
        return share
    }
}
