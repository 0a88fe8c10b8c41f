// Counts and times every lookup a resolver makes, for /metrics of the daemons that resolve
// (sender, reputation).

import TernCore

public struct DNSMetrics: Sendable {
    let lookups: Counter
    let duration: Histogram

    public init(registry: MetricsRegistry) {
        lookups = registry.counter(
            "tern_dns_lookups_total",
            "DNS lookups by record type and result (ok, nodata, nxdomain, servfail, timeout, "
                + "error).",
            labels: ["type", "result"])
        duration = registry.histogram("tern_dns_lookup_duration_seconds",
                                      "Time from asking the forwarder to its answer.",
                                      labels: ["type"], buckets: Histogram.latencyBuckets)
    }

    func record(type: Int32, answer: UnboundAnswer, took: Duration) {
        let name = Self.typeName(type)
        lookups.inc(name, Self.result(answer))
        let c = took.components
        duration.observe(Double(c.seconds) + Double(c.attoseconds) / 1e18, name)
    }

    static func typeName(_ type: Int32) -> String {
        switch type {
        case DNSResolver.typeA: return "A"
        case DNSResolver.typeAAAA: return "AAAA"
        case DNSResolver.typeMX: return "MX"
        case DNSResolver.typePTR: return "PTR"
        default: return String(type)
        }
    }

    static func result(_ a: UnboundAnswer) -> String {
        if let error = a.error { return error.hasPrefix("timed out") ? "timeout" : "error" }
        if a.rcode == 3 || a.nxDomain { return "nxdomain" }
        switch a.rcode {
        case 0: return a.records.isEmpty ? "nodata" : "ok"
        case 2: return "servfail"
        default: return "error"
        }
    }
}
