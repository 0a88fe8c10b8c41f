// The scheduler's /metrics and /health over a real socket, after known work against a real
// Redis: one message released and delivered must show as exactly one release and one
// delivered attempt.

import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernScheduler

@Suite(.serialized) struct SchedulerMetricsTests {
    typealias Harness = SchedulerDaemonTests.Harness

    @Test func oneDeliveredResultCountsOnce() async throws {
        let port = freePort()
        let h = try await Harness(env: ["TERN_METRICS_LISTEN": "127.0.0.1:\(port)"])
        let health = try await scrapeWhenUp(port: port, path: "/health")
        #expect(health.status == 200)
        #expect(health.body == #"{"status":"ok"}"#)

        let id = try await h.submit()
        let ready = try await h.nextReady()
        let ip = ready["ip"] ?? ""
        try await h.result(id, attempt: "1", outcome: "delivered", code: "250",
                           reply: "2.0.0 queued as X", ip: ip)
        let delivered = #"tern_scheduler_attempts_total{outcome="delivered",reply_class="2xx","#
            + #"provider="default"}"#
        #expect(try await scrapeUntil(port: port, delivered, is: 1).sample(delivered) == 1)

        let m = try await scrapeUntil(port: port, "tern_scheduler_releases_total", is: 1)
        #expect(m.status == 200)
        #expect(m.head.contains("Content-Type: text/plain; version=0.0.4"))
        #expect(m.sample("tern_scheduler_releases_total") == 1)
        #expect(m.sample(#"tern_scheduler_attempts_tls_total{tls="no"}"#) == 1)
        #expect(m.sample(#"tern_scheduler_attempts_tls_total{tls="yes"}"#) == nil)
        #expect(m.sample(#"tern_stream_pending{stream="results",group="scheduler"}"#) == 0)
        // Acknowledged at once, trimmed a moment later.
        let submitLength = #"tern_stream_length{stream="submit"}"#
        #expect(try await scrapeUntil(port: port, submitLength, is: 0).sample(submitLength) == 0)
        let steady = #"tern_throttle_state{ip="\#(ip)",provider="default:inbox.example","#
            + #"state="steady"}"#
        #expect(m.sample(steady) == 1)
        #expect(m.sample(#"tern_breaker_state{org="acme",state="closed"}"#) == 1)
        #expect((m.sample("process_resident_memory_bytes") ?? 0) > 0)
        #expect(m.body.contains("# TYPE tern_scheduler_attempts_total counter\n"))
        // Final states, counted in Redis with the state: one delivered, nothing else.
        #expect(m.sample(#"tern_messages_final_total{state="delivered"}"#) == 1)
        for state in ["bounced", "expired", "suppressed", "cancelled"] {
            #expect(m.sample("tern_messages_final_total{state=\"\(state)\"}") == 0)
        }
        #expect(try await h.redis.run("HGETALL", h.keys.finalCounts).fieldMap
                == ["delivered": "1"])
        await h.stop()
    }

    @Test func healthNamesAMissingConsumerGroup() async throws {
        let port = freePort()
        let h = try await Harness(env: ["TERN_METRICS_LISTEN": "127.0.0.1:\(port)"])
        _ = try await scrapeWhenUp(port: port, path: "/health")
        try await h.redis.run("XGROUP", "DESTROY", h.keys.stream(.results), "scheduler")
        let health = try await scrape(port: port, path: "/health")
        #expect(health.status == 503)
        #expect(health.body.contains(
            "consumer group scheduler of stream tern:stream:results is missing"))
        h.server.stop()
        let down = try await scrape(port: port, path: "/health")
        #expect(down.status == 503)
        #expect(down.body.contains("is not reachable"))
        await h.stop()
    }
}
