// An organisation's circuit breaker in the running scheduler, against a real Redis.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernScheduler

extension SchedulerDaemonTests {
    func systemEvents(_ h: Harness, _ kind: String) async throws -> [[String: String]] {
        let all = try await h.redis.run("XRANGE", h.keys.stream(.events), "-", "+")
        return (all.array ?? []).compactMap { $0.array?[1].fieldMap }
            .filter { $0["event"] == kind }
    }

    @Test func aBurstOfHardBouncesOpensTheBreakerOfThatOrganisationOnly() async throws {
        let h = try await Harness(env: ["TERN_BREAKER_MIN_SAMPLE": "4",
                                        "TERN_BREAKER_COOL_DOWN": "2s",
                                        "TERN_BREAKER_TRIAL": "1"])
        for n in 0..<4 {
            let id = try await h.submit(to: "gone\(n)@inbox.example", org: "spammy")
            let ready = try await h.nextReady()
            #expect(ready["id"] == id)
            try await h.result(id, attempt: "1", outcome: "failed", code: "550",
                               reply: "5.1.1 unknown", enhanced: "5.1.1", stage: "rcpt")
            try await h.waitFor("bounced") { try await h.state(id) == "bounced" }
        }
        try await h.waitFor("breaker opened") {
            try await systemEvents(h, "breaker_opened").count == 1
        }
        let opened = try await systemEvents(h, "breaker_opened")
        #expect(opened.first?["json"]?.contains(#""org":"spammy""#) == true)
        #expect(opened.first?["json"]?.contains("bounce rate 100.00% over 5.00% (4 of 4)") == true)

        // Its next message waits; another organisation's goes at once.
        let held = try await h.submit(to: "new@inbox.example", org: "spammy")
        let other = try await h.submit(to: "new@inbox.example", org: "clean")
        let ready = try await h.nextReady()
        #expect(ready["id"] == other)
        try await h.waitFor("held in history") {
            let history = try await h.redis.run("LRANGE", h.keys.history(held), "0", "-1")
            return (history.array ?? []).contains {
                $0.string?.contains(#""event":"held""#) == true
            }
        }
        #expect(try await h.state(held) == "queued")

        // After the cool-down one trial message goes; delivered, it closes the breaker.
        let trial = try await h.nextReady()
        #expect(trial["id"] == held)
        try await h.result(held, attempt: "1", outcome: "delivered", code: "250", reply: "ok")
        try await h.waitFor("breaker closed") {
            try await systemEvents(h, "breaker_closed").count == 1
        }
        #expect(try await h.redis.run("HEXISTS", h.keys.heldOrgs, "spammy").int == 0)
        await h.stop()
    }
}
