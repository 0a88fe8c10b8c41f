// The IP endpoints against the running API and a real Redis: standing, listings, identity
// and warm-up as the reputation monitor writes them, and the warm-up plan's changes.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernAPI

extension APIDaemonTests {
    static let ipPools = ["TERN_POOLS": "default=127.0.0.2/out1.example,127.0.0.3/out2.example;"
                          + "bulk=127.0.0.3/out2.example"]

    func post(_ h: Harness, _ path: String, _ body: String,
              key: String = APIDaemonTests.key) async throws -> RawReply {
        try await httpRequest(h.address, "POST", path,
                              headers: [("Authorization", "Bearer \(key)"),
                                        ("Content-Type", "application/json")],
                              body: Array(body.utf8))
    }

    @Test func ipsShowStandingListingsIdentityAndTodaysWarmup() async throws {
        let h = try await Harness(env: Self.ipPools)
        let today = UTCDay.text(ms: nowMs())
        try await h.redis.run("HSET", h.keys.ipState("127.0.0.2"), "status", "listed",
                              "reason", "listed on zen", "since_ms", "1700000000000",
                              "identity", "ok", "identity_checked_ms", "1700000000000")
        try await h.redis.run("HSET", h.keys.ipListings("127.0.0.2"), "zen",
                              #"{"code":"127.0.0.2","meaning":"SBL","since_ms":1700000000000,"#
                              + #""checked_ms":1700000000000}"#)
        try await h.redis.run("SET", h.keys.poolActive("default"), "127.0.0.3")
        // The monitor writes 0 for an IP that was never listed: no time to show.
        try await h.redis.run("HSET", h.keys.ipState("127.0.0.3"), "since_ms", "0")
        try await h.redis.run("HSET", h.keys.warmupPlan("127.0.0.3"), "start_day", "2026-11-01",
                              "last_day", today, "steps", #"{"*":3,"gmail":2}"#)
        try await h.redis.run("HSET", h.keys.warmupCaps("127.0.0.3", day: today),
                              "*", "400", "gmail", "200", "yahoo", "none")
        try await h.redis.run("HSET", h.keys.warmupSent("127.0.0.3", day: today), "gmail", "17")

        #expect(try await call(h, "GET", "/v1/ips", key: APIDaemonTests.acmeKey).status == 403)
        let reply = try await call(h, "GET", "/v1/ips")
        #expect(reply.status == 200)
        let ips = try #require(reply.json["ips"] as? [[String: Any]])
        #expect(ips.map { $0["ip"] as? String } == ["127.0.0.2", "127.0.0.3"])
        let listed = ips[0], warming = ips[1]
        #expect(listed["status"] as? String == "listed" && listed["active"] as? Bool == false)
        #expect(listed["reason"] as? String == "listed on zen")
        #expect(listed["since"] as? String == "2023-11-14T22:13:20.000Z")
        let zen = try #require((listed["listings"] as? [[String: Any]])?.first)
        #expect(zen["list"] as? String == "zen" && zen["code"] as? String == "127.0.0.2")
        #expect(zen["since"] as? String == "2023-11-14T22:13:20.000Z")
        #expect((listed["identity"] as? [String: Any])?["result"] as? String == "ok")
        #expect(listed["warmup"] is NSNull)

        #expect(warming["pools"] as? [String] == ["bulk", "default"])
        #expect(warming["active_in"] as? [String] == ["bulk", "default"])
        #expect(warming["status"] as? String == "unchecked")
        #expect(warming["since"] == nil)
        let warmup = try #require(warming["warmup"] as? [String: Any])
        #expect(warmup["state"] as? String == "active" && warmup["day"] as? String == today)
        let providers = try #require(warmup["providers"] as? [String: [String: Any]])
        #expect(providers["gmail"]?["cap"] as? Int == 200)
        #expect(providers["gmail"]?["sent"] as? Int == 17)
        #expect(providers["*"]?["sent"] as? Int == 0)
        #expect(providers["yahoo"]?["cap"] is NSNull)
        await h.stop()
    }

    @Test func aWarmupPlanIsStartedPausedResumedAndRestarted() async throws {
        let h = try await Harness(env: Self.ipPools)
        let path = "/v1/ips/127.0.0.2/warmup"
        let plan = h.keys.warmupPlan("127.0.0.2")
        #expect(try await post(h, path, #"{"action":"start"}"#, key: APIDaemonTests.acmeKey)
                .status == 403)
        #expect(try await call(h, "GET", path).status == 404)

        let started = try await post(h, path, #"{"action":"start","start_day":"2026-12-01"}"#)
        #expect(started.status == 201)
        #expect(try await h.redis.run("HGETALL", plan).fieldMap
                == ["start_day": "2026-12-01", "state": "active"])
        #expect(try await h.redis.run("SMEMBERS", h.keys.warmupIPs).array?.compactMap(\.string)
                == ["127.0.0.2"])
        let again = try await post(h, path, #"{"action":"start"}"#)
        #expect(again.status == 409 && again.errorField == "action")

        #expect(try await post(h, path, #"{"action":"pause"}"#).status == 200)
        #expect(try await h.redis.run("HGET", plan, "state").string == "paused")
        #expect(try await post(h, path, #"{"action":"resume"}"#).status == 200)
        #expect(try await h.redis.run("HGET", plan, "state").string == "active")

        // The monitor's roll, then a restart: the steps go, the monitor starts afresh.
        try await h.redis.run("HSET", plan, "last_day", "2026-12-03", "steps", #"{"*":4}"#)
        try await h.redis.run("RPUSH", h.keys.warmupDecisions("127.0.0.2"),
                              #"{"day":"2026-12-03","provider":"*","decision":"advance","#
                              + #""reason":"clean","from_step":3,"to_step":4,"cap":700,"#
                              + #""attempts":380}"#)
        let curve = try await call(h, "GET", path)
        #expect(curve.status == 200)
        #expect((curve.json["plan"] as? [String: Any])?["steps"] as? [String: Int] == ["*": 4])
        #expect((curve.json["decisions"] as? [[String: Any]])?.first?["reason"] as? String
                == "clean")
        let first = try #require((curve.json["curve"] as? [[String: Any]])?.first)
        #expect(first["day"] as? String == "2026-12-03")
        #expect((first["caps"] as? [String: [String: Any]])?["*"]?["cap"] as? Int == 700)

        let restarted = try await post(h, path, #"{"action":"restart","start_day":"2026-12-04"}"#)
        #expect(restarted.status == 200)
        #expect(try await h.redis.run("HGETALL", plan).fieldMap
                == ["start_day": "2026-12-04", "state": "active"])
        await h.stop()
    }

    @Test(arguments: [
        ("/v1/ips/127.0.0.2/warmup", #"{"action":"stop"}"#, 400, "action"),
        ("/v1/ips/127.0.0.2/warmup", #"{}"#, 400, "action"),
        ("/v1/ips/127.0.0.2/warmup", #"{"action":"start","start_day":"2026-13-01"}"#, 400,
         "start_day"),
        ("/v1/ips/127.0.0.2/warmup", #"{"action":"start","start_day":20261201}"#, 400,
         "start_day"),
        ("/v1/ips/127.0.0.2/warmup", #"{"action":"pause","start_day":"2026-12-01"}"#, 400,
         "start_day"),
        ("/v1/ips/127.0.0.2/warmup", #"{"action":"start","cap":5}"#, 400, "cap"),
        ("/v1/ips/127.0.0.2/warmup", "[1]", 400, "body"),
        ("/v1/ips/127.0.0.2/warmup", #"{"action":"pause"}"#, 409, "action"),
        ("/v1/ips/192.0.2.1/warmup", #"{"action":"start"}"#, 404, "ip"),
    ] as [(String, String, Int, String)])
    func badWarmupChangesNameTheirField(_ path: String, _ body: String, _ status: Int,
                                        _ field: String) async throws {
        let h = try await Harness(env: Self.ipPools)
        let reply = try await post(h, path, body)
        #expect(reply.status == status && reply.errorField == field)
        #expect(try await h.redis.run("EXISTS", h.keys.warmupPlan("127.0.0.2")).int == 0)
        await h.stop()
    }
}
