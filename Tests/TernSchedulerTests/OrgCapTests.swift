// An organisation's hourly and daily caps in the running scheduler, against a real Redis.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernScheduler

@Suite struct OrgCapsParsingTests {
    @Test func parsesCapsAndNamesWhatIsWrong() throws {
        let caps = try OrgCaps("acme=1000/h,20000/d; globex=500/h")
        #expect(caps.byOrg["acme"] == OrgCaps.Cap(hourly: 1000, daily: 20000))
        #expect(caps.byOrg["globex"] == OrgCaps.Cap(hourly: 500, daily: 0))
        #expect(try OrgCaps("").byOrg.isEmpty)
        for bad in ["acme", "acme=10", "acme=10/w", "acme=0/h", "=5/h"] {
            #expect(throws: ConfigError.self) { try OrgCaps(bad) }
        }
    }

    @Test func scriptArgumentsNameTheHourAndDayBuckets() {
        // 2026-12-04T17:20:00Z
        let args = OrgCaps.scriptArgs(prefix: "p:", nowMs: 1_796_404_800_000)
        let texts = args.map { String(decoding: $0.bytes, as: UTF8.self) }
        #expect(texts == ["p:", "2026-12-04T17", "2026-12-04", "2400000", "24000000"])
        // An hour before ten has its leading zero: 2026-12-04T06:00:00Z.
        let early = OrgCaps.scriptArgs(prefix: "", nowMs: 1_796_364_000_000)
        #expect(String(decoding: early[1].bytes, as: UTF8.self) == "2026-12-04T06")
    }
}

extension SchedulerDaemonTests {
    @Test func anOrganisationAtItsHourlyCapWaitsAndOthersGoOn() async throws {
        let h = try await Harness(env: ["TERN_ORG_CAPS": "capped=2/h"])
        var ids: [String] = []
        for n in 0..<3 { ids.append(try await h.submit(to: "c\(n)@inbox.example", org: "capped")) }
        let other = try await h.submit(to: "o@inbox.example", org: "free")
        var released: Set<String> = []
        for _ in 0..<3 { released.insert(try await h.nextReady()["id"] ?? "") }
        #expect(released.contains(other))
        #expect(released.intersection(ids).count == 2)
        let waiting = try #require(ids.first { !released.contains($0) })
        try await h.waitFor("held in history") {
            try await history(h, waiting).contains {
                ($0["reason"] as? String)?.contains("reached its hourly cap") == true
            }
        }
        #expect(try await h.state(waiting) == "queued")
        // Only the two released messages were counted.
        guard case .text(let hour) = OrgCaps.scriptArgs(prefix: "", nowMs: nowMs())[1] else {
            Issue.record("no hour bucket")
            return
        }
        let counted = try await h.redis.run("GET", h.keys.orgSentPrefix + "capped:h:" + hour)
        #expect(counted.int == 2)
        await h.stop()
    }
}
