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

extension Decision: CustomStringConvertible {
    /// As logs show it: `retry at <RFC 3339 time>` for a retry, else the outcome's name.
    public var description: String {
        switch self {
        case .delivered: return "delivered"
        case .bounced: return "bounced"
        case .retry(let at): return "retry at " + timestamp(ms: at)
        case .expired: return "expired"
        }
    }
}

public struct RetryPolicy: Sendable {
    public let delays: [Duration]
    /// TERN_AMBIGUOUS_RETRIES: resends after an ambiguous attempt (0: never).
    public let ambiguousRetries: Int
    /// TERN_AMBIGUOUS_RETRY_DELAY: the wait before such a resend.
    public let ambiguousDelay: Duration

    public init(delays: [Duration], ambiguousRetries: Int = 1,
                ambiguousDelay: Duration = .seconds(3600)) {
        precondition(!delays.isEmpty, "retry policy needs at least one delay")
        self.delays = delays
        self.ambiguousRetries = ambiguousRetries
        self.ambiguousDelay = ambiguousDelay
    }

    /// The wait after the `attempt`-th attempt (1-based); the last delay repeats.
    public func delay(afterAttempt attempt: Int) -> Duration {
        delays[min(max(attempt, 1), delays.count) - 1]
    }

    /// `reply`: the remote's text; a deferral that names when to come back ("try again in 10
    /// minutes") waits at least that long, never less than the policy's own delay.
    /// `ambiguousBefore`: the message's earlier ambiguous attempts. An ambiguous one is sent
    /// again after its own delay while resends remain and the deadline allows, and is
    /// otherwise taken as delivered: it may well have arrived, and expiring would say not.
    public func decide(outcome: AttemptOutcome, attempt: Int, nowMs: Int64, expiresMs: Int64,
                       reply: String = "", ambiguousBefore: Int = 0) -> Decision
    {
        switch outcome {
        case .delivered: return .delivered
        case .failed: return .bounced
        case .ambiguous:
            let at = nowMs + ambiguousDelay.milliseconds
            return ambiguousBefore < ambiguousRetries && at <= expiresMs
                ? .retry(atMs: at) : .delivered
        case .deferred:
            var wait = delay(afterAttempt: attempt)
            if let asked = Self.requestedWait(in: reply), asked > wait { wait = asked }
            let at = nowMs + wait.milliseconds
            return at > expiresMs ? .expired : .retry(atMs: at)
        }
    }

    /// The wait a reply asks for, from texts such as "try again in 10 minutes", "retry after
    /// 300 seconds" or "please try again in 2 hours"; at most a day, nil when it names none.
    static func requestedWait(in reply: String) -> Duration? {
        let words = reply.lowercased().split(whereSeparator: { !$0.isLetter && !$0.isNumber })
            .map(String.init)
        for i in words.indices.dropLast(2)
        where (words[i] == "in" || words[i] == "after") && i > 0
            && ["again", "retry", "later"].contains(words[i - 1]) {
            guard let n = Int(words[i + 1]), n > 0 else { continue }
            let unit = words[i + 2]
            let seconds: Int
            if unit.hasPrefix("sec") || unit == "s" { seconds = n }
            else if unit.hasPrefix("min") || unit == "m" { seconds = n * 60 }
            else if unit.hasPrefix("hour") || unit == "h" || unit.hasPrefix("hr") {
                seconds = n * 3600
            } else { continue }
            return .seconds(min(seconds, 86_400))
        }
        return nil
    }
}
