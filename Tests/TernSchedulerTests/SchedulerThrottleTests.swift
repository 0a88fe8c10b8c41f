// The scheduler's provider throttle and suppression against a real Redis.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernScheduler

extension SchedulerDaemonTests {
    func savedRate(_ h: Harness, ip: String, provider: String) async throws -> AdaptiveRate? {
        let json = try await h.redis.run("HGET", h.keys.throttles, ip + "|" + provider).string
        return try json.map { try JSONDecoder().decode(AdaptiveRate.self, from: Data($0.utf8)) }
    }

    @Test func aHardBounceSuppressesTheRecipientForItsOrganisationOnly() async throws {
        let h = try await Harness()
        let first = try await h.submit(to: "gone@inbox.example")
        _ = try await h.nextReady()
        try await h.result(first, attempt: "1", outcome: "failed", code: "550",
                           reply: "5.1.1 no such user", enhanced: "5.1.1", stage: "rcpt")
        try await h.waitFor("bounced") { try await h.state(first) == "bounced" }
        let members = try await h.redis.run("SMEMBERS", h.keys.suppressions("acme"))
        #expect(members.array?.compactMap(\.string) == ["gone@inbox.example"])

        let again = try await h.submit(to: "Gone@inbox.example")
        try await h.waitFor("suppressed") { try await h.state(again) == "suppressed" }
        #expect(try await h.events(again) == ["suppressed"])
        // Another organisation may still mail the address.
        let other = try await h.submit(to: "gone@inbox.example", org: "globex")
        let ready = try await h.nextReady()
        #expect(ready["id"] == other)
        await h.stop()
    }

    /// A suppression holds whatever the case of the address and whichever form its
    /// internationalised domain is written in; an entry in the form lists held before
    /// `listKey` (the address lowercased as given) still holds for that form.
    @Test func aSuppressionHoldsForEitherFormOfTheDomainAndAnyCase() async throws {
        let h = try await Harness()
        try await h.redis.run("SADD", h.keys.suppressions("acme"),
                              EmailAddress.listKey(of: "Dan@BÜCHER.example"), "eve@bücher.example")
        let ids = [try await h.submit(to: "dan@xn--bcher-kva.example"),
                   try await h.submit(to: "DAN@bücher.example"),
                   try await h.submit(to: "Eve@bücher.example")]
        for id in ids {
            try await h.waitFor("suppressed") { try await h.state(id) == "suppressed" }
        }
        // A hard bounce stores the one key, the domain in A-labels.
        let bounced = try await h.submit(to: "Gus@Bücher.example")
        _ = try await h.nextReady()
        try await h.result(bounced, attempt: "1", outcome: "failed", code: "550",
                           reply: "5.1.1 no such user", enhanced: "5.1.1", stage: "rcpt")
        try await h.waitFor("bounced") { try await h.state(bounced) == "bounced" }
        #expect(try await h.redis.run("SISMEMBER", h.keys.suppressions("acme"),
                                      "gus@xn--bcher-kva.example").int == 1)
        await h.stop()
    }

    @Test func aReplyThatBlocksTheIPDefersAndPausesThatIPOnlyForThatProvider() async throws {
        let h = try await Harness()
        let id = try await h.submit(to: "someone@company.example")
        let ready = try await h.nextReady()
        let blockedIP = try #require(ready["ip"])
        try await h.result(id, attempt: "1", outcome: "failed", code: "554",
                           reply: "5.7.1 Service unavailable; client host [x] blocked using "
                               + "zen.spamhaus.org", enhanced: "5.7.1", stage: "rcpt",
                           mx: "aspmx.l.google.com", ip: blockedIP)
        // Not the recipient's fault: deferred, not bounced, and not suppressed.
        try await h.waitFor("deferred") { try await h.state(id) == "deferred" }
        #expect(try await h.redis.run("SCARD", h.keys.suppressions("acme")).int == 0)
        // The domain is now known as Gmail's (by its MX), and the IP is paused there.
        #expect(try await h.redis.run("HGET", h.keys.domainProviders, "company.example").string
                == "gmail")
        let rate = try #require(try await savedRate(h, ip: blockedIP, provider: "gmail"))
        #expect(rate.state == .paused)
        #expect(rate.reason.contains("blocked using zen.spamhaus.org"))
        let events = try await h.redis.run("XRANGE", h.keys.stream(.events), "-", "+")
        let paused = (events.array ?? []).compactMap { $0.array?[1].fieldMap }
            .filter { $0["event"] == "ip_paused" }
        #expect(paused.count == 1)
        #expect(paused.first?["json"]?.contains(#""provider":"gmail""#) == true)

        // The retry, and any other mail to Gmail, leaves from the other IP.
        _ = try await h.submit(to: "x@gmail.com")
        var ips: Set<String> = []
        for _ in 0..<2 { ips.insert(try await h.nextReady()["ip"] ?? "") }
        #expect(ips == Set(["127.0.0.2", "127.0.0.3"]).subtracting([blockedIP]))
        await h.stop()
    }

    @Test func slowDownHalvesTheRateAndTheRatePacesReleases() async throws {
        let dir = NSTemporaryDirectory() + "tern-providers-\(UUID().uuidString).json"
        try Data(#"{"providers": [{"name": "default", "messagesPerMinute": 2}]}"#.utf8)
            .write(to: URL(fileURLWithPath: dir))
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let h = try await Harness(env: ["TERN_POOLS": "default=127.0.0.2/out1.example",
                                        "TERN_PROVIDERS_FILE": dir])
        let submitted = [try await h.submit(), try await h.submit()]
        // Both are due at once; whichever goes first, the other must wait.
        let id = try #require(try await h.nextReady()["id"])
        #expect(submitted.contains(id))
        let waiting = submitted.first { $0 != id }!
        // Two a minute from one IP: the second waits half a minute.
        try await h.waitFor("group held") {
            let score = try await h.redis.run("ZSCORE", h.keys.dueGroups, "default:inbox.example")
            return (Int64(score.string ?? "") ?? 0) > nowMs() + 20_000
        }
        #expect(try await h.state(waiting) == "queued")

        try await h.result(id, attempt: "1", outcome: "deferred", code: "421",
                           reply: "4.7.0 Try again later, closing connection",
                           enhanced: "4.7.0", stage: "mail")
        try await h.waitFor("rate saved") {
            try await savedRate(h, ip: "127.0.0.2", provider: "default:inbox.example") != nil
        }
        let rate = try #require(try await savedRate(h, ip: "127.0.0.2",
                                                    provider: "default:inbox.example"))
        #expect(rate.rate == 1)
        #expect(rate.state == .backingOff)
        #expect(rate.reason == "slow down: 4.7.0 Try again later, closing connection")
        await h.stop()
    }

    @Test func aDueBurstTakesOnlyTheIPsTheThrottleAllows() async throws {
        let dir = NSTemporaryDirectory() + "tern-providers-\(UUID().uuidString).json"
        try Data(#"{"providers": [{"name": "default", "messagesPerMinute": 2}]}"#.utf8)
            .write(to: URL(fileURLWithPath: dir))
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // No group pace: a due group releases a burst per pass, but each message of it
        // still needs an IP of the two that may send now.
        let h = try await Harness(env: ["TERN_PROVIDERS_FILE": dir])
        var ids: [String] = []
        for _ in 0..<5 { ids.append(try await h.submit()) }
        try await h.waitFor("all taken in") {
            // Waiting in the queue, or come due and ranked by engagement.
            let group = "default:inbox.example"
            let queued = try await h.redis.run("ZCARD", h.keys.groupQueue(group))
            let due = try await h.redis.run("ZCARD", h.keys.groupDue(group))
            let released = try await h.redis.run("XLEN", h.keys.stream(.ready))
            return (queued.int ?? 0) + (due.int ?? 0) + (released.int ?? 0) == 5
        }
        try await h.waitFor("group held") {
            let score = try await h.redis.run("ZSCORE", h.keys.dueGroups, "default:inbox.example")
            return (Int64(score.string ?? "") ?? 0) > nowMs() + 20_000
        }
        let ready = try await h.redis.run("XRANGE", h.keys.stream(.ready), "-", "+")
        let ips = (ready.array ?? []).compactMap { $0.array?[1].fieldMap["ip"] }
        #expect(ips.sorted() == ["127.0.0.2", "127.0.0.3"])
        var queued = 0
        for id in ids where try await h.state(id) == "queued" { queued += 1 }
        #expect(queued == 3)
        await h.stop()
    }
}
