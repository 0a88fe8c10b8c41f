// The reputation monitor's /metrics over a real socket: an IP one list lists shows as listed
// on that list and clean on the other, its pool counts one active IP, and every blocklist
// answer is counted. Part of ReputationDaemonTests' serialized suite: two blocklist worlds
// and monitors at once slow each other's rounds past the other tests' waits on two cores.

import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernReputation

extension ReputationDaemonTests {
    @Test func listingsActiveIPsAndLookupsAreExposed() async throws {
        let listed: [String: Any] = ["2.0.0.127.zen.dnsbl.example": ["A": ["127.0.0.4"]]]
        let world = try await BlocklistWorld.start(records: listed)
        defer { world.stop() }
        let port = freePort()
        let h = try await ReputationHarness(env: [
            "TERN_DNS_RESOLVER": "127.0.0.1:\(world.dnsPort)",
            "TERN_POOLS": "default=127.0.0.2/out1.tern.example,127.0.0.3/out2.tern.example",
            "TERN_METRICS_LISTEN": "127.0.0.1:\(port)"])
        try await h.waitFor("127.0.0.2 listed and 127.0.0.3 checked") {
            let other = try await h.state("127.0.0.3")["status"] == "active"
            return try await h.active("default") == "127.0.0.3" && other
        }

        let active = #"tern_reputation_pool_active_ips{pool="default"}"#
        let m = try await scrapeUntil(port: port, active, is: 1)
        #expect(m.sample(active) == 1)
        #expect(m.sample(#"tern_reputation_ip_listed{ip="127.0.0.2",list="zen-test"}"#) == 1)
        #expect(m.sample(#"tern_reputation_ip_listed{ip="127.0.0.2",list="bl-test"}"#) == 0)
        #expect(m.sample(#"tern_reputation_ip_listed{ip="127.0.0.3",list="zen-test"}"#) == 0)
        let lookups = "tern_reputation_dnsbl_lookups_total"
        #expect((m.sample(lookups + #"{list="zen-test",result="listed"}"#) ?? 0) >= 1)
        #expect((m.sample(lookups + #"{list="bl-test",result="clean"}"#) ?? 0) >= 2)
        #expect((m.sample(#"tern_dns_lookups_total{type="A",result="ok"}"#) ?? 0) >= 1)
        #expect(m.sample(#"tern_stream_pending{stream="results",group="reputation"}"#) == 0)
        #expect(try await scrape(port: port, path: "/health").status == 200)
        await h.stop()
    }
}

extension ReputationDaemonTests {
    @Test func healthSaysRedisIsMissingWhileTheMonitorWaitsForIt() async throws {
        let port = freePort()
        let h = try await ReputationHarness(env: [
            "TERN_REDIS_URL": "redis://127.0.0.1:\(freePort())",
            // Nothing is looked up before Redis answers; a port where nothing listens.
            "TERN_DNS_RESOLVER": "127.0.0.1:\(freePort())",
            "TERN_POOLS": "default=127.0.0.2/out1.example",
            "TERN_METRICS_LISTEN": "127.0.0.1:\(port)"])
        let health = try await scrapeWhenUp(port: port, path: "/health")
        #expect(health.status == 503)
        #expect(health.body.contains("is not reachable"))
        await h.stop()
    }
}
