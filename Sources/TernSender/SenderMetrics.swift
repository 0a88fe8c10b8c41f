// What a sender counts for /metrics: deliveries in flight and its DNS lookups; the outcome of
// each attempt is counted by the scheduler, which reads every result.

import TernCore
import TernDNS
import TernMail

struct SenderMetrics: Sendable {
    let registry = MetricsRegistry()
    let inFlight: Gauge
    let started: Counter
    let dns: DNSMetrics

    init(redis: RedisClient, keys: Keys) {
        inFlight = registry.gauge(
            "tern_sender_deliveries_in_flight",
            "Deliveries running now, each holding at most one SMTP session at a time.")
        started = registry.counter("tern_sender_deliveries_total",
                                   "Deliveries this sender started.")
        dns = DNSMetrics(registry: registry)
        registry.streamMetrics(redis: redis, streams: [Self.stream(keys)])
        ProcessMetrics.register(in: registry)
    }

    static func stream(_ keys: Keys) -> ConsumedStream {
        ConsumedStream(name: StreamName.ready.rawValue, key: keys.stream(.ready),
                       group: StreamName.ready.group)
    }
}
