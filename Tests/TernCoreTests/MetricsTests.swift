// The Prometheus text format 0.0.4 as the metrics layer renders it: exact text for known
// values, escaping, cumulative buckets, and the process collector reading /proc.

import Testing
@testable import TernCore

@Suite struct MetricsTests {
    @Test func counterGaugeAndHistogramRenderExactly() {
        let registry = MetricsRegistry()
        let accepted = registry.counter("tern_api_messages_accepted_total", "Messages accepted.")
        let attempts = registry.counter("tern_attempts_total", "Attempts.",
                                        labels: ["outcome", "provider"])
        let inFlight = registry.gauge("tern_deliveries_in_flight", "Deliveries now.")
        let latency = registry.histogram("tern_dns_lookup_duration_seconds", "Lookups.",
                                         labels: ["type"], buckets: [0.01, 0.1, 1])
        accepted.inc()
        accepted.inc(by: 2)
        attempts.inc("delivered", "gmail")
        attempts.inc("deferred", "gmail")
        attempts.inc("delivered", "gmail")
        inFlight.set(2.5)
        latency.observe(0.0078125, "mx")
        latency.observe(0.5, "mx")
        latency.observe(3, "mx")
        #expect(registry.render() == """
            # HELP tern_api_messages_accepted_total Messages accepted.
            # TYPE tern_api_messages_accepted_total counter
            tern_api_messages_accepted_total 3
            # HELP tern_attempts_total Attempts.
            # TYPE tern_attempts_total counter
            tern_attempts_total{outcome="deferred",provider="gmail"} 1
            tern_attempts_total{outcome="delivered",provider="gmail"} 2
            # HELP tern_deliveries_in_flight Deliveries now.
            # TYPE tern_deliveries_in_flight gauge
            tern_deliveries_in_flight 2.5
            # HELP tern_dns_lookup_duration_seconds Lookups.
            # TYPE tern_dns_lookup_duration_seconds histogram
            tern_dns_lookup_duration_seconds_bucket{type="mx",le="0.01"} 1
            tern_dns_lookup_duration_seconds_bucket{type="mx",le="0.1"} 1
            tern_dns_lookup_duration_seconds_bucket{type="mx",le="1"} 2
            tern_dns_lookup_duration_seconds_bucket{type="mx",le="+Inf"} 3
            tern_dns_lookup_duration_seconds_sum{type="mx"} 3.5078125
            tern_dns_lookup_duration_seconds_count{type="mx"} 3

            """)
    }

    @Test func labelValuesAndHelpAreEscaped() {
        let registry = MetricsRegistry()
        let g = registry.gauge("tern_reply", "Line one\nback\\slash \"quoted\".",
                               labels: ["text"])
        g.set(1, "say \"hi\"\\now\nnext")
        #expect(registry.render() == """
            # HELP tern_reply Line one\\nback\\\\slash "quoted".
            # TYPE tern_reply gauge
            tern_reply{text="say \\"hi\\"\\\\now\\nnext"} 1

            """)
    }

    @Test func labelledMetricWithoutSeriesHasOnlyItsHeader() {
        let registry = MetricsRegistry()
        _ = registry.counter("tern_refused_total", "Refused.", labels: ["reason"])
        #expect(registry.render() == """
            # HELP tern_refused_total Refused.
            # TYPE tern_refused_total counter

            """)
    }

    @Test func replaceAllDropsSeriesThatAreGone() {
        let g = Gauge("tern_ip_listed", help: "Listed.", labels: ["ip"])
        g.set(1, "192.0.2.1")
        g.replaceAll([["192.0.2.2"]: 0])
        #expect(g.value("192.0.2.1") == 0)
        var out = ""
        g.render(into: &out)
        #expect(out.hasSuffix("tern_ip_listed{ip=\"192.0.2.2\"} 0\n"))
    }

    @Test(arguments: [(0.0, "0"), (1.0, "1"), (-3.0, "-3"), (0.25, "0.25"), (1e20, "1e+20"),
                      (Double.infinity, "+Inf"), (-Double.infinity, "-Inf"), (Double.nan, "NaN")])
    func numbersFormat(value: Double, text: String) {
        #expect(Metric.format(value) == text)
    }

    @Test func namesAreChecked() {
        #expect(Metric.isValidName("tern_stream_length"))
        #expect(Metric.isValidName("a:b"))
        #expect(!Metric.isValidName("9lives"))
        #expect(!Metric.isValidName("tern-api"))
        #expect(!Metric.isValidName(""))
    }

    @Test func processCollectorReadsProc() async {
        let registry = MetricsRegistry()
        ProcessMetrics.register(in: registry)
        let text = await registry.scrape()
        let rss = text.split(separator: "\n").first {
            $0.hasPrefix("process_resident_memory_bytes ")
        }
        let bytes = rss.flatMap { Double($0.split(separator: " ")[1]) } ?? 0
        // A Swift test process holds at least a megabyte resident.
        #expect(bytes > 1_000_000)
        #expect(text.contains("# TYPE process_cpu_seconds_total counter\n"))
    }

    @Test func statFieldsSkipACommandWithSpacesAndParentheses() {
        let line = "42 (a b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21"
        let fields = ProcessMetrics.statFields(line)
        #expect(fields?.first == "S")
        #expect(fields?[14 - 3] == "11")
    }

    @Test func metricsListenDefaultsOffAndSenderInstances() throws {
        let none = Environment([:])
        #expect(try MetricsListen.parse(none, default: "127.0.0.1:9101")?.description
            == "127.0.0.1:9101")
        let off = Environment(["TERN_METRICS_LISTEN": "off"])
        #expect(try MetricsListen.parse(off, default: "127.0.0.1:9101") == nil)
        #expect(MetricsListen.senderDefault(Environment(["TERN_INSTANCE": "3"]))
            == "127.0.0.1:9113")
        #expect(MetricsListen.senderDefault(Environment(["TERN_INSTANCE": "eu"]))
            == "127.0.0.1:9102")
        #expect(throws: ConfigError.self) {
            try MetricsListen.parse(Environment(["TERN_METRICS_LISTEN": "9101"]),
                                    default: "127.0.0.1:9101")
        }
    }
}
