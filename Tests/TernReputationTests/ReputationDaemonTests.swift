// The reputation monitor against the loopback test world's DNS: blocklist zones under
// .example (testworld/dnsbl.json), changed while the daemon runs. No query leaves 127.0.0.1.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernReputation

@Suite(.serialized) struct ReputationDaemonTests {
    static let pools = "default=127.0.0.2/out1.tern.example,127.0.0.3/out2.tern.example;"
        + "solo=127.0.0.2/out1.tern.example;keep=127.0.0.2/out1.tern.example"

    @Test func aListedIPLeavesItsPoolsAndReturnsAfterTheCleanChecks() async throws {
        let listed: [String: Any] = ["2.0.0.127.zen.dnsbl.example": ["A": ["127.0.0.4"]]]
        let world = try await BlocklistWorld.start(records: listed)
        defer { world.stop() }
        let h = try await ReputationHarness(env: [
            "TERN_DNS_RESOLVER": "127.0.0.1:\(world.dnsPort)", "TERN_POOLS": Self.pools,
            "TERN_POOL_ALL_LISTED": "keep=least-listed", "TERN_DNSBL_CLEAN_CHECKS": "2"])

        try await h.waitFor("127.0.0.2 listed") {
            try await h.active("default") == "127.0.0.3"
        }
        #expect(try await h.active("solo") == "")
        #expect(try await h.active("keep") == "127.0.0.2")
        let state = try await h.state("127.0.0.2")
        #expect(state["status"] == "listed")
        #expect(state["reason"] == "listed on zen-test (127.0.0.4)")
        #expect(state["identity"] == "ok")
        let listing = try await h.redis.run("HGET", h.keys.ipListings("127.0.0.2"), "zen-test")
        #expect(listing.string?.contains("\"code\":\"127.0.0.4\"") == true)
        let events = try await h.ipEvents()
        #expect(events.map(\.0) == ["ip_listed"] && events.first?.1 == "127.0.0.2")
        #expect(events.first?.2.contains("\"zen-test\"") == true)
        try await h.waitFor("127.0.0.3 checked") {
            try await h.state("127.0.0.3")["status"] == "active"
        }
        #expect(h.logs.records.contains {
            $0.level == .critical && $0.fields["pool"] == "solo"
        })

        try await world.reload(records: [:])
        try await h.waitFor("127.0.0.2 back") {
            try await h.active("default") == "127.0.0.2,127.0.0.3"
        }
        #expect(try await h.active("solo") == "127.0.0.2")
        #expect(try await h.ipEvents().map(\.0) == ["ip_listed", "ip_delisted"])
        let back = try await h.state("127.0.0.2")
        #expect(back["status"] == "active" && back["clean_checks"] == "0")
        #expect(try await h.redis.run("EXISTS", h.keys.ipListings("127.0.0.2")).int == 0)
        // The return waited for two clean rounds: one clean round was logged as counted.
        await h.stop()
    }

    @Test func anErrorAnswerIsReportedAndATimeoutIsUnknownNeitherIsAListing() async throws {
        let world = try await BlocklistWorld.start(records: [
            "2.0.0.127.zen.dnsbl.example": ["A": ["127.255.255.254"]],
            "2.0.0.127.bl.dnsbl.example": ["_rcode": "DROP"],
        ])
        defer { world.stop() }
        let h = try await ReputationHarness(env: [
            "TERN_DNS_RESOLVER": "127.0.0.1:\(world.dnsPort)",
            "TERN_POOLS": "default=127.0.0.2/out1.tern.example,127.0.0.3/wrong.tern.example"])

        try await h.waitFor("a round for 127.0.0.2") {
            try await h.state("127.0.0.2")["errors"]?.isEmpty == false
        }
        let state = try await h.state("127.0.0.2")
        #expect(state["status"] == "active")
        #expect(state["errors"]
                == "zen-test: 127.255.255.254 query came through a public or open resolver")
        #expect(state["unknown"]?.hasPrefix("bl-test: ") == true)
        #expect(try await h.redis.run("HGET", h.keys.counters, "dnsbl.error").int ?? 0 >= 1)
        #expect(h.logs.records.contains {
            $0.level == .error && $0.fields["list"] == "zen-test"
                && $0.fields["answer"] == "127.255.255.254"
        })
        // 127.0.0.3's PTR is out2.tern.example, not the EHLO name it was given.
        try await h.waitFor("127.0.0.3 checked") {
            try await h.state("127.0.0.3")["status"] == "identity"
        }
        #expect(try await h.state("127.0.0.3")["reason"]
                == "PTR of 127.0.0.3 is out2.tern.example, not the EHLO name wrong.tern.example")
        #expect(try await h.active("default") == "127.0.0.2")
        #expect(try await h.ipEvents().isEmpty)
        await h.stop()
    }
}
