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
    /// TERN_MAX_AGE and TERN_RECORD_TTL (see `MessageLifetime`).
    public let lifetime: MessageLifetime
    /// TERN_GROUP_INTERVAL: the least time between two releases of one group
    /// (`{pool}:{domain}`); 100ms is ten messages a second per group.
    public let groupInterval: Duration
    /// TERN_SCHEDULER_CLAIM_IDLE: entries pending this long on a dead consumer are taken over.
    public let claimIdle: Duration

    public static let defaultRetryDelays: [Duration] = [
        .seconds(300), .seconds(600), .seconds(1200), .seconds(3600), .seconds(7200),
        .seconds(14400), .seconds(28800), .seconds(43200), .seconds(86400),
    ]

    public init(_ env: Environment, common: CommonSettings) throws {
        self.common = common
        pools = try Pools(env)
        retryDelays = try env.durations("TERN_RETRY_DELAYS", default: Self.defaultRetryDelays)
        guard !retryDelays.isEmpty else { throw ConfigError("TERN_RETRY_DELAYS", "empty") }
        lifetime = try MessageLifetime(env)
        groupInterval = try env.duration("TERN_GROUP_INTERVAL", default: .milliseconds(100))
        claimIdle = try env.duration("TERN_SCHEDULER_CLAIM_IDLE", default: .seconds(60))
    }
}
