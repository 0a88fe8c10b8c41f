// Statistics: reply texts and providers (pure), and rolling windows over a real Redis fed
// with stream entries written at known times.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernReputation

@Suite struct StatsTextTests {
    @Test(arguments: [
        (421, "4.7.0", "421 4.7.0 Try again in 300 seconds [AB12CD]",
         "421 4.7.0 try again in # seconds #"),
        (250, "2.0.0", "2.0.0 Ok: queued as 4F2A1B", "250 2.0.0 ok: queued as #"),
        (550, "5.1.1", "550-5.1.1 User unknown\n550 5.1.1 more", "550 5.1.1 user unknown"),
        (0, "", "", ""),
        (0, "5.7.1", "smtp; 550 5.7.1 Blocked", "5.7.1 smtp; # # blocked"),
    ])
    func repliesAreMaskedAndShort(_ code: Int, _ enhanced: String, _ reply: String,
                                  _ expected: String) {
        #expect(StatsSample.replyText(code: code, enhanced: enhanced, reply: reply) == expected)
    }

    @Test func providersAreTheSchedulersProfileNames() {
        let c = ProviderCatalog.builtin
        // By the recipient domain, else by the MX host, else `*` for every other provider.
        #expect(c.statsName(domain: "gmail.com", mx: "") == "gmail")
        #expect(c.statsName(domain: "company.example",
                            mx: "alt1.gmail-smtp-in.l.google.com.") == "gmail")
        #expect(c.statsName(domain: "Hotmail.com", mx: "mx1.inbox.example") == "microsoft")
        #expect(c.statsName(domain: "inbox.example", mx: "mx1.inbox.example") == "*")
        #expect(c.statsName(domain: "", mx: "") == "*")
    }
}

@Suite(.serialized) struct StatsWindowTests {
    @Test func windowsCountWhatHappenedInThem() async throws {
        let now = nowMs()
        let h = try await ReputationHarness(env: [
            // No fixed address: nothing to check in DNS; the resolver is a loopback port
            // that nothing answers on.
            "TERN_DNS_RESOLVER": "127.0.0.1:9", "TERN_POOLS": "default=*/h.example"])
        let results = h.keys.stream(.results), inbound = h.keys.stream(.inbound)
        var seq = 0
        func result(_ ago: Int64, ip: String, outcome: String, code: String, enhanced: String,
                    reply: String, stage: String = "rcpt") async throws {
            seq += 1
            try await h.redis.run(["XADD", results, "\(now - ago)-\(seq)", "id", "m\(seq)",
                                   "attempt", "1", "outcome", outcome, "code", code,
                                   "enhanced", enhanced, "reply", reply, "stage", stage,
                                   "mx", "mx1.inbox.example", "addr", "127.0.0.11",
                                   "ip", ip, "tls", "", "ms", "5"])
        }
        let minute: Int64 = 60_000
        try await result(120 * minute, ip: "127.0.0.2", outcome: "delivered", code: "250",
                         enhanced: "2.0.0", reply: "2.0.0 Ok: queued as A1")
        try await result(30 * minute, ip: "127.0.0.2", outcome: "deferred", code: "421",
                         enhanced: "4.7.0", reply: "4.7.0 Try again later")
        try await result(5 * minute, ip: "127.0.0.2", outcome: "delivered", code: "250",
                         enhanced: "2.0.0", reply: "2.0.0 Ok: queued as B22")
        try await result(5 * minute, ip: "127.0.0.2", outcome: "delivered", code: "250",
                         enhanced: "2.0.0", reply: "2.0.0 Ok: queued as C333")
        try await result(5 * minute, ip: "127.0.0.2", outcome: "failed", code: "550",
                         enhanced: "5.1.1", reply: "5.1.1 User unknown")
        try await result(5 * minute, ip: "127.0.0.3", outcome: "deferred", code: "451",
                         enhanced: "4.3.0", reply: "4.3.0 Try again later")
        // A domain that does not exist: nothing left the IP, so only the provider counts it.
        try await result(5 * minute, ip: "127.0.0.2", outcome: "failed", code: "0",
                         enhanced: "5.1.2", reply: "the recipient domain does not exist",
                         stage: "dns")
        // A complaint about a message whose last attempt left from 127.0.0.2.
        let attempt = AttemptRecord(at: "", attempt: 1, outcome: .delivered, code: 250,
                                    enhanced: "2.0.0", reply: "ok", stage: "dot",
                                    mx: "mx1.inbox.example", addr: "127.0.0.11",
                                    ip: "127.0.0.2", tls: "", ms: 5)
        let json = String(decoding: try JSONEncoder().encode(attempt), as: UTF8.self)
        try await h.redis.run("RPUSH", h.keys.attempts("m3"), json)
        try await h.redis.run(["XADD", inbound, "\(now - minute)-1", "id", "m3",
                               "kind", "complaint", "action", "failed", "rcpt", "a@inbox.example",
                               "status", "", "diagnostic", "abuse report", "reporter", "fbl"])

        // Read, counted, acknowledged; with no other group, trimmed away.
        try await h.waitFor("both streams consumed") {
            let left = try await h.redis.run("XLEN", results).int ?? 0
            return try await left + (h.redis.run("XLEN", inbound).int ?? 0) == 0
        }
        func window(_ w: StatsWindow, _ scope: String) async throws -> WindowStats {
            try await h.redis.window(w, scope: scope, keys: h.keys, nowMs: now)
        }
        #expect(try await window(.quarterHour, "ip:127.0.0.2").counts
                == DayCounts(delivered: 2, deferred: 0, bounced: 1, complained: 1))
        let hour = try await window(.hour, "ip:127.0.0.2")
        #expect(hour.counts == DayCounts(delivered: 2, deferred: 1, bounced: 1, complained: 1))
        #expect(hour.topReplies.first?.0 == "250 2.0.0 ok: queued as #")
        #expect(hour.topReplies.first?.1 == 2)
        #expect(hour.topReplies.count == 4)
        #expect(try await window(.day, "ip:127.0.0.2").counts
                == DayCounts(delivered: 3, deferred: 1, bounced: 1, complained: 1))
        #expect(try await window(.quarterHour, "prov:*").counts
                == DayCounts(delivered: 2, deferred: 1, bounced: 2, complained: 1))
        let third = try await window(.hour, "ipprov:127.0.0.3|*")
        #expect(third.counts == DayCounts(deferred: 1))
        #expect(third.topReplies.map(\.0) == ["451 4.3.0 try again later"])
        #expect(try await window(.day, "ip:127.0.0.9").counts == DayCounts())
        await h.stop()
    }
}
