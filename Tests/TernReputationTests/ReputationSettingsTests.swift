// The monitor's settings, and its warm-up loop publishing caps from yesterday's counts.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernReputation

@Suite(.serialized) struct ReputationSettingsTests {
    static let base = ["TERN_POOLS": "default=127.0.0.2/out1.tern.example",
                       "TERN_DNS_RESOLVER": "127.0.0.1:9",
                       "TERN_DNSBL_FILE": BlocklistWorld.root + "/testworld/dnsbl.json"]

    func settings(_ extra: [String: String]) throws -> ReputationSettings {
        let env = Environment(Self.base.merging(extra) { _, b in b })
        return try ReputationSettings(env, common: CommonSettings(env, role: "reputation"))
    }

    @Test func defaultsAndAWarmupWithAStartDay() throws {
        let s = try settings(["TERN_WARMUP": "127.0.0.2@2026-11-01"])
        #expect(s.interval == .seconds(900) && s.cleanChecks == 2)
        #expect(s.allListed == ["default": .hold])
        #expect(s.warmup == ["127.0.0.2": WarmupPlan.day(text: "2026-11-01")])
        #expect(s.warmupPolicy.schedule == .standard && s.warmupPolicy.minSample == 100)
        #expect(try settings(["TERN_WARMUP_SCHEDULE": "10, 20"]).warmupPolicy.schedule.caps
                == [10, 20])
    }

    @Test(arguments: [
        ["TERN_DNS_RESOLVER": ""],
        ["TERN_DNS_RESOLVER": "resolver.example:53"],
        ["TERN_DNSBL_FILE": "/nonexistent/dnsbl.json"],
        ["TERN_DNSBL_INTERVAL": "0s"],
        ["TERN_DNSBL_CLEAN_CHECKS": "0"],
        ["TERN_POOL_ALL_LISTED": "drop"],
        ["TERN_WARMUP": "192.0.2.1"],
        ["TERN_WARMUP": " , "],
        ["TERN_WARMUP": "127.0.0.2@tomorrow"],
        ["TERN_WARMUP_SCHEDULE": "50,x"],
    ])
    func badSettingsStopTheDaemonAtStart(_ extra: [String: String]) {
        #expect(throws: ConfigError.self) { try settings(extra) }
    }

    @Test func yesterdaysCountsMoveThePlanAndTodaysCapsArePublished() async throws {
        let now = nowMs()
        let today = WarmupPlan.day(ms: now)
        let yesterday = Int64(today - 1) * 86_400_000
        let server = try TestRedis()
        defer { server.stop() }
        let redis = try RedisClient(url: server.url)
        let keys = Keys()
        // Yesterday: 50 clean deliveries to providers without a profile, 10 to gmail.
        try await redis.run("HSET", keys.stats("d", "ip:127.0.0.2", yesterday), "delivered", "60")
        try await redis.run("HSET", keys.stats("d", "ipprov:127.0.0.2|*", yesterday),
                            "delivered", "50")
        try await redis.run("HSET", keys.stats("d", "ipprov:127.0.0.2|gmail", yesterday),
                            "delivered", "10")
        try await redis.run("SADD", keys.statsProviders("127.0.0.2", yesterday), "*", "gmail")
        let start = WarmupPlan.dayText(today - 3)
        let h = try await ReputationHarness(env: Self.base.merging([
            "TERN_REDIS_URL": server.url, "TERN_WARMUP": "127.0.0.2@\(start)"]) { _, b in b })
        let caps = keys.warmupCaps("127.0.0.2", day: WarmupPlan.dayText(today))
        try await h.waitFor("caps published") {
            try await redis.run("EXISTS", caps).int == 1
        }
        #expect(try await redis.run("HGETALL", caps).fieldMap
                == ["*": "200", "gmail": "50"])
        let plan = try await redis.run("HGETALL", keys.warmupPlan("127.0.0.2")).fieldMap
        #expect(plan["start_day"] == start && plan["last_day"] == WarmupPlan.dayText(today))
        let log = try await redis.run("LRANGE", keys.warmupDecisions("127.0.0.2"), "0", "-1")
        let decisions = (log.array ?? []).compactMap(\.string)
        #expect(decisions.count == 2)
        #expect(decisions.first?.contains("\"decision\":\"accelerate\"") == true)
        #expect(decisions.last?.contains("\"decision\":\"hold\"") == true)
        #expect(decisions.last?.contains("fewer than the 25 needed") == true)
        await h.stop()
    }

    @Test func aPlanPausedThroughTheAPIPublishesNoGrowthAndARestartBeginsAgain() async throws {
        let now = nowMs()
        let today = WarmupPlan.day(ms: now)
        let yesterday = Int64(today - 1) * 86_400_000
        let server = try TestRedis()
        defer { server.stop() }
        let redis = try RedisClient(url: server.url)
        let keys = Keys()
        // Two IPs put on plans through the API (none in TERN_WARMUP); yesterday was clean
        // and full for both, which would accelerate an active plan.
        for ip in ["127.0.0.2", "127.0.0.3"] {
            try await redis.run("HSET", keys.stats("d", "ipprov:\(ip)|*", yesterday),
                                "delivered", "400")
            try await redis.run("SADD", keys.statsProviders(ip, yesterday), "*")
            try await redis.run("SADD", keys.warmupIPs, ip)
        }
        try await redis.run("HSET", keys.warmupPlan("127.0.0.2"), "start_day", "2026-11-01",
                            "last_day", WarmupPlan.dayText(today - 1), "steps", #"{"*":3}"#,
                            "state", "paused")
        // Restarted: a first day and no steps.
        try await redis.run("HSET", keys.warmupPlan("127.0.0.3"),
                            "start_day", WarmupPlan.dayText(today), "state", "active")
        let h = try await ReputationHarness(env: Self.base.merging([
            "TERN_REDIS_URL": server.url,
            "TERN_POOLS": "default=127.0.0.2/out1.tern.example,127.0.0.3/out2.tern.example",
        ]) { _, b in b })
        let paused = keys.warmupCaps("127.0.0.2", day: WarmupPlan.dayText(today))
        let restarted = keys.warmupCaps("127.0.0.3", day: WarmupPlan.dayText(today))
        try await h.waitFor("caps published") {
            try await redis.run("EXISTS", paused, restarted).int == 2
        }
        #expect(try await redis.run("HGETALL", paused).fieldMap == ["*": "400"])
        #expect(try await redis.run("HGET", keys.warmupPlan("127.0.0.2"), "steps").string
                == #"{"*":3}"#)
        let log = try await redis.run("LRANGE", keys.warmupDecisions("127.0.0.2"), "0", "-1")
        let decision = try #require((log.array ?? []).first?.string)
        #expect(decision.contains(#""decision":"paused""#) && decision.contains("do not grow"))
        #expect(try await redis.run("HGETALL", restarted).fieldMap == ["*": "50"])
        #expect(try await redis.run("HGET", keys.warmupPlan("127.0.0.3"), "state").string
                == "active")
        await h.stop()
    }
}
