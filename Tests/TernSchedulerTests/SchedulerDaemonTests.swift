// The scheduler against a real Redis: intake to ready, results to states and events, retries,
// expiry and asynchronous bounces. The sender's side is played by hand through the streams.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernScheduler

@Suite(.serialized) struct SchedulerDaemonTests {
    final class Harness: Sendable {
        let server: TestRedis
        let redis: RedisClient
        let keys = Keys()
        let shutdown = Shutdown()
        let task: Task<Void, any Error>

        init(env: [String: String] = [:]) async throws {
            server = try TestRedis()
            redis = try RedisClient(url: server.url)
            var values = ["TERN_REDIS_URL": server.url, "TERN_INSTANCE": "t",
                          "TERN_POOLS": "default=127.0.0.2/out1.example,127.0.0.3/out2.example",
                          "TERN_RETRY_DELAYS": "1s", "TERN_GROUP_INTERVAL": "0ms",
                          "TERN_METRICS_LISTEN": "off"]
            values.merge(env) { _, b in b }
            let environment = Environment(values)
            let settings = try SchedulerSettings(
                environment, common: CommonSettings(environment, role: "scheduler"))
            let daemon = try SchedulerDaemon(
                settings: settings, logger: Logger(label: "test", sink: MemoryLogSink()))
            let shutdown = self.shutdown
            task = Task { try await daemon.run(shutdown: shutdown) { _ in } }
            try await redis.ensureGroup(stream: keys.stream(.ready), group: "sender")
        }

        func stop() async {
            shutdown.request()
            _ = try? await task.value
            server.stop()
        }

        /// Writes a message as the API does and submits it.
        func submit(to rcpt: String = "a@inbox.example", pool: String = "default",
                    org: String = "acme", maxAge: Int64 = 600_000,
                    extra: [RedisArg] = []) async throws -> String {
            let id = MessageID.generate()
            let now = nowMs()
            let domain = String(rcpt.split(separator: "@").last!)
            _ = try await redis.transaction([
                ["HSET", .text(keys.message(id)), "id", .text(id), "org", .text(org),
                 "pool", .text(pool), "from", "s@tern.example", "rcpt", .text(rcpt),
                 "domain", .text(domain), "body", "Subject: x\r\n\r\nhi\r\n",
                 "metadata", #"{"k":"v"}"#, "created_ms", .text(String(now)),
                 "expires_ms", .text(String(now + maxAge)), "state", "queued", "attempts", "0"]
                    + extra,
                xadd(keys.stream(.submit), [("id", id)]),
            ])
            return id
        }

        func nextReady() async throws -> StreamEntry {
            for _ in 0..<100 {
                let e = try await redis.readGroup(stream: keys.stream(.ready), group: "sender",
                                                  consumer: "s", count: 1,
                                                  block: .milliseconds(100))
                if let first = e.first { return first }
            }
            throw ConfigError("ready", "nothing released")
        }

        func result(_ id: String, attempt: String, outcome: String, code: String,
                    reply: String, enhanced: String = "", stage: String = "dot",
                    mx: String = "mx1.inbox.example", ip: String = "127.0.0.2") async throws {
            try await redis.run(["XADD", keys.stream(.results), "*", "id", id,
                                 "attempt", attempt, "outcome", outcome, "code", code,
                                 "enhanced", enhanced, "reply", reply, "stage", stage,
                                 "mx", mx, "addr", "127.0.0.11",
                                 "ip", ip, "tls", "", "ms", "12"])
        }

        func events(_ id: String) async throws -> [String] {
            let all = try await redis.run("XRANGE", keys.stream(.events), "-", "+")
            return (all.array ?? []).compactMap { v -> String? in
                let f = v.array?[1].fieldMap ?? [:]
                return f["id"] == id ? f["event"] : nil
            }
        }

        func state(_ id: String) async throws -> String? {
            try await redis.run("HGET", keys.message(id), "state").string
        }

        func waitFor(_ what: String, _ check: () async throws -> Bool) async throws {
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline {
                if try await check() { return }
                try await Task.sleep(for: .milliseconds(25))
            }
            Issue.record("timed out waiting for \(what)")
        }
    }

    /// send_at: intake files the message at its send time, so a message submitted after it
    /// but due now goes first, and the scheduled one is not released before its time. Its
    /// deadline counts from the send time, and its events carry its tags.
    @Test func scheduledMessageWaitsForItsSendTime() async throws {
        let h = try await Harness(env: ["TERN_MAX_AGE": "1h"])
        let sendAt = nowMs() + 1500
        let scheduled = try await h.submit(extra: [
            "send_at_ms", .text(String(sendAt)), "tags", #"["later"]"#,
            "expires_ms", .text(String(sendAt + 86_400_000))])
        try await h.waitFor("the scheduled message filed") {
            try await h.redis.run("ZSCORE", h.keys.groupQueue("default:inbox.example"),
                                  scheduled).int == Int(sendAt)
        }
        let now = try await h.submit()
        let first = try await h.nextReady()
        #expect(first["id"] == now)
        let second = try await h.nextReady()
        #expect(second["id"] == scheduled)
        #expect(nowMs() >= sendAt, "released before its send_at")
        let expires = try await h.redis.run("HGET", h.keys.message(scheduled), "expires_ms")
        #expect(Int64(expires.int ?? 0) == sendAt + 3_600_000)

        try await h.result(scheduled, attempt: "1", outcome: "delivered", code: "250",
                           reply: "2.0.0 ok")
        try await h.waitFor("delivered") { try await h.state(scheduled) == "delivered" }
        let all = try await h.redis.run("XRANGE", h.keys.stream(.events), "-", "+")
        let delivered = (all.array ?? []).compactMap { $0.array?[1].fieldMap }
            .first { $0["id"] == scheduled && $0["event"] == "delivered" }
        #expect(delivered?["json"]?.contains(#""tags":["later"]"#) == true)
        await h.stop()
    }

    @Test func releasesWithASourceIPThenRecordsDelivery() async throws {
        let h = try await Harness()
        let id = try await h.submit()
        let ready = try await h.nextReady()
        #expect(ready["id"] == id)
        #expect(ready["attempt"] == "1")
        #expect(["127.0.0.2", "127.0.0.3"].contains(ready["ip"] ?? ""))
        #expect(ready["helo"] == (ready["ip"] == "127.0.0.2" ? "out1.example" : "out2.example"))
        #expect(try await h.state(id) == "sending")

        try await h.result(id, attempt: "1", outcome: "delivered", code: "250",
                           reply: "2.0.0 queued as X")
        try await h.waitFor("delivered") { try await h.state(id) == "delivered" }
        #expect(try await h.events(id) == ["delivered"])
        let attempts = try await h.redis.run("LRANGE", h.keys.attempts(id), "0", "-1")
        let first = try JSONDecoder().decode(
            AttemptRecord.self, from: Data((attempts.array?.first?.string ?? "").utf8))
        #expect(first.outcome == .delivered && first.code == 250 && first.ip == "127.0.0.2")
        let ttl = try await h.redis.run("TTL", h.keys.message(id)).int ?? -1
        #expect(ttl > 0)
        // The hand-overs deleted what they consumed (trimmed after their batch, a moment
        // after the transaction that applied it).
        try await h.waitFor("submit trimmed") {
            try await h.redis.run("XLEN", h.keys.stream(.submit)).int == 0
        }
        try await h.waitFor("results trimmed") {
            try await h.redis.run("XLEN", h.keys.stream(.results)).int == 0
        }
        await h.stop()
    }

    @Test func choosesOnlyTheActiveIPsAndHoldsAPoolWithNone() async throws {
        let h = try await Harness()
        try await h.redis.run("SET", h.keys.poolActive("default"), "127.0.0.3")
        for _ in 0..<3 { _ = try await h.submit() }
        for _ in 0..<3 {
            let ready = try await h.nextReady()
            #expect(ready["ip"] == "127.0.0.3" && ready["helo"] == "out2.example")
        }
        // The reputation monitor left the pool no IP: its mail waits.
        try await h.redis.run("SET", h.keys.poolActive("default"), "")
        let held = try await h.submit()
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await h.state(held) == "queued")
        try await h.redis.run("SET", h.keys.poolActive("default"), "127.0.0.2")
        let ready = try await h.nextReady()
        #expect(ready["id"] == held && ready["ip"] == "127.0.0.2")
        await h.stop()
    }

    @Test func resultsStayUntilTheReputationGroupHasThem() async throws {
        let h = try await Harness()
        let results = h.keys.stream(.results)
        try await h.redis.ensureGroup(stream: results, group: StreamName.reputationGroup)
        let id = try await h.submit()
        _ = try await h.nextReady()
        try await h.result(id, attempt: "1", outcome: "delivered", code: "250", reply: "ok")
        try await h.waitFor("delivered") { try await h.state(id) == "delivered" }
        #expect(try await h.redis.run("XLEN", results).int == 1)
        let theirs = try await h.redis.readGroup(stream: results, group: "reputation",
                                                 consumer: "r", count: 10, block: nil)
        #expect(theirs.map { $0["id"] } == [id])
        try await h.redis.run(["XACK", results, "reputation"] + theirs.map(\.id))
        #expect(try await h.redis.trimAcknowledged(stream: results) == 1)
        await h.stop()
    }

    @Test func deferralRetriesAfterTheDelayThenBounceIsFinal() async throws {
        let h = try await Harness()
        let id = try await h.submit()
        _ = try await h.nextReady()
        let deferredAt = ContinuousClock.now
        try await h.result(id, attempt: "1", outcome: "deferred", code: "451",
                           reply: "4.3.0 try later")
        try await h.waitFor("deferred") { try await h.state(id) == "deferred" }
        let again = try await h.nextReady()
        #expect(again["id"] == id && again["attempt"] == "2")
        #expect(ContinuousClock.now - deferredAt >= .milliseconds(900))

        try await h.result(id, attempt: "2", outcome: "failed", code: "550",
                           reply: "5.1.1 no such user")
        try await h.waitFor("bounced") { try await h.state(id) == "bounced" }
        #expect(try await h.events(id) == ["deferred", "bounced"])
        await h.stop()
    }

    @Test func deferralPastTheMaximumAgeExpires() async throws {
        let h = try await Harness(env: ["TERN_RETRY_DELAYS": "10s"])
        let id = try await h.submit(maxAge: 5_000)
        _ = try await h.nextReady()
        try await h.result(id, attempt: "1", outcome: "deferred", code: "421",
                           reply: "4.7.0 busy")
        try await h.waitFor("expired") { try await h.state(id) == "expired" }
        #expect(try await h.events(id) == ["expired"])
        await h.stop()
    }

    @Test func asynchronousBounceAfterDelivery() async throws {
        let h = try await Harness()
        let id = try await h.submit()
        _ = try await h.nextReady()
        try await h.result(id, attempt: "1", outcome: "delivered", code: "250", reply: "ok")
        try await h.waitFor("delivered") { try await h.state(id) == "delivered" }
        try await h.redis.run(["XADD", h.keys.stream(.inbound), "*", "id", id, "kind", "bounce",
                               "status", "5.1.1", "action", "failed",
                               "diagnostic", "smtp; 550 5.1.1 unknown", "rcpt", "a@inbox.example",
                               "reporter", "mx1.inbox.example"])
        try await h.waitFor("bounced") { try await h.state(id) == "bounced" }
        let last = try await h.redis.run("XREVRANGE", h.keys.stream(.events), "+", "-",
                                         "COUNT", "1")
        let json = last.array?.first?.array?[1].fieldMap["json"] ?? ""
        #expect(json.contains("\"status\":\"5.1.1\""))
        #expect(json.contains("\"metadata\":{\"k\":\"v\"}"))
        await h.stop()
    }

    /// Delivers a message and returns its id.
    func delivered(_ h: Harness, to rcpt: String = "a@inbox.example") async throws -> String {
        let id = try await h.submit(to: rcpt)
        _ = try await h.nextReady()
        try await h.result(id, attempt: "1", outcome: "delivered", code: "250", reply: "ok")
        try await h.waitFor("delivered") { try await h.state(id) == "delivered" }
        return id
    }

    func report(_ h: Harness, _ id: String, kind: String, severity: String, reason: String,
                rcpt: String = "A@inbox.example", dkim: String = "") async throws {
        try await h.redis.run(["XADD", h.keys.stream(.inbound), "*", "id", id, "kind", kind,
                               "severity", severity, "reason", reason, "status", "5.1.1",
                               "action", "failed", "diagnostic", "550 5.1.1 unknown",
                               "rcpt", rcpt, "reporter", "mx1.inbox.example",
                               "remote_mta", "", "feedback_type", "", "id_source", "verp",
                               "format", "dsn", "dkim", dkim,
                               "dkim_domain", dkim.isEmpty ? "" : "fbl.example"])
    }

    func history(_ h: Harness, _ id: String) async throws -> [[String: Any]] {
        let all = try await h.redis.run("LRANGE", h.keys.history(id), "0", "-1")
        return (all.array ?? []).compactMap {
            try? JSONSerialization.jsonObject(with: Data(($0.string ?? "").utf8))
                as? [String: Any]
        }
    }

    @Test func hardBounceSuppressesTheAddressAndCountsOnce() async throws {
        let h = try await Harness()
        let id = try await delivered(h)
        // The same report twice (a remote MTA that sent it again), then the queue is empty.
        try await report(h, id, kind: "bounce", severity: "hard", reason: "user-unknown")
        try await report(h, id, kind: "bounce", severity: "hard", reason: "user-unknown")
        try await h.waitFor("both applied") {
            try await h.redis.run("XLEN", h.keys.stream(.inbound)).int == 0
        }
        #expect(try await h.state(id) == "bounced")
        #expect(try await h.events(id) == ["delivered", "bounced"])
        let members = try await h.redis.run("SMEMBERS", h.keys.suppressions("acme"))
        #expect(members.array?.compactMap(\.string) == ["a@inbox.example"])
        let bounced = try await history(h, id).filter { $0["event"] as? String == "bounced" }
        #expect(bounced.count == 1)
        #expect(bounced.first?["reason"] as? String == "user-unknown")
        #expect(bounced.first?["severity"] as? String == "hard")

        // The next message to that address ends at intake, never released.
        let next = try await h.submit(to: "a@inbox.example")
        try await h.waitFor("suppressed") { try await h.state(next) == "suppressed" }
        #expect(try await h.events(next) == ["suppressed"])
        #expect(try await h.redis.run("XLEN", h.keys.stream(.ready)).int == 1)
        await h.stop()
    }

    @Test func complaintIsAnEventAndSuppresses() async throws {
        let h = try await Harness()
        let id = try await delivered(h, to: "b@inbox.example")
        try await report(h, id, kind: "complaint", severity: "none", reason: "complaint",
                         rcpt: "b@inbox.example", dkim: "pass")
        try await h.waitFor("complained") { try await h.events(id).count == 2 }
        #expect(try await h.events(id) == ["delivered", "complained"])
        // The verdict on the reporting provider's DKIM signature stays with the complaint.
        let complained = try await history(h, id).first { $0["event"] as? String == "complained" }
        #expect(complained?["dkim"] as? String == "pass")
        #expect(complained?["dkim_domain"] as? String == "fbl.example")
        #expect(try await h.state(id) == "delivered")
        let member = try await h.redis.run("SISMEMBER", h.keys.suppressions("acme"),
                                           "b@inbox.example")
        #expect(member.int == 1)
        await h.stop()
    }

    @Test func softBouncesDelaysAndAutoRepliesOnlyGoToHistory() async throws {
        let h = try await Harness()
        let id = try await delivered(h, to: "c@inbox.example")
        try await report(h, id, kind: "bounce", severity: "soft", reason: "mailbox-full")
        try await report(h, id, kind: "delay", severity: "soft", reason: "network-error")
        try await report(h, id, kind: "auto-reply", severity: "none", reason: "vacation")
        try await h.waitFor("noted") {
            try await h.redis.run("XLEN", h.keys.stream(.inbound)).int == 0
        }
        #expect(try await h.state(id) == "delivered")
        #expect(try await h.events(id) == ["delivered"])
        let notes = try await history(h, id).filter { $0["event"] as? String == "report" }
        #expect(notes.compactMap { $0["source"] as? String } == ["bounce", "delay", "auto-reply"])
        #expect(notes.compactMap { $0["reason"] as? String }
                == ["mailbox-full", "network-error", "vacation"])
        let members = try await h.redis.run("SCARD", h.keys.suppressions("acme"))
        #expect(members.int == 0)
        await h.stop()
    }

    @Test func unknownPoolBouncesAtIntake() async throws {
        let h = try await Harness()
        // Cancelled before intake: it stays cancelled, with no second final event.
        let cancelled = try await h.submit(pool: "nosuch", extra: ["state", "cancelled"])
        let id = try await h.submit(pool: "nosuch")
        try await h.waitFor("bounced") { try await h.state(id) == "bounced" }
        #expect(try await h.redis.run("XLEN", h.keys.stream(.ready)).int == 0)
        #expect(try await h.state(cancelled) == "cancelled")
        #expect(try await h.events(cancelled) == [])
        #expect(try await h.redis.run("HGET", h.keys.finalCounts, "bounced").int == 1)
        await h.stop()
    }

    @Test func aRestartedSchedulerFinishesWhatWasPending() async throws {
        // An entry read but not applied (a crash between read and EXEC) is pending for the
        // same consumer name and is applied on the next start.
        let server = try TestRedis()
        defer { server.stop() }
        let redis = try RedisClient(url: server.url)
        let keys = Keys()
        try await redis.ensureGroup(stream: keys.stream(.submit), group: "scheduler")
        let id = MessageID.generate()
        _ = try await redis.transaction([
            ["HSET", .text(keys.message(id)), "id", .text(id), "org", "o", "pool", "default",
             "from", "s@x.example", "rcpt", "a@inbox.example", "domain", "inbox.example",
             "metadata", "{}", "created_ms", .text(String(nowMs())),
             "expires_ms", "99999999999999",
             "state", "queued", "attempts", "0"],
            xadd(keys.stream(.submit), [("id", id)]),
        ])
        _ = try await redis.readGroup(stream: keys.stream(.submit), group: "scheduler",
                                      consumer: "scheduler-t", count: 10, block: nil)
        let environment = Environment(["TERN_REDIS_URL": server.url, "TERN_INSTANCE": "t",
                                       "TERN_POOLS": "default=*/h.example"])
        let daemon = try SchedulerDaemon(
            settings: SchedulerSettings(environment,
                                        common: CommonSettings(environment, role: "scheduler")),
            logger: Logger(label: "test", sink: MemoryLogSink()))
        let shutdown = Shutdown()
        let task = Task { try await daemon.run(shutdown: shutdown) { _ in } }
        var released = false
        for _ in 0..<100 where !released {
            released = (try await redis.run("XLEN", keys.stream(.ready)).int ?? 0) == 1
            try await Task.sleep(for: .milliseconds(25))
        }
        #expect(released)
        shutdown.request()
        _ = try? await task.value
    }
}
