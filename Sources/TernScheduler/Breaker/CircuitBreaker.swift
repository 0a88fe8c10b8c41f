// The circuit breaker of one organisation: it stops an organisation whose mail bounces or is
// reported as spam too often from spending the pool's reputation, without failing its mail.
//
// closed ──(rate over threshold, enough samples)──► open ──(cool-down)──► half-open
//   ▲                                                 ▲                       │
//   └──────────────(trial sample clean)───────────────┴──(trial sample bad)───┘
//
// While open, the organisation's messages wait in their groups; half-open lets a small trial
// through and decides on its outcome alone.

import Foundation
import TernCore

public struct BreakerSettings: Sendable, Equatable {
    /// Hard bounces per message sent over the window that open the breaker. 5% is far above
    /// a clean list's rate (well under 1%) and where providers start to treat the sender as
    /// buying lists.
    public var bounceThreshold = 0.05
    /// Complaints per message delivered. Gmail and Yahoo ask bulk senders to stay under 0.3%.
    public var complaintThreshold = 0.003
    /// No decision on fewer messages than this: three bounces out of ten is noise.
    public var minimumSample = 100
    /// The sliding window the rates are taken over, kept in one-minute buckets.
    public var window: Duration = .seconds(3600)
    /// How long the breaker stays open before a trial.
    public var coolDown: Duration = .seconds(1800)
    /// Messages let through while half-open; their outcome alone closes or re-opens it.
    public var trialSize = 20

    public init() {}
}

public struct CircuitBreaker: Sendable, Equatable, Codable {
    public enum State: String, Sendable, Codable { case closed, open, halfOpen = "half_open" }

    struct Bucket: Sendable, Equatable, Codable {
        var minute: Int64
        var sent = 0, bounced = 0, complained = 0
    }

    public private(set) var state: State = .closed
    public private(set) var openedMs: Int64 = 0
    public private(set) var trialStartedMs: Int64 = 0
    public private(set) var reason = ""
    /// Trial messages released and their outcomes while half-open.
    public private(set) var trialReleased = 0
    var trialSent = 0, trialBounced = 0, trialComplained = 0
    var buckets: [Bucket] = []

    public init() {}

    /// Whether a message of this organisation may go now; counts it as a trial when half-open.
    public mutating func mayRelease(nowMs: Int64, settings: BreakerSettings) -> Bool {
        switch state {
        case .closed: return true
        case .open:
            guard startTrialIfDue(nowMs: nowMs, settings: settings) else { return false }
            fallthrough
        case .halfOpen:
            guard trialReleased < settings.trialSize else { return false }
            trialReleased += 1
            return true
        }
    }

    /// Moves an open breaker whose cool-down is over to half-open; true when it did. The
    /// caller then lets `trialSize` messages through (`mayRelease` counts them in memory; the
    /// scheduler counts them in Redis, where its release script runs).
    /// A trial whose messages all came back deferred decides nothing; after another
    /// cool-down a new trial starts.
    public mutating func startTrialIfDue(nowMs: Int64, settings: BreakerSettings) -> Bool {
        let cool = settings.coolDown.milliseconds
        switch state {
        case .closed: return false
        case .open: guard nowMs >= openedMs + cool else { return false }
        case .halfOpen: guard nowMs >= trialStartedMs + cool else { return false }
        }
        state = .halfOpen
        trialStartedMs = nowMs
        trialReleased = 0
        trialSent = 0; trialBounced = 0; trialComplained = 0
        reason = "cool-down over: trying \(settings.trialSize) messages"
        return true
    }

    public enum Outcome: Sendable { case delivered, bounced, complained }

    /// Records one outcome; returns the new state when it changed.
    @discardableResult
    public mutating func record(_ outcome: Outcome, nowMs: Int64, settings: BreakerSettings)
        -> State?
    {
        let minute = nowMs / 60_000
        let oldest = minute - settings.window.milliseconds / 60_000
        buckets.removeAll { $0.minute <= oldest }
        if buckets.last?.minute != minute { buckets.append(Bucket(minute: minute)) }
        switch outcome {
        case .delivered: buckets[buckets.count - 1].sent += 1
        case .bounced:
            buckets[buckets.count - 1].sent += 1
            buckets[buckets.count - 1].bounced += 1
        case .complained: buckets[buckets.count - 1].complained += 1
        }
        switch state {
        case .closed:
            let sent = buckets.reduce(0) { $0 + $1.sent }
            guard sent >= settings.minimumSample,
                  let why = verdict(sent: sent, bounced: buckets.reduce(0) { $0 + $1.bounced },
                                    complained: buckets.reduce(0) { $0 + $1.complained },
                                    settings: settings)
            else { return nil }
            open(why, nowMs)
            return .open
        case .open:
            return nil
        case .halfOpen:
            switch outcome {
            case .delivered: trialSent += 1
            case .bounced: trialSent += 1; trialBounced += 1
            case .complained: trialComplained += 1
            }
            if let why = verdict(sent: max(trialSent, 1), bounced: trialBounced,
                                 complained: trialComplained, settings: settings) {
                open("trial failed: " + why, nowMs)
                return .open
            }
            guard trialSent >= settings.trialSize else { return nil }
            state = .closed
            // The window starts afresh, or the old bad minutes would re-open it at once.
            buckets = []
            reason = "trial of \(trialSent) clean"
            return .closed
        }
    }

    private func verdict(sent: Int, bounced: Int, complained: Int, settings: BreakerSettings)
        -> String?
    {
        let bounceRate = Double(bounced) / Double(sent)
        if bounceRate > settings.bounceThreshold {
            return "bounce rate \(percent(bounceRate)) over \(percent(settings.bounceThreshold))"
                + " (\(bounced) of \(sent))"
        }
        let complaintRate = Double(complained) / Double(sent)
        if complaintRate > settings.complaintThreshold {
            return "complaint rate \(percent(complaintRate)) over "
                + "\(percent(settings.complaintThreshold)) (\(complained) of \(sent))"
        }
        return nil
    }

    private mutating func open(_ why: String, _ nowMs: Int64) {
        state = .open
        openedMs = nowMs
        reason = why
    }

    private func percent(_ value: Double) -> String {
        String(format: "%.2f%%", value * 100)
    }
}
