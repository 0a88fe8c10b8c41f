// Messages held past their deadline, against a real Redis: a pause, an open breaker, a cap or
// a pool without IPs never keeps a message beyond its maximum age. It ends `expired` at its
// deadline with one event, and is never handed to a sender; one still in time goes on.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernScheduler

extension SchedulerDaemonTests {
    /// Waits for `id` to expire, then checks it ended once, was never released and left
    /// nothing behind; returns its final history entry.
    func expectExpired(_ h: Harness, _ id: String, group: String = "default:inbox.example",
                       reason: String, held: String?) async throws -> [String: Any] {
        try await h.waitFor("expired") { try await h.state(id) == "expired" }
        try await h.waitFor("its event") { try await h.events(id) == ["expired"] }
        let expires = Int64(try await h.redis.run("HGET", h.keys.message(id), "expires_ms")
            .string ?? "") ?? 0
        #expect(expires > 0)
        #expect(try await readyIDs(h).contains(id) == false)
        #expect(try await h.redis.run("ZSCORE", h.keys.groupQueue(group), id).string == nil)
        #expect(try await h.redis.run("ZSCORE", h.keys.groupDue(group), id).string == nil)
        #expect(try await h.redis.run("ZSCORE", h.keys.deadlines, id).string == nil)
        #expect(try await h.redis.run("HLEN", h.keys.expiring).int == 0)
        #expect(try await h.redis.run("HEXISTS", h.keys.message(id), "held").int == 0)
        #expect(try await h.redis.run("TTL", h.keys.message(id)).int ?? 0 > 0)
        let entries: [[String: Any]] = try await history(h, id)
        let last = try #require(entries.last)
        #expect(last["event"] as? String == "expired")
        #expect((last["reason"] as? String)?.contains(reason) == true,
                "reason: \(last["reason"] ?? "none")")
        #expect(last["held"] as? String == held)
        #expect(last["deadline"] as? String == timestamp(ms: expires))
        // Not before its deadline.
        let at = try #require(last["at"] as? String)
        #expect(at >= timestamp(ms: expires))
        // Another few sweeps add nothing.
        try await Task.sleep(for: .milliseconds(600))
        #expect(try await h.events(id) == ["expired"])
        #expect(try await h.state(id) == "expired")
        return last
    }

    @Test func aMessageInAPausedGroupExpiresAtItsDeadlineAndOneInTimeGoesOnResume()
        async throws
    {
        let h = try await Harness()
        let control = ControlStore(redis: h.redis, keys: h.keys)
        try await control.pause(Pause(kind: .group, name: "default:inbox.example",
                                      reason: "maintenance", by: "test", sinceMs: nowMs()))
        // The release loop marks only the group's first due message held; the second is
        // sent once `late` is marked, so it cannot rank first (ids made in one millisecond
        // need not sort in the order they were made).
        let late = try await h.submit(to: "late@inbox.example", maxAge: 2000)
        try await h.waitFor("held") {
            try await h.redis.run("HGET", h.keys.message(late), "held").string == "pause"
        }
        let inTime = try await h.submit(to: "later@inbox.example", maxAge: 600_000)
        try await h.waitFor("filed") {
            try await h.redis.run("ZSCORE", h.keys.deadlines, inTime).string != nil
        }
        #expect(try await h.state(late) == "queued")
        _ = try await expectExpired(
            h, late, reason: "held past its deadline: group default:inbox.example is paused "
                + "(maintenance)", held: "pause")
        #expect(try await h.state(inTime) == "queued")
        #expect(try await h.events(inTime).isEmpty)

        try await control.resume(.group, "default:inbox.example")
        #expect(try await h.nextReady()["id"] == inTime)
        #expect(try await readyIDs(h) == [inTime])
        await h.stop()
    }

    @Test func aMessageOfAPausedOrganisationComesBackAtItsDeadlineAndExpires() async throws {
        let h = try await Harness()
        let control = ControlStore(redis: h.redis, keys: h.keys)
        try await control.pause(Pause(kind: .org, name: "acme", reason: "", by: "test",
                                      sinceMs: nowMs()))
        let id = try await h.submit(org: "acme", maxAge: 2500)
        let inTime = try await h.submit(to: "b@inbox.example", org: "acme")
        try await h.waitFor("held") {
            try await h.redis.run("HEXISTS", h.keys.pauseHeld("acme"), id).int == 1
        }
        // Put back no later than its deadline, not an hour ahead.
        let expires = try await h.redis.run("HGET", h.keys.message(id), "expires_ms").string
        let score = try await h.redis.run("ZSCORE", h.keys.groupQueue("default:inbox.example"),
                                          id).string.flatMap(Double.init).map { Int64($0) }
        #expect(score.map(String.init) == expires)
        _ = try await expectExpired(h, id, reason: "held past its deadline: organisation acme "
                                    + "is paused", held: "pause")
        #expect(try await h.redis.run("HEXISTS", h.keys.pauseHeld("acme"), id).int == 0)

        try await control.resume(.org, "acme")
        #expect(try await h.nextReady()["id"] == inTime)
        await h.stop()
    }

    @Test func aMessageHeldByAnOpenBreakerExpiresAtItsDeadline() async throws {
        let h = try await Harness(env: ["TERN_BREAKER_MIN_SAMPLE": "4",
                                        "TERN_BREAKER_COOL_DOWN": "1h"])
        for n in 0..<4 {
            let id = try await h.submit(to: "gone\(n)@inbox.example", org: "spammy")
            #expect(try await h.nextReady()["id"] == id)
            try await h.result(id, attempt: "1", outcome: "failed", code: "550",
                               reply: "5.1.1 unknown", enhanced: "5.1.1", stage: "rcpt")
            try await h.waitFor("bounced") { try await h.state(id) == "bounced" }
        }
        try await h.waitFor("breaker opened") {
            try await h.redis.run("HGET", h.keys.heldOrgs, "spammy").string == "0"
        }
        let id = try await h.submit(to: "new@inbox.example", org: "spammy", maxAge: 2000)
        _ = try await expectExpired(h, id, reason: "held past its deadline: the circuit "
                                    + "breaker of organisation spammy is open", held: "breaker")
        await h.stop()
    }

    @Test func aMessageHeldByItsOrganisationsCapExpiresAtItsDeadline() async throws {
        let h = try await Harness(env: ["TERN_ORG_CAPS": "capped=1/h"])
        let first = try await h.submit(to: "c0@inbox.example", org: "capped")
        #expect(try await h.nextReady()["id"] == first)
        let id = try await h.submit(to: "c1@inbox.example", org: "capped", maxAge: 2000)
        try await h.waitFor("held") {
            try await h.redis.run("HGET", h.keys.message(id), "held").string == "cap"
        }
        let expires = try await h.redis.run("HGET", h.keys.message(id), "expires_ms").string
        let score = try await h.redis.run("ZSCORE", h.keys.groupQueue("default:inbox.example"),
                                          id).string.flatMap(Double.init).map { Int64($0) }
        #expect(score.map(String.init) == expires)
        _ = try await expectExpired(h, id, reason: "held past its deadline: organisation capped "
                                    + "is at its sending cap", held: "cap")
        #expect(try await readyIDs(h) == [first])
        await h.stop()
    }

    @Test func aMessageOfAPoolWithoutIPsExpiresAtItsDeadline() async throws {
        let h = try await Harness()
        try await h.redis.run("SET", h.keys.poolActive("default"), "")
        let id = try await h.submit(maxAge: 2000)
        _ = try await expectExpired(h, id, reason: "not released before its deadline",
                                    held: nil)
        await h.stop()
    }

    /// The release script's own check, step by step, with no scheduler running: a popped
    /// message past its deadline is set expired, not released, and keeps its id in
    /// `expiring` until its event is written, as after a crash between the two steps.
    @Test func theReleaseScriptExpiresAMessagePastItsDeadlineInsteadOfReleasingIt()
        async throws
    {
        let f = try ReleaseScriptFixture()
        defer { f.server.stop() }
        let (redis, keys, daemon, now, group) = (f.redis, f.keys, f.daemon, f.now, f.group)
        let id = MessageID.generate()
        _ = try await redis.transaction([
            ["HSET", .text(keys.message(id)), "id", .text(id), "org", "acme", "pool", "default",
             "from", "s@tern.example", "rcpt", "a@inbox.example", "domain", "inbox.example",
             "metadata", "{}", "created_ms", .text(String(now - 5000)),
             "expires_ms", .text(String(now - 1)), "state", "deferred", "held", "breaker"],
            ["ZADD", .text(keys.groupQueue(group)), .text(String(now - 10)), .text(id)],
            ["ZADD", .text(keys.deadlines), .text(String(now - 1)), .text(id)],
            ["ZADD", .text(keys.dueGroups), .text(String(now - 10)), .text(group)],
        ])
        let reply = try await f.release()
        #expect(reply.array?.first?.array?.compactMap(\.string) == ["expired", id])
        #expect(try await redis.run("HGET", keys.message(id), "state").string == "expired")
        #expect(try await redis.run("HGET", keys.expiring, id).string == "breaker")
        #expect(try await redis.run("XLEN", keys.stream(.ready)).int == 0)
        #expect(try await redis.run("ZCARD", keys.deadlines).int == 0)
        #expect(try await redis.run("ZCARD", keys.groupDue(group)).int == 0)
        #expect(try await redis.run("XLEN", keys.stream(.events)).int == 0)

        // The sweep writes what the crash left undone, once.
        try await daemon.expireOverdue(nowMs: nowMs())
        try await daemon.expireOverdue(nowMs: nowMs())
        let events = try await redis.run("XRANGE", keys.stream(.events), "-", "+").array ?? []
        let fields = events.compactMap { $0.array?[1].fieldMap }
        #expect(fields.map { $0["event"] } == ["expired"])
        #expect(fields.first?["json"]?.contains("the circuit breaker of organisation acme")
                == true)
        #expect(try await redis.run("HLEN", keys.expiring).int == 0)
        #expect(try await redis.run("LLEN", keys.history(id)).int == 1)
    }
}

/// A private Redis and an idle scheduler on it, for tests that run the release script
/// themselves, step by step, on group `default:inbox.example`.
struct ReleaseScriptFixture {
    let server: TestRedis
    let redis: RedisClient
    let keys = Keys()
    let daemon: SchedulerDaemon
    let now = nowMs()
    let group = "default:inbox.example"

    init() throws {
        server = try TestRedis()
        redis = try RedisClient(url: server.url)
        daemon = try idleScheduler(redisURL: server.url)
    }

    /// One call of the release script from 127.0.0.2, and `more` (IP, helo) for a burst.
    func release(more: [RedisArg] = []) async throws -> RedisValue {
        let ip = SourceIP(address: "127.0.0.2", helo: "out1.example")
        return try await redis.eval(
            Scripts.release, keys: daemon.releaseKeys(group, ip: ip, nowMs: now),
            args: daemon.releaseArgs(group, ip: ip, nowMs: now, provider: "default") + more)
    }
}

/// A scheduler on `redisURL` that a test drives step by step, without running it: one pool
/// (`default`, 127.0.0.2), no metrics port; `settings` adds or replaces environment values.
func idleScheduler(redisURL: String, settings: [String: String] = [:]) throws
    -> SchedulerDaemon
{
    let environment = Environment([
        "TERN_REDIS_URL": redisURL, "TERN_INSTANCE": "t",
        "TERN_POOLS": "default=127.0.0.2/out1.example", "TERN_METRICS_LISTEN": "off",
    ].merging(settings) { _, new in new })
    return try SchedulerDaemon(
        settings: try SchedulerSettings(
            environment, common: CommonSettings(environment, role: "scheduler")),
        logger: Logger(label: "test", sink: MemoryLogSink()))
}
