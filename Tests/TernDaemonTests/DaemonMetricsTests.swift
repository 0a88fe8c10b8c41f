// /metrics of the API and the bounce receiver over real sockets, against a real Redis, after
// known work: the counters must show exactly what was done.

import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernAPI
@testable import TernBounce

@Suite(.serialized) struct DaemonMetricsTests {
    @Test func apiCountsAcceptedRefusedAndUnsignedMessages() async throws {
        let h = try await APIDaemonTests.Harness()
        #expect(try await h.post(APIDaemonTests.valid()).status == 202)
        #expect(try await h.post(APIDaemonTests.valid(), key: nil).status == 401)
        #expect(try await h.post(APIDaemonTests.valid(["to": "nobody"])).status == 422)

        let m = try await scrape(port: Int(h.address.port))
        #expect(m.status == 200)
        #expect(m.head.contains("Content-Type: text/plain; version=0.0.4"))
        #expect(m.sample("tern_api_messages_accepted_total") == 1)
        #expect(m.sample(#"tern_api_messages_refused_total{reason="unauthorized"}"#) == 1)
        #expect(m.sample(#"tern_api_messages_refused_total{reason="invalid"}"#) == 1)
        #expect(m.sample(#"tern_api_dkim_messages_total{result="unsigned"}"#) == 1)
        #expect(m.sample(#"tern_api_dkim_messages_total{result="signed"}"#) == nil)
        #expect(m.sample(#"tern_counters_total{counter="dkim.unsigned"}"#) == 1)
        #expect(m.body.contains("# TYPE process_cpu_seconds_total counter\n"))
        await h.stop()
    }

    @Test func bounceReceiverCountsSessionsAndForgedAddresses() async throws {
        let port = freePort()
        let h = try await BounceDaemonTests.Harness(env: [
            "TERN_METRICS_LISTEN": "127.0.0.1:\(port)",
        ])
        _ = try await scrapeWhenUp(port: port, path: "/health")
        let c = try await h.client()
        #expect(try await c.command("MAIL FROM:<>")?.code == 250)
        let forged = BounceDaemonTests.forged(h.verp.address(for: MessageID.generate()),
                                              replacement: "z")
        #expect(try await c.command("RCPT TO:<\(forged)>")?.code == 550)

        let during = try await scrape(port: port)
        #expect(during.sample("tern_bounce_sessions_active") == 1)
        #expect(during.sample(#"tern_bounce_reports_total{kind="forged"}"#) == 1)
        #expect(during.sample(#"tern_counters_total{counter="bounce.forged"}"#) == 1)
        #expect(during.sample(#"tern_stream_length{stream="inbound"}"#) == 0)
        try await c.quit()

        let health = try await scrape(port: port, path: "/health")
        #expect(health.status == 200)
        let other = try await scrape(port: port, path: "/other")
        #expect(other.status == 404)
        try await h.stop()
    }

    @Test func senderCountsItsDeliveryAndTimesItsDNSLookups() async throws {
        let port = freePort()
        let h = try await SenderHarness(env: ["TERN_METRICS_LISTEN": "127.0.0.1:\(port)"])
        let before = try await scrapeWhenUp(port: port)
        #expect(before.sample("tern_sender_deliveries_total") == 0)
        let id = try await h.submit(to: "counted@inbox.example")
        #expect(try await h.result(id)["outcome"] == "delivered")

        // The gauge goes down just after the result is written: wait for it.
        let m = try await scrapeUntil(port: port, "tern_sender_deliveries_in_flight", is: 0)
        #expect(m.sample("tern_sender_deliveries_total") == 1)
        #expect(m.sample("tern_sender_deliveries_in_flight") == 0)
        // One MX lookup for inbox.example, then the address of its first MX host.
        #expect(m.sample(#"tern_dns_lookups_total{type="MX",result="ok"}"#) == 1)
        #expect(m.sample(#"tern_dns_lookup_duration_seconds_count{type="MX"}"#) == 1)
        #expect(m.sample(#"tern_dns_lookup_duration_seconds_bucket{type="MX",le="+Inf"}"#) == 1)
        #expect(m.sample(#"tern_stream_pending{stream="ready",group="sender"}"#) == 0)
        let health = try await scrape(port: port, path: "/health")
        #expect(health.status == 200)
        await h.stop()
    }
}
