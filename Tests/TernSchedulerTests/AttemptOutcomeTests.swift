// The scheduler's side of two things a sender reports: an ambiguous attempt (connection lost
// after the final dot), resent once after its own delay or taken as delivered, and the
// timings of each attempt, kept in the message's history.

import Foundation
import Testing
import TernCore
import TernMail
@testable import TernScheduler

@Suite(.serialized) struct AttemptOutcomeTests {
    typealias Harness = SchedulerDaemonTests.Harness

    func ambiguous(_ h: Harness, _ id: String, attempt: String) async throws {
        try await h.result(id, attempt: attempt, outcome: "ambiguous", code: "0",
                           reply: "connection closed after the final dot with no reply: the "
                               + "outcome is ambiguous")
    }

    func history(_ h: Harness, _ id: String) async throws -> [[String: Any]] {
        let all = try await h.redis.run("LRANGE", h.keys.history(id), "0", "-1")
        return (all.array ?? []).compactMap {
            try? JSONSerialization.jsonObject(with: Data(($0.string ?? "").utf8))
                as? [String: Any]
        }
    }

    @Test func anAmbiguousAttemptIsResentOnceAfterItsOwnDelayThenTakenAsDelivered() async throws {
        // The retry schedule says a minute; an ambiguous attempt waits its own second.
        let h = try await Harness(env: ["TERN_RETRY_DELAYS": "60s",
                                        "TERN_AMBIGUOUS_RETRY_DELAY": "1s"])
        let id = try await h.submit()
        _ = try await h.nextReady()
        try await ambiguous(h, id, attempt: "1")
        try await h.waitFor("deferred") { try await h.state(id) == "deferred" }
        let again = try await h.nextReady()
        #expect(again["id"] == id && again["attempt"] == "2")
        try await ambiguous(h, id, attempt: "2")
        try await h.waitFor("delivered") { try await h.state(id) == "delivered" }
        #expect(try await h.events(id) == ["deferred", "delivered"])
        let events = try await history(h, id).filter { $0["ambiguous"] as? Bool == true }
        #expect(events.count == 2)
        #expect((events.last?["note"] as? String)?.contains("delivery unknown") == true)
        #expect(try await h.redis.run("HGET", h.keys.message(id), "ambiguous").string == "2")
        let attempts = try await h.redis.run("LRANGE", h.keys.attempts(id), "0", "-1")
        #expect(attempts.array?.compactMap(\.string).allSatisfy {
            $0.contains(#""outcome":"ambiguous""#)
        } == true)
        await h.stop()
    }

    @Test func withNoResendsAnAmbiguousAttemptIsFinalAtOnce() async throws {
        let h = try await Harness(env: ["TERN_AMBIGUOUS_RETRIES": "0"])
        let id = try await h.submit()
        _ = try await h.nextReady()
        try await ambiguous(h, id, attempt: "1")
        try await h.waitFor("delivered") { try await h.state(id) == "delivered" }
        #expect(try await h.events(id) == ["delivered"])
        #expect(try await h.redis.run("XLEN", h.keys.stream(.ready)).int == 1)
        // A final message keeps its record, not its content.
        let record = try await h.redis.run("HMGET", h.keys.message(id), "body", "rcpt", "org")
        #expect(record.array?.map(\.string) == [nil, "a@inbox.example", "acme"])
        await h.stop()
    }

    @Test func attemptTimingsReachTheHistory() async throws {
        let h = try await Harness()
        let id = try await h.submit()
        _ = try await h.nextReady()
        try await h.redis.run(["XADD", h.keys.stream(.results), "*", "id", id, "attempt", "1",
                               "outcome", "delivered", "code", "250", "enhanced", "2.0.0",
                               "reply", "ok", "stage", "dot", "mx", "mx1.inbox.example",
                               "addr", "127.0.0.11", "ip", "127.0.0.2", "tls", "", "ms", "40",
                               "connect_ms", "3", "greeting_ms", "7", "tls_ms", "0",
                               "data_ms", "25", "reused", "no"])
        try await h.waitFor("delivered") { try await h.state(id) == "delivered" }
        let delivered = try #require(try await history(h, id).last)
        #expect(delivered["connect_ms"] as? Int == 3 && delivered["greeting_ms"] as? Int == 7)
        #expect(delivered["tls_ms"] as? Int == 0 && delivered["data_ms"] as? Int == 25)
        #expect(delivered["reused"] as? Bool == false)
        let attempt = try await h.redis.run("LINDEX", h.keys.attempts(id), "0").string ?? ""
        let record = try JSONDecoder().decode(AttemptRecord.self, from: Data(attempt.utf8))
        #expect(record.timings?.dataMs == 25 && record.timings?.connectMs == 3)
        await h.stop()
    }
}
