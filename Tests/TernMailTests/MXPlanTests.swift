// MX ordering: preference order, shuffling among equals, null MX (RFC 7505), implicit MX.

import Testing
import TernMail
import TernTestSupport

@Suite struct MXPlanTests {
    let records = [
        MXRecord(preference: 20, host: "backup.example.com."),
        MXRecord(preference: 10, host: "MX1.example.com."),
        MXRecord(preference: 10, host: "mx2.example.com."),
        MXRecord(preference: 10, host: "mx3.example.com"),
        MXRecord(preference: 30, host: "last.example.com."),
    ]

    func hosts(_ plan: MXPlan) -> [String] {
        if case .hosts(let hosts) = plan { return hosts }
        Issue.record("expected hosts, got \(plan)")
        return []
    }

    @Test func sortsByPreferenceAndShufflesEquals() {
        var seen = Set<[String]>()
        for seed in 0..<64 as Range<UInt64> {
            var generator = SeededGenerator(state: seed)
            let ordered = hosts(MXOrdering.plan(for: "example.com", records: records,
                                                using: &generator))
            #expect(ordered.count == 5)
            #expect(Set(ordered.prefix(3)) == ["mx1.example.com", "mx2.example.com",
                                               "mx3.example.com"])
            #expect(ordered.suffix(2) == ["backup.example.com", "last.example.com"])
            seen.insert(Array(ordered.prefix(3)))
        }
        // 64 seeds over 6 orders of three equal hosts: all orders turn up.
        #expect(seen.count == 6)
    }

    @Test func sameSeedSameOrder() {
        var a = SeededGenerator(state: 42)
        var b = SeededGenerator(state: 42)
        #expect(MXOrdering.plan(for: "example.com", records: records, using: &a)
                == MXOrdering.plan(for: "example.com", records: records, using: &b))
    }

    @Test func distinctPreferencesKeepTheirOrder() {
        let plan = MXOrdering.plan(for: "example.com", records: [
            MXRecord(preference: 5, host: "b.example.com"),
            MXRecord(preference: 0, host: "a.example.com"),
            MXRecord(preference: 65535, host: "c.example.com"),
        ])
        #expect(plan == .hosts(["a.example.com", "b.example.com", "c.example.com"]))
    }

    @Test func duplicateHostsAreTriedOnce() {
        let plan = MXOrdering.plan(for: "example.com", records: [
            MXRecord(preference: 10, host: "mx.example.com."),
            MXRecord(preference: 20, host: "MX.example.com"),
        ])
        #expect(plan == .hosts(["mx.example.com"]))
    }

    @Test func nullMX() {
        #expect(MXOrdering.plan(for: "example.com",
                                records: [MXRecord(preference: 0, host: ".")]) == .nullMX)
        #expect(MXOrdering.plan(for: "example.com",
                                records: [MXRecord(preference: 0, host: "")]) == .nullMX)
        // A "." next to real hosts is skipped rather than failing the domain.
        #expect(MXOrdering.plan(for: "example.com", records: [
            MXRecord(preference: 0, host: "."), MXRecord(preference: 10, host: "mx.example.com"),
        ]) == .hosts(["mx.example.com"]))
    }

    @Test func implicitMX() {
        #expect(MXOrdering.plan(for: "Example.COM.", records: []) == .implicit("example.com"))
    }
}
