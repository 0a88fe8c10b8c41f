// The organisations' circuit breakers as the scheduler keeps them: in memory for decisions,
// in Redis (`breakers`) so a restart keeps them, and in the `held` hash that the release
// script reads to hold an organisation's messages back.

import Foundation
import Synchronization
import TernCore

final class Breakers: Sendable {
    let settings: BreakerSettings
    private let byOrg = Mutex<[String: CircuitBreaker]>([:])

    init(settings: BreakerSettings) { self.settings = settings }

    func restore(_ saved: [String: String]) {
        let decoder = JSONDecoder()
        byOrg.withLock { map in
            for (org, json) in saved {
                if let b = try? decoder.decode(CircuitBreaker.self, from: Data(json.utf8)) {
                    map[org] = b
                }
            }
        }
    }

    struct Change: Sendable {
        let org: String
        let breaker: CircuitBreaker
        /// The new state when it changed, nil when only the counts moved.
        let newState: CircuitBreaker.State?
    }

    func record(org: String, _ outcome: CircuitBreaker.Outcome, nowMs: Int64) -> Change {
        byOrg.withLock { map in
            var breaker = map[org] ?? CircuitBreaker()
            let changed = breaker.record(outcome, nowMs: nowMs, settings: settings)
            map[org] = breaker
            return Change(org: org, breaker: breaker, newState: changed)
        }
    }

    /// The open breakers whose cool-down is over, now half-open.
    func startDueTrials(nowMs: Int64) -> [Change] {
        byOrg.withLock { map in
            var started: [Change] = []
            for (org, var breaker) in map
            where breaker.startTrialIfDue(nowMs: nowMs, settings: settings) {
                map[org] = breaker
                started.append(Change(org: org, breaker: breaker, newState: .halfOpen))
            }
            return started
        }
    }

    func snapshot() -> [String: CircuitBreaker] { byOrg.withLock { $0 } }

    func breaker(of org: String) -> CircuitBreaker? { byOrg.withLock { $0[org] } }
}
