// What happens to a message after an attempt: the pure decision, separate from Redis so every
// rule can be tested with a table.

import TernCore
import TernMail

public enum Decision: Equatable, Sendable {
    case delivered
    /// A permanent failure: the remote said 5xx, or there is nowhere to deliver.
    case bounced
    /// Try again at `atMs`.
    case retry(atMs: Int64)
    /// Out of time: the message is older than its maximum age at its next retry.
    case expired
}

public struct RetryPolicy: Sendable {
    public let delays: [Duration]

    public init(delays: [Duration]) {
        precondition(!delays.isEmpty, "retry policy needs at least one delay")
        self.delays = delays
    }

    /// The wait after the `attempt`-th attempt (1-based); the last delay repeats.
    public func delay(afterAttempt attempt: Int) -> Duration {
        delays[min(max(attempt, 1), delays.count) - 1]
    }

    public func decide(outcome: AttemptOutcome, attempt: Int, nowMs: Int64, expiresMs: Int64)
        -> Decision
    {
        switch outcome {
        case .delivered: return .delivered
        case .failed: return .bounced
        case .deferred:
            let at = nowMs + delay(afterAttempt: attempt).milliseconds
            return at > expiresMs ? .expired : .retry(atMs: at)
        }
    }
}
