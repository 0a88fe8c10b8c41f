// Warm-up caps in the scheduler: the pacing arithmetic on a fake clock, and the release path
// against a real Redis with the reputation monitor's caps written by hand.

import Foundation
import Synchronization
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernScheduler

@Suite struct WarmupPacingTests {
    let day: Int64 = 86_400_000
    let midnight: Int64 = 20_000 * 86_400_000

    @Test func theCapIsSpreadOverTheDayWithASmallBurst() {
        let p = WarmupPacing()
        // 5% of 1000 may go at once; then the even pace.
        #expect(p.allowance(cap: 1000, nowMs: midnight) == 50)
        #expect(p.allowance(cap: 1000, nowMs: midnight + day / 4) == 300)
        #expect(p.allowance(cap: 1000, nowMs: midnight + day / 2) == 550)
        #expect(p.allowance(cap: 1000, nowMs: midnight + day - 1) == 1000)
        // A small cap still lets one message through at once.
        #expect(p.allowance(cap: 10, nowMs: midnight) == 1)
        var off = p
        off.enabled = false
        #expect(off.allowance(cap: 1000, nowMs: midnight) == 1000)
    }

    @Test func roomComesBackWithThePaceOrTheNextDay() {
        let p = WarmupPacing()
        // 50 of 1000 sent at midnight: the 51st may go once 1000 × t ≥ 1, t = 1/1000 of a day.
        #expect(p.nextRoomMs(cap: 1000, sent: 50, nowMs: midnight) == midnight + day / 1000)
        #expect(p.allowance(cap: 1000, nowMs: midnight + day / 1000) == 51)
        #expect(p.allowance(cap: 1000, nowMs: midnight + day / 1000 - 1) == 50)
        #expect(p.nextRoomMs(cap: 1000, sent: 1000, nowMs: midnight + 5) == midnight + day)
        #expect(p.nextRoomMs(cap: 1000, sent: 10, nowMs: midnight + 5) == midnight + 5)
    }

    @Test func capsAreCountedUnderTheProvidersOwnCapOrStar() {
        let c = WarmupCaps(caps: ["*": 50, "gmail": 100, "yahoo": nil],
                           sent: ["*": 50, "gmail": 3])
        var off = WarmupPacing()
        off.enabled = false
        #expect(c.room(provider: "gmail", pacing: off, nowMs: midnight)
                == .room(limit: "100", name: "gmail"))
        #expect(c.room(provider: "yahoo", pacing: off, nowMs: midnight)
                == .room(limit: "none", name: "yahoo"))
        #expect(c.room(provider: "microsoft", pacing: off, nowMs: midnight)
                == .full(untilMs: midnight + day, name: "*", cap: 50, sent: 50))
        #expect(WarmupCaps(caps: [:], sent: [:]).room(provider: "gmail", pacing: off,
                                                       nowMs: midnight) == .warm)
    }
}

/// The real time plus an offset the test moves.
final class FakeClock: Sendable {
    let offset = Mutex<Int64>(0)
    func now() -> Int64 { nowMs() + offset.withLock { $0 } }
}

@Suite(.serialized) struct WarmupCapTests {
    final class Harness: Sendable {
        let server: TestRedis
        let redis: RedisClient
        let keys = Keys()
        let shutdown = Shutdown()
        let task: Task<Void, any Error>
        let clock = FakeClock()

        init(env: [String: String] = [:]) async throws {
            server = try TestRedis()
            redis = try RedisClient(url: server.url)
            var values = ["TERN_REDIS_URL": server.url, "TERN_INSTANCE": "t",
                          "TERN_POOLS": "default=127.0.0.2/out1.example,127.0.0.3/out2.example",
                          "TERN_RETRY_DELAYS": "1s", "TERN_GROUP_INTERVAL": "0ms"]
            values.merge(env) { _, b in b }
            let environment = Environment(values)
            let settings = try SchedulerSettings(
                environment, common: CommonSettings(environment, role: "scheduler"))
            let clock = self.clock
            let daemon = try SchedulerDaemon(
                settings: settings, logger: Logger(label: "test", sink: MemoryLogSink()),
                clock: { clock.now() })
            let shutdown = self.shutdown
            task = Task { try await daemon.run(shutdown: shutdown) { _ in } }
            try await redis.ensureGroup(stream: keys.stream(.ready), group: "sender")
        }

        func stop() async {
            shutdown.request()
            _ = try? await task.value
            server.stop()
        }

        var today: String { WarmupDay.text(ms: clock.now()) }

        /// Publishes caps as the reputation monitor does, with what was sent already.
        func caps(_ ip: String, day: String, _ caps: [String: String],
                  sent: [String: String] = [:]) async throws {
            for (name, cap) in caps {
                try await redis.run("HSET", keys.warmupCaps(ip, day: day), name, cap)
            }
            for (name, n) in sent {
                try await redis.run("HSET", keys.warmupSent(ip, day: day), name, n)
            }
        }

        func submit(to rcpt: String) async throws -> String {
            let id = MessageID.generate()
            let now = nowMs()
            let domain = String(rcpt.split(separator: "@").last!)
            _ = try await redis.transaction([
                ["HSET", .text(keys.message(id)), "id", .text(id), "org", "acme",
                 "pool", "default", "from", "s@tern.example", "rcpt", .text(rcpt),
                 "domain", .text(domain), "body", "Subject: x\r\n\r\nhi\r\n",
                 "metadata", "{}", "created_ms", .text(String(now)),
                 "expires_ms", .text(String(now + 3 * 86_400_000)), "state", "queued",
                 "attempts", "0"],
                xadd(keys.stream(.submit), [("id", id)]),
            ])
            return id
        }

        func ready(waiting: Int = 100) async throws -> StreamEntry? {
            for _ in 0..<waiting {
                let e = try await redis.readGroup(stream: keys.stream(.ready), group: "sender",
                                                  consumer: "s", count: 1,
                                                  block: .milliseconds(50))
                if let first = e.first { return first }
            }
            return nil
        }

        func history(_ id: String) async throws -> [String] {
            (try await redis.run("LRANGE", keys.history(id), "0", "-1").array ?? [])
                .compactMap(\.string)
        }
    }

    @Test func anIPAtItsGmailCapLeavesGmailToTheOtherIPAndCountsWhatItSent() async throws {
        let h = try await Harness()
        try await h.caps("127.0.0.2", day: h.today, ["*": "500", "gmail": "20"],
                         sent: ["gmail": "20"])
        try await h.caps("127.0.0.3", day: h.today, ["*": "500"])
        var ips: [String] = []
        for n in 0..<3 {
            _ = try await h.submit(to: "u\(n)@gmail.com")
            ips.append(try #require(try await h.ready())["ip"] ?? "")
        }
        #expect(ips == ["127.0.0.3", "127.0.0.3", "127.0.0.3"])
        // Gmail has no cap of its own on 127.0.0.3: it counts under `*`.
        #expect(try await h.redis.run("HGETALL", h.keys.warmupSent("127.0.0.3", day: h.today))
                .fieldMap == ["*": "3"])
        #expect(try await h.redis.run("HGET", h.keys.warmupSent("127.0.0.2", day: h.today),
                                      "gmail").string == "20")
        // Other providers still use both IPs.
        var others: Set<String> = []
        for n in 0..<2 {
            _ = try await h.submit(to: "u\(n)@yahoo.com")
            others.insert(try #require(try await h.ready())["ip"] ?? "")
        }
        #expect(others == ["127.0.0.2", "127.0.0.3"])
        await h.stop()
    }

    @Test func bothIPsAtTheirCapHoldTheMessageUntilTheNextUTCDay() async throws {
        let h = try await Harness()
        let today = h.today
        try await h.caps("127.0.0.2", day: today, ["*": "5"], sent: ["*": "5"])
        try await h.caps("127.0.0.3", day: today, ["*": "7"], sent: ["*": "7"])
        let id = try await h.submit(to: "someone@inbox.example")
        #expect(try await h.ready(waiting: 10) == nil)
        let held = try await h.history(id)
        #expect(held.count == 1)
        #expect(held.first?.contains(#""event":"held""#) == true)
        #expect(held.first?.contains("every warm-up IP of pool default is at its daily cap for *")
                == true)
        #expect(held.first?.contains("127.0.0.2 *: cap 5 reached") == true)
        #expect(try await h.redis.run("HGET", h.keys.message(id), "state").string == "queued")

        // The next UTC day: the monitor's caps for it are not out yet, yesterday's apply
        // with nothing sent today.
        h.clock.offset.withLock { $0 = 86_400_000 }
        try await h.redis.run("ZADD", h.keys.dueGroups, "0", "default:inbox.example")
        let ready = try #require(try await h.ready())
        #expect(ready["id"] == id)
        #expect(try await h.redis.run("HGET", h.keys.message(id), "held").string == nil)
        let sent = try await h.redis.run("HGETALL", h.keys.warmupSent(ready["ip"] ?? "",
                                                                     day: h.today))
        #expect(sent.fieldMap == ["*": "1"])
        await h.stop()
    }

    @Test func overflowLetsAWarmIPTakeWhatTheWarmupIPsCannot() async throws {
        for (behaviour, expected) in [("wait", nil), ("overflow", "127.0.0.3")] as
            [(String, String?)]
        {
            let h = try await Harness(env: ["TERN_POOL_WARMUP_FULL": behaviour])
            // 127.0.0.3 is warm (no caps); 127.0.0.2 is full.
            try await h.caps("127.0.0.2", day: h.today, ["*": "5"], sent: ["*": "5"])
            let id = try await h.submit(to: "x@inbox.example")
            let ready = try await h.ready(waiting: behaviour == "wait" ? 10 : 100)
            #expect(ready?["ip"] == expected, "\(behaviour)")
            if behaviour == "wait" {
                #expect(try await h.history(id).first?.contains("held") == true)
            }
            await h.stop()
        }
    }

    @Test func badWarmupSettingsStopTheScheduler() throws {
        for (name, value) in [("TERN_POOL_WARMUP_FULL", "spill"),
                              ("TERN_POOL_WARMUP_FULL", "bulk=wait"),
                              ("TERN_WARMUP_PACING", "yes"), ("TERN_WARMUP_BURST", "2")] {
            let env = Environment(["TERN_POOLS": "default=127.0.0.2/out1.example", name: value])
            #expect(throws: ConfigError.self) {
                try SchedulerSettings(env, common: CommonSettings(env, role: "scheduler"))
            }
        }
    }
}
