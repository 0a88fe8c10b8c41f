// What the bounce receiver counts for /metrics: open SMTP sessions, messages by what became
// of them, and the `bounce.*` fields of the Redis `counters` hash (which every receiver adds
// to, so they survive restarts and sum over receivers).

import TernCore
import TernMail

struct BounceMetrics: Sendable {
    let registry = MetricsRegistry()
    let sessions: Gauge
    let reports: Counter

    init(redis: RedisClient, keys: Keys) {
        sessions = registry.gauge("tern_bounce_sessions_active", "SMTP sessions open now.")
        reports = registry.counter(
            "tern_bounce_reports_total",
            "Messages and recipients this receiver handled, by kind: bounce (a failed "
                + "recipient recorded), forged, refused, unparsed, nonfatal.",
            labels: ["kind"])
        registry.redisCounters(redis: redis, key: keys.counters, prefixes: ["bounce."])
        registry.streamMetrics(redis: redis, streams: [Self.stream(keys)])
        ProcessMetrics.register(in: registry)
    }

    /// The receiver writes `inbound`; its length and the scheduler's pending entries there
    /// show whether bounces are being taken up.
    static func stream(_ keys: Keys) -> ConsumedStream {
        ConsumedStream(name: StreamName.inbound.rawValue, key: keys.stream(.inbound),
                       group: StreamName.inbound.group)
    }
}
