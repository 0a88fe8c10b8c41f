// Operators' pauses and cancellations in the running scheduler, against a real Redis: a
// paused group, provider, pool or organisation waits without failing and goes on resume,
// and a cancel racing the release ends each message one way only.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernScheduler

extension SchedulerDaemonTests {
    func history(_ h: Harness, _ id: String) async throws -> [String] {
        try await h.redis.run("LRANGE", h.keys.history(id), "0", "-1").array?
            .compactMap(\.string) ?? []
    }

    func readyIDs(_ h: Harness) async throws -> [String] {
        let all = try await h.redis.run("XRANGE", h.keys.stream(.ready), "-", "+")
        return (all.array ?? []).compactMap { $0.array?[1].fieldMap["id"] }
    }

    @Test(arguments: [(PauseKind.group, "default:inbox.example"), (.provider, "default"),
                      (.pool, "default")])
    func aPausedGroupProviderOrPoolWaitsAndGoesOnResume(kind: PauseKind, name: String)
        async throws
    {
        let h = try await Harness()
        let control = ControlStore(redis: h.redis, keys: h.keys)
        try await control.pause(Pause(kind: kind, name: name, reason: "maintenance",
                                      by: "test", sinceMs: nowMs()))
        let id = try await h.submit()
        try await h.waitFor("held in history") {
            try await history(h, id).contains { $0.contains(#""event":"held""#) }
        }
        let held = try await history(h, id).first { $0.contains(#""event":"held""#) } ?? ""
        #expect(held.contains("\(kind == .group ? "group" : kind.rawValue) \(name) is paused "
                              + "(maintenance): waiting for a resume"))
        #expect(held.contains(#""pause":"\#(kind.rawValue):\#(name)""#))
        #expect(try await h.redis.run("HGET", h.keys.message(id), "held").string == "pause")
        // Another pass or two changes nothing: it waits, it does not fail.
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await h.state(id) == "queued")
        #expect(try await readyIDs(h).isEmpty)

        #expect(try await control.resume(kind, name))
        #expect(try await control.resume(kind, name) == false)
        let ready = try await h.nextReady()
        #expect(ready["id"] == id)
        #expect(try await h.state(id) == "sending")
        #expect(try await h.redis.run("HEXISTS", h.keys.message(id), "held").int == 0)
        await h.stop()
    }

    @Test func aPausedOrganisationsMessagesWaitWhileOthersGoAndReturnAtOnceOnResume()
        async throws
    {
        let h = try await Harness()
        let control = ControlStore(redis: h.redis, keys: h.keys)
        try await control.pause(Pause(kind: .org, name: "acme", reason: "", by: "test",
                                      sinceMs: nowMs()))
        // Its deadline two hours away: held an hour, not up to its deadline.
        let held = try await h.submit(org: "acme", maxAge: 7_200_000)
        let other = try await h.submit(org: "globex")
        #expect(try await h.nextReady()["id"] == other)
        try await h.waitFor("noted as held") {
            try await h.redis.run("HGET", h.keys.pauseHeld("acme"), held).string
                == "default:inbox.example"
        }
        try await h.waitFor("held in history") {
            try await history(h, held).contains {
                $0.contains("organisation acme is paused: waiting for a resume")
            }
        }
        #expect(try await h.state(held) == "queued")
        // Held for an hour, not looked at again every pass.
        let score = try await h.redis.run("ZSCORE", h.keys.groupQueue("default:inbox.example"),
                                          held).string.flatMap(Double.init) ?? 0
        #expect(score > Double(nowMs() + 3_000_000))

        #expect(try await control.resume(.org, "acme"))
        #expect(try await h.nextReady()["id"] == held)
        #expect(try await h.redis.run("EXISTS", h.keys.pauseHeld("acme")).int == 0)
        await h.stop()
    }

    @Test func aCancelledMessageIsNeverReleasedAndOneInASendersHandsIsNotCancelled()
        async throws
    {
        let h = try await Harness()
        let control = ControlStore(redis: h.redis, keys: h.keys)
        // Held by its organisation's pause, then cancelled: the resume does not bring it back.
        try await control.pause(Pause(kind: .org, name: "acme", reason: "", by: "test",
                                      sinceMs: nowMs()))
        let id = try await h.submit(org: "acme")
        try await h.waitFor("held") {
            try await h.redis.run("HEXISTS", h.keys.pauseHeld("acme"), id).int == 1
        }
        #expect(try await control.cancel(id: id, org: "globex", by: "t", recordTTL: .seconds(60))
                == .notFound)
        #expect(try await control.cancel(id: id, org: "acme", by: "t", recordTTL: .seconds(60))
                == .cancelled)
        #expect(try await h.state(id) == "cancelled")
        #expect(try await h.redis.run("HEXISTS", h.keys.message(id), "body").int == 0)
        #expect(try await h.events(id) == ["cancelled"])
        #expect(try await history(h, id).last?.contains(#""reason":"cancelled by t""#) == true)
        #expect(try await h.redis.run("TTL", h.keys.message(id)).int ?? 0 > 0)
        #expect(try await control.cancel(id: id, org: nil, by: "t", recordTTL: .seconds(60))
                == .refused(state: .cancelled))
        try await control.resume(.org, "acme")
        let later = try await h.submit(org: "acme")
        #expect(try await h.nextReady()["id"] == later)
        #expect(try await control.cancel(id: later, org: nil, by: "t", recordTTL: .seconds(60))
                == .refused(state: .sending))
        #expect(try await readyIDs(h) == [later])
        await h.stop()
    }

    @Test func cancelsRacingTheReleaseEndEachMessageOneWayOnly() async throws {
        let h = try await Harness()
        let control = ControlStore(redis: h.redis, keys: h.keys)
        var ids: [String] = []
        for n in 0..<200 { ids.append(try await h.submit(to: "r\(n)@inbox\(n % 5).example")) }
        // Cancel every message while the scheduler releases them, four at a time, the
        // newest first (those are the likeliest still waiting).
        var outcomes: [String: CancelOutcome] = [:]
        try await withThrowingTaskGroup(of: (String, CancelOutcome).self) { group in
            for (n, id) in ids.reversed().enumerated() {
                if n >= 4, let (done, outcome) = try await group.next() {
                    outcomes[done] = outcome
                }
                group.addTask {
                    (id, try await control.cancel(id: id, org: nil, by: "race",
                                                  recordTTL: .seconds(60)))
                }
            }
            for try await (done, outcome) in group { outcomes[done] = outcome }
        }
        // Every message is either cancelled and never released, or released and refused.
        try await Task.sleep(for: .milliseconds(300))
        let released = Set(try await readyIDs(h))
        var cancelled = 0
        for id in ids {
            let state = try await h.state(id)
            if released.contains(id) {
                #expect(outcomes[id] == .refused(state: .sending))
                #expect(state == "sending")
                #expect(try await h.events(id).isEmpty)
            } else {
                #expect(outcomes[id] == .cancelled)
                #expect(state == "cancelled")
                #expect(try await h.events(id) == ["cancelled"])
                cancelled += 1
            }
        }
        #expect(cancelled + released.count == ids.count)
        // Each cancellation counted once, with the state change.
        #expect(try await h.redis.run("HGET", h.keys.finalCounts, "cancelled").int
                == cancelled)
        await h.stop()
    }
}
