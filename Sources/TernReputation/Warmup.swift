// IP warm-up: a new IP's daily volume per provider grows along a schedule, faster or slower
// depending on how the providers took yesterday's mail. Pure logic over days and counts; the
// daemon stores the plan, feeds yesterday's statistics and publishes the caps.
//
// Each IP has a plan: the day it started and, per provider, a step into the schedule (`*`
// stands for every provider not seen yet). Once a UTC day, each provider's step moves:
// - accelerate (+2): a clean day that used most of its cap;
// - advance (+1): the schedule's normal pace;
// - hold (0): too few messages to judge, or rates in the warning band;
// - step back (-1): bounces, complaints or deferrals past the limits.
// Every decision is recorded with its reason. Past the schedule's end there is no cap.
//
// A paused plan (an operator's POST /v1/ips/{ip}/warmup) does not grow: each day it is
// paused, every provider keeps its step (recorded as `paused`), so the caps stay those of the
// day it was paused; the days are not judged. Resumed, the plan is judged again from the
// next day on, on that day's own numbers.

import Foundation
import TernMail

/// Daily caps, one per step; the step after the last has no cap.
public struct WarmupSchedule: Sendable, Equatable {
    public let caps: [Int]

    /// Thirty days from 50 a day, roughly doubling at first and slowing to about +25% a
    /// day, then no cap from the thirty-first step.
    public static let standard = WarmupSchedule(caps: [
        50, 100, 200, 400, 700, 1_000, 1_500, 2_000, 3_000, 4_000,
        5_000, 6_500, 8_000, 10_000, 12_500, 15_000, 20_000, 25_000, 30_000, 40_000,
        50_000, 60_000, 75_000, 90_000, 110_000, 135_000, 165_000, 200_000, 250_000, 300_000,
    ])

    public init(caps: [Int]) { self.caps = caps }

    /// The cap at `step`, nil for no cap.
    public func cap(_ step: Int) -> Int? { step < caps.count ? caps[max(0, step)] : nil }
}

/// One provider's (or one IP's) outcomes over a day.
public struct DayCounts: Sendable, Equatable {
    public var delivered = 0
    public var deferred = 0
    public var bounced = 0
    public var complained = 0

    public init(delivered: Int = 0, deferred: Int = 0, bounced: Int = 0, complained: Int = 0) {
        self.delivered = delivered
        self.deferred = deferred
        self.bounced = bounced
        self.complained = complained
    }

    public var attempts: Int { delivered + deferred + bounced }
    public var bounceRate: Double { rate(bounced, delivered + bounced) }
    public var deferralRate: Double { rate(deferred, attempts) }
    public var complaintRate: Double { rate(complained, delivered) }

    private func rate(_ n: Int, _ of: Int) -> Double { of == 0 ? 0 : Double(n) / Double(of) }
}

/// The limits the daily decision applies (TERN_WARMUP_* settings).
public struct WarmupPolicy: Sendable, Equatable {
    public var schedule = WarmupSchedule.standard
    /// Fewest attempts a day must have to be judged (or half the day's cap, if less).
    public var minSample = 100
    /// Step back at or above these rates.
    public var backBounce = 0.05, backComplaint = 0.003, backDeferral = 0.30
    /// Hold at or above these rates.
    public var holdBounce = 0.02, holdComplaint = 0.001, holdDeferral = 0.10

    public init() {}

    public enum Decision: String, Sendable, Codable {
        case accelerate, advance, hold, paused
        case stepBack = "step_back"
    }

    /// The next step after a day at `step` with `counts`, and why.
    public func decide(step: Int, counts c: DayCounts) -> (Int, Decision, String) {
        let cap = schedule.cap(step)
        let needed = min(minSample, cap.map { max(1, $0 / 2) } ?? minSample)
        let rates = String(format: "bounces %.2f%%, complaints %.3f%%, deferrals %.2f%%",
                           c.bounceRate * 100, c.complaintRate * 100, c.deferralRate * 100)
        if c.attempts < needed {
            return (step, .hold, "\(c.attempts) attempts, fewer than the \(needed) needed")
        }
        if c.bounceRate >= backBounce || c.complaintRate >= backComplaint
            || c.deferralRate >= backDeferral
        {
            return (max(0, step - 1), .stepBack, rates + ": past a step-back limit")
        }
        if c.bounceRate >= holdBounce || c.complaintRate >= holdComplaint
            || c.deferralRate >= holdDeferral
        {
            return (step, .hold, rates + ": in the warning band")
        }
        let nearlyFull = cap.map { c.attempts * 10 >= $0 * 8 } ?? false
        if nearlyFull && c.bounceRate < holdBounce / 4 && c.complained == 0
            && c.deferralRate < holdDeferral / 5
        {
            return (step + 2, .accelerate, rates + ", \(c.attempts) of \(cap ?? 0): clean and full")
        }
        return (step + 1, .advance, rates)
    }
}

/// One IP's plan, as stored in Redis.
public struct WarmupPlan: Sendable, Equatable {
    /// UTC days as days since the epoch.
    public var startDay: Int
    public var lastDay: Int
    /// Provider -> step; `*` for providers not seen yet.
    public var steps: [String: Int]

    public init(startDay: Int) {
        self.startDay = startDay
        self.lastDay = startDay
        self.steps = ["*": 0]
    }

    /// One recorded decision.
    public struct Record: Sendable, Equatable, Codable {
        public var day: String
        public var provider: String
        public var decision: WarmupPolicy.Decision
        public var reason: String
        public var fromStep: Int
        public var toStep: Int
        public var cap: Int?
        public var attempts: Int

        enum CodingKeys: String, CodingKey {
            case day, provider, decision, reason, attempts, cap
            case fromStep = "from_step", toStep = "to_step"
        }
    }

    /// Moves the plan to `today`, judging the day before with `counts` (each provider its
    /// own, `*` those of every provider without a profile). Days missed while the daemon was
    /// down are not judged: only yesterday's numbers say how the providers see the IP now.
    /// A `paused` plan keeps every step and records why.
    public mutating func roll(to today: Int, policy: WarmupPolicy,
                              counts: [String: DayCounts], paused: Bool = false) -> [Record] {
        guard today > lastDay else { return [] }
        var records: [Record] = []
        let judged = today - 1 >= startDay && today - 1 >= lastDay
        // A provider seen for the first time starts where `*` stood yesterday.
        let base = steps["*"] ?? 0
        for provider in Set(steps.keys).union(counts.keys).sorted() where judged {
            let from = steps[provider] ?? base
            let (to, decision, reason) = paused
                ? (from, .paused, "plan paused by an operator: the caps do not grow")
                : policy.decide(step: from, counts: counts[provider] ?? DayCounts())
            steps[provider] = to
            records.append(Record(day: Self.dayText(today), provider: provider,
                                  decision: decision, reason: reason, fromStep: from, toStep: to,
                                  cap: policy.schedule.cap(to),
                                  attempts: counts[provider]?.attempts ?? 0))
        }
        lastDay = today
        return records
    }

    /// Today's caps: provider -> messages, nil for no cap.
    public func caps(_ policy: WarmupPolicy) -> [String: Int?] {
        steps.mapValues { policy.schedule.cap($0) }
    }

    public static func day(ms: Int64) -> Int { UTCDay.day(ms: ms) }

    public static func dayText(_ day: Int) -> String { UTCDay.text(day: day) }

    public static func day(text: String) -> Int? { UTCDay.day(text: text) }
}
