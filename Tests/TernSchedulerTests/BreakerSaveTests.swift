// A batch of results saves each organisation's breaker once: what `breakers` holds after the
// batch must be the breaker in memory, also when the breaker opened halfway through the
// batch, for organisations with one result or many; inbound reports and trials that start
// after a cool-down still save theirs. Against a real Redis, the daemon not running.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernScheduler

@Suite struct BreakerSaveTests {
    @Test func theSavedBreakerIsTheOneInMemoryAfterEachBatch() async throws {
        let server = try TestRedis()
        defer { server.stop() }
        let redis = try RedisClient(url: server.url)
        let keys = Keys()
        let daemon = try idleScheduler(redisURL: server.url, settings: [
            "TERN_BREAKER_MIN_SAMPLE": "4", "TERN_BREAKER_COOL_DOWN": "1s"])
        try await redis.ensureGroup(stream: keys.stream(.results), group: "scheduler")

        // Organisation a: a run of hard bounces (the breaker opens partway) and deliveries;
        // b: one delivery; c: one deferral only, which does not touch its breaker.
        var plan: [(org: String, delivered: Bool?)] = []
        for n in 0..<12 { plan.append(("a", n % 4 == 3 ? true : false)) }
        plan += [("b", true), ("c", nil)]
        var ids: [String] = []
        for (org, delivered) in plan {
            let id = MessageID.generate()
            ids.append(id)
            _ = try await redis.transaction([
                ["HSET", .text(keys.message(id)), "id", .text(id), "org", .text(org),
                 "pool", "default", "from", "s@x.example", "rcpt", "r@inbox.example",
                 "domain", "inbox.example", "metadata", "{}",
                 "created_ms", .text(String(nowMs())), "expires_ms", "99999999999999",
                 "state", "sending", "attempts", "1"],
                xadd(keys.stream(.results), [
                    ("id", id), ("attempt", "1"),
                    ("outcome", delivered == true ? "delivered"
                        : delivered == false ? "failed" : "deferred"),
                    ("code", delivered == true ? "250" : delivered == false ? "550" : "451"),
                    ("enhanced", delivered == false ? "5.1.1" : ""),
                    ("reply", delivered == false ? "5.1.1 no such user" : "ok"),
                    ("stage", delivered == false ? "rcpt" : "dot"), ("mx", "mx.inbox.example"),
                    ("addr", "127.0.0.11"), ("ip", "127.0.0.2"), ("tls", ""), ("ms", "5"),
                ]),
            ])
        }
        let entries = try await redis.readGroup(stream: keys.stream(.results), group: "scheduler",
                                                consumer: "t", count: 100, block: nil)
        #expect(entries.count == plan.count)
        try await daemon.applyResults(entries)

        func saved(_ org: String) async throws -> CircuitBreaker? {
            guard let json = try await redis.run("HGET", keys.breakers, org).string else {
                return nil
            }
            return try JSONDecoder().decode(CircuitBreaker.self, from: Data(json.utf8))
        }
        let a = try #require(daemon.breakers.breaker(of: "a"))
        #expect(a.state == .open)
        #expect(try await saved("a") == a)
        #expect(try await saved("b") == daemon.breakers.breaker(of: "b"))
        #expect(try await saved("b") != nil)
        #expect(try await saved("c") == nil && daemon.breakers.breaker(of: "c") == nil)
        #expect(try await redis.run("HGET", keys.heldOrgs, "a").string == "0")
        #expect(try await redis.run("XPENDING", keys.stream(.results), "scheduler")
                    .array?.first?.int == 0)

        // After the cool-down the trial starts; the half-open breaker is what is saved.
        try await daemon.startDueTrials(nowMs: nowMs() + 2000)
        let trial = try #require(daemon.breakers.breaker(of: "a"))
        #expect(trial.state == .halfOpen)
        #expect(try await saved("a") == trial)

        // An inbound hard bounce for b moves its breaker and saves it.
        let before = try await saved("b")
        try await redis.ensureGroup(stream: keys.stream(.inbound), group: "scheduler")
        try await redis.run("XADD", keys.stream(.inbound), "*", "id", ids[12], "kind", "bounce",
                            "severity", "hard", "rcpt", "r@inbox.example", "status", "5.1.1",
                            "diagnostic", "no", "reporter", "mx.inbox.example")
        let inbound = try await redis.readGroup(stream: keys.stream(.inbound), group: "scheduler",
                                                consumer: "t", count: 10, block: nil)
        try await daemon.applyInbound(try #require(inbound.first))
        let after = try await saved("b")
        #expect(after == daemon.breakers.breaker(of: "b") && after != before)
    }
}
