// Engagement priority: the rank arithmetic, then the release path against a real Redis —
// a group's due messages leave in score order, a retry keeps its score, and a pool with
// warming and warm IPs sends the engaged from the warming ones.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernScheduler

@Suite struct EngagementRankTests {
    @Test func dueMessagesRankByScoreWithinTheLead() {
        let s = EngagementSettings()     // lead 1h, default 50
        let now: Int64 = 1_800_000_000_000
        let cases: [(name: String, due: Int64, score: Int?)] = [
            ("low", now, 10), ("high", now, 90), ("none", now, nil),
            ("old-zero", now - 7_200_000, 0), ("top-later", now + 600_000, 100),
        ]
        let order = cases.sorted { s.rank(dueMs: $0.due, score: $0.score)
            < s.rank(dueMs: $1.due, score: $1.score) }.map(\.name)
        // A score of 0 due two hours ago is past any lead; 100 due ten minutes later still
        // beats 90 due now (50 minutes ahead against 54).
        #expect(order == ["old-zero", "high", "top-later", "none", "low"])
    }

    @Test func noLeadKeepsDueOrder() throws {
        let env = Environment(["TERN_ENGAGEMENT_LEAD": "0s"])
        let s = try EngagementSettings(env)
        #expect(s.rank(dueMs: 100, score: 100) == 100)
        #expect(s.rank(dueMs: 99, score: 0) < s.rank(dueMs: 100, score: 100))
    }

    @Test func settingsAreCheckedAndThresholdCanBeOff() throws {
        let off = try EngagementSettings(Environment(["TERN_ENGAGEMENT_WARMUP_THRESHOLD": "off"]))
        #expect(off.warmupThreshold == nil)
        #expect(try EngagementSettings(Environment([:])).warmupThreshold == 70)
        for (name, value) in [("TERN_ENGAGEMENT_DEFAULT", "101"),
                              ("TERN_ENGAGEMENT_WARMUP_THRESHOLD", "high")] {
            #expect(throws: ConfigError.self) {
                try EngagementSettings(Environment([name: value]))
            }
        }
    }
}

@Suite(.serialized) struct EngagementReleaseTests {
    typealias Harness = SchedulerDaemonTests.Harness

    /// A provider file that lets every IP send at once, so only engagement decides.
    static func fastProviders() throws -> String {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("tern-engagement-\(UUID().uuidString).json").path
        let json = #"{"providers": [{"name": "default", "messagesPerMinute": 600000}]}"#
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static func harness(_ env: [String: String] = [:]) async throws -> Harness {
        let providers = try fastProviders()
        // The settings read the file as the harness starts: it is not needed after that.
        defer { try? FileManager.default.removeItem(atPath: providers) }
        var values = ["TERN_PROVIDERS_FILE": providers, "TERN_RETRY_DELAYS": "2s"]
        values.merge(env) { _, b in b }
        return try await Harness(env: values)
    }

    /// A message record as the API writes it, with a score from the API when given.
    func record(_ h: Harness, _ id: String, rcpt: String, score: Int?) -> [RedisArg] {
        let now = nowMs()
        var fields: [RedisArg] = [
            "HSET", .text(h.keys.message(id)), "id", .text(id), "org", "acme",
            "pool", "default", "from", "s@tern.example", "rcpt", .text(rcpt),
            "domain", "inbox.example", "body", "Subject: x\r\n\r\nhi\r\n", "metadata", "{}",
            "created_ms", .text(String(now)), "expires_ms", .text(String(now + 600_000)),
            "state", "queued", "attempts", "0"]
        if let score { fields += ["engagement", .text(String(score)), "engagement_source", "api"] }
        return fields
    }

    /// Puts messages in the group's queue due at the given times, all in one step, so the
    /// release loop first sees them together.
    func park(_ h: Harness, _ messages: [(score: Int?, dueMs: Int64)]) async throws -> [String] {
        var cmds: [[RedisArg]] = []
        var ids: [String] = []
        for (n, m) in messages.enumerated() {
            let id = MessageID.generate()
            ids.append(id)
            cmds.append(record(h, id, rcpt: "u\(n)@inbox.example", score: m.score))
            cmds.append(["ZADD", .text(h.keys.groupQueue("default:inbox.example")),
                         .text(String(m.dueMs)), .text(id)])
        }
        cmds.append(["ZADD", .text(h.keys.dueGroups), "0", "default:inbox.example"])
        _ = try await h.redis.transaction(cmds)
        return ids
    }

    func readyIDs(_ h: Harness, count: Int) async throws -> [StreamEntry] {
        var out: [StreamEntry] = []
        while out.count < count { out.append(try await h.nextReady()) }
        return out
    }

    func history(_ h: Harness, _ id: String) async throws -> [[String: Any]] {
        let all = try await h.redis.run("LRANGE", h.keys.history(id), "0", "-1")
        return (all.array ?? []).compactMap {
            try? JSONSerialization.jsonObject(with: Data(($0.string ?? "").utf8))
                as? [String: Any]
        }
    }

    @Test func aGroupReleasesItsDueMessagesInScoreOrder() async throws {
        let h = try await Self.harness()
        let now = nowMs()
        let ids = try await park(h, [(10, now), (90, now), (nil, now), (0, now - 7_200_000),
                                     (100, now + 600_000), (60, now - 1000)])
        let ready = try await readyIDs(h, count: 5)
        // Due now: the score-0 message waiting two hours (past the 1h lead), then 90, 60,
        // the default 50, 10. The one due in ten minutes stays in the queue.
        #expect(ready.map { $0["id"] } == [ids[3], ids[1], ids[5], ids[2], ids[0]])
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await h.redis.run("XLEN", h.keys.stream(.ready)).int == 5)
        #expect(try await h.redis.run("ZSCORE", h.keys.groupQueue("default:inbox.example"),
                                      ids[4]).string != nil)
        await h.stop()
    }

    @Test func aRetryKeepsItsScoreAndHistoryShowsIt() async throws {
        let h = try await Self.harness()
        // Stored and keyed on the record as the API does (`listKey`), so any case matches.
        _ = try await h.redis.transaction([
            ["HSET", .text(h.keys.engagement("acme")),
             .text(EmailAddress.listKey(of: "RÉC@Inbox.example")), "30"],
        ])
        // An API score of 80 for one message, the recorded 30 for another, none for a third.
        let high = MessageID.generate()
        _ = try await h.redis.transaction([
            record(h, high, rcpt: "top@inbox.example", score: 80),
            xadd(h.keys.stream(.submit), [("id", high)]),
        ])
        let recorded = try await h.submit(
            to: "rÉc@inbox.example",
            extra: ["rcpt_key", .text(EmailAddress.listKey(of: "rÉc@INBOX.example"))])
        _ = try await readyIDs(h, count: 2)
        try await h.result(high, attempt: "1", outcome: "deferred", code: "451",
                           reply: "4.3.0 try later")
        try await h.waitFor("deferred") { try await h.state(high) == "deferred" }
        // A low-score message due at the same moment as the retry.
        let group = h.keys.groupQueue("default:inbox.example")
        let retryAt = try #require(try await h.redis.run("ZSCORE", group, high).string)
        let low = try await park(h, [(5, Int64(retryAt)!)])[0]
        let again = try await readyIDs(h, count: 2)
        #expect(again.map { $0["id"] } == [high, low])
        #expect(again.first?["attempt"] == "2")

        try await h.result(high, attempt: "2", outcome: "delivered", code: "250", reply: "ok")
        try await h.result(recorded, attempt: "1", outcome: "delivered", code: "250",
                           reply: "ok")
        try await h.waitFor("delivered") {
            let states = [try await h.state(high), try await h.state(recorded)]
            return states == ["delivered", "delivered"]
        }
        let events = try await history(h, high).filter { $0["engagement"] != nil }
        #expect(events.map { $0["event"] as? String } == ["deferred", "delivered"])
        #expect(events.allSatisfy {
            $0["engagement"] as? Int == 80 && $0["engagement_source"] as? String == "api"
        })
        let other = try await history(h, recorded).last
        #expect(other?["engagement"] as? Int == 30)
        #expect(other?["engagement_source"] as? String == "recorded")
        await h.stop()
    }

    @Test func warmingIPsTakeTheEngagedAndWarmIPsTheRest() async throws {
        let h = try await Self.harness(["TERN_WARMUP_PACING": "off"])
        let today = WarmupDay.text(ms: nowMs())
        // 127.0.0.2 is warming (a cap with room), 127.0.0.3 warm; the threshold is 70.
        try await h.redis.run("HSET", h.keys.warmupCaps("127.0.0.2", day: today), "*", "1000")
        var sent: [(score: Int?, ip: String)] = []
        for score in [90, 10, nil, 70, 69, 100, 0] as [Int?] {
            let id = MessageID.generate()
            _ = try await h.redis.transaction([
                record(h, id, rcpt: "w\(sent.count)@inbox.example", score: score),
                xadd(h.keys.stream(.submit), [("id", id)]),
            ])
            let ready = try await h.nextReady()
            #expect(ready["id"] == id)
            sent.append((score, ready["ip"] ?? ""))
        }
        for (score, ip) in sent {
            #expect(ip == ((score ?? 50) >= 70 ? "127.0.0.2" : "127.0.0.3"), "\(score ?? -1)")
        }
        let counted = try await h.redis.run("HGET", h.keys.warmupSent("127.0.0.2", day: today),
                                            "*")
        #expect(counted.string == "3")
        await h.stop()
    }

    @Test func withTheThresholdOffEveryIPTakesEveryScore() async throws {
        let h = try await Self.harness(["TERN_WARMUP_PACING": "off",
                                        "TERN_ENGAGEMENT_WARMUP_THRESHOLD": "off"])
        let today = WarmupDay.text(ms: nowMs())
        try await h.redis.run("HSET", h.keys.warmupCaps("127.0.0.2", day: today), "*", "1000")
        var ips: Set<String> = []
        for _ in 0..<4 {
            let id = MessageID.generate()
            _ = try await h.redis.transaction([
                record(h, id, rcpt: "x@inbox.example", score: 0),
                xadd(h.keys.stream(.submit), [("id", id)]),
            ])
            ips.insert(try await h.nextReady()["ip"] ?? "")
        }
        #expect(ips == ["127.0.0.2", "127.0.0.3"])
        await h.stop()
    }
}
