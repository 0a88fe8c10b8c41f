// What the API counts of its webhooks for /metrics: posts by endpoint and outcome, how long
// each took, and, read from Redis at scrape time, each endpoint's backlog and kept failures.

import TernCore

struct WebhookMetrics: Sendable {
    let deliveries: Counter
    let latency: Histogram

    init(registry: MetricsRegistry, store: WebhookStore, endpoints: [String]) {
        deliveries = registry.counter(
            "tern_webhook_deliveries_total",
            "Webhook posts by endpoint and outcome: delivered, failed (will be retried), "
                + "given_up.",
            labels: ["endpoint", "outcome"])
        latency = registry.histogram(
            "tern_webhook_delivery_duration_seconds",
            "Time from the start of a post (connecting, unless a kept connection serves it) "
                + "to the endpoint's answer (or the failure), by endpoint.",
            labels: ["endpoint"], buckets: Histogram.latencyBuckets)
        let backlog = registry.gauge(
            "tern_webhook_backlog", "Events waiting to be posted to the endpoint, in Redis.",
            labels: ["endpoint"])
        let failed = registry.gauge(
            "tern_webhook_failed", "Given-up deliveries kept for a retry, by endpoint.",
            labels: ["endpoint"])
        registry.addCollector {
            guard let status = try? await store.status(endpoints, within: .seconds(1)) else {
                return
            }
            for (name, s) in status {
                backlog.set(Double(s.pending), name)
                failed.set(Double(s.failedKept), name)
            }
        }
    }
}
