// The sending rate of one source IP towards one provider: additive increase, multiplicative
// decrease. A "slow down" halves the rate and starts a back-off; sustained success climbs back
// toward the profile's ceiling in steps of a tenth of it; a block pauses the IP there.

import Foundation
import TernCore

public struct ThrottleSettings: Sendable, Equatable {
    /// Factor applied to the rate on each "slow down" (0.5 halves it).
    public var decrease: Double = 0.5
    /// Share of the ceiling added after `successesPerStep` accepted messages in a row.
    public var increaseShare: Double = 0.1
    public var successesPerStep: Int = 50
    /// The rate never falls below this many messages a minute.
    public var floorPerMinute: Double = 1
    /// The first back-off after a "slow down"; each further one in a row doubles, up to
    /// `maxBackoff`.
    public var backoff: Duration = .seconds(60)
    public var maxBackoff: Duration = .seconds(900)
    /// How long an IP blocked by a provider is kept away from it.
    public var blockPause: Duration = .seconds(3600)

    public init() {}
}

public struct AdaptiveRate: Sendable, Equatable, Codable {
    public enum State: String, Sendable, Codable { case steady, backingOff = "backing_off", paused }

    public var ceiling: Double
    public var rate: Double
    public var state: State = .steady
    /// No message to this provider from this IP before this time (back-off or pause).
    public var holdUntilMs: Int64 = 0
    public var successes = 0
    public var slowDownsInARow = 0
    public var reason: String
    public var changedMs: Int64

    public init(ceiling: Int, nowMs: Int64) {
        self.ceiling = Double(ceiling)
        rate = Double(ceiling)
        reason = "profile ceiling"
        changedMs = nowMs
    }

    /// The least time between two messages at the current rate.
    public var intervalMs: Int64 { Int64((60_000 / max(rate, 0.001)).rounded(.up)) }

    /// The same in microseconds: above 60,000 a minute it is under a millisecond, and a
    /// whole millisecond would cap every IP at 1,000 messages a second.
    public var intervalUs: Int64 { Int64((60_000_000 / max(rate, 0.001)).rounded(.up)) }

    public func mayRelease(nowMs: Int64) -> Bool { nowMs >= holdUntilMs }

    /// Applies one attempt's signal; returns true when the rate or state changed.
    @discardableResult
    public mutating func record(_ signal: ReplySignal, reply: String, nowMs: Int64,
                                settings: ThrottleSettings) -> Bool {
        switch signal {
        case .accepted:
            slowDownsInARow = 0
            if state != .steady, nowMs >= holdUntilMs { state = .steady }
            successes += 1
            guard successes >= settings.successesPerStep, rate < ceiling, nowMs >= holdUntilMs
            else { return false }
            successes = 0
            rate = min(ceiling, rate + ceiling * settings.increaseShare)
            change("\(settings.successesPerStep) accepted in a row", nowMs)
            return true
        case .slowDown:
            successes = 0
            slowDownsInARow += 1
            rate = max(settings.floorPerMinute, rate * settings.decrease)
            let factor = 1 << min(slowDownsInARow - 1, 16)
            let backoff = min(settings.backoff.milliseconds * Int64(factor),
                              settings.maxBackoff.milliseconds)
            holdUntilMs = max(holdUntilMs, nowMs + backoff)
            if state != .paused { state = .backingOff }
            change("slow down: \(reply.prefix(200))", nowMs)
            return true
        case .blocked:
            successes = 0
            rate = settings.floorPerMinute
            state = .paused
            holdUntilMs = max(holdUntilMs, nowMs + settings.blockPause.milliseconds)
            change("blocked: \(reply.prefix(200))", nowMs)
            return true
        case .recipient, .transient, .permanent:
            return false
        }
    }

    /// A changed profile ceiling (an operator's override) takes effect at once.
    public mutating func setCeiling(_ value: Int, nowMs: Int64) {
        guard Double(value) != ceiling else { return }
        ceiling = Double(value)
        if rate > ceiling { rate = ceiling }
        change("ceiling set to \(value)", nowMs)
    }

    private mutating func change(_ why: String, _ nowMs: Int64) {
        reason = why
        changedMs = nowMs
    }
}
