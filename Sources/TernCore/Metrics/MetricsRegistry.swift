// The set of metrics one daemon exposes, and the collectors that refresh values kept
// elsewhere (Redis, /proc) just before a scrape renders them.

import Synchronization

public final class MetricsRegistry: Sendable {
    /// Refreshes some gauges from their source; runs at each scrape, bounded by its own
    /// timeout, and leaves the previous values when the source does not answer.
    public typealias Collector = @Sendable () async -> Void

    private struct State {
        var metrics: [Metric] = []
        var collectors: [Collector] = []
    }
    private let state = Mutex(State())

    public init() {}

    /// Adds `metric` and returns it; a second metric of the same name is a bug.
    @discardableResult
    public func register<M: Metric>(_ metric: M) -> M {
        state.withLock { s in
            precondition(!s.metrics.contains { $0.name == metric.name },
                         "metric \(metric.name) registered twice")
            s.metrics.append(metric)
        }
        return metric
    }

    public func counter(_ name: String, _ help: String, labels: [String] = []) -> Counter {
        register(Counter(name, help: help, labels: labels))
    }

    public func gauge(_ name: String, _ help: String, labels: [String] = []) -> Gauge {
        register(Gauge(name, help: help, labels: labels))
    }

    public func histogram(_ name: String, _ help: String, labels: [String] = [],
                          buckets: [Double]) -> Histogram {
        register(Histogram(name, help: help, labels: labels, buckets: buckets))
    }

    public func addCollector(_ collector: @escaping Collector) {
        state.withLock { $0.collectors.append(collector) }
    }

    /// Runs the collectors (concurrently), then renders every metric in registration order.
    public func scrape() async -> String {
        let collectors = state.withLock { $0.collectors }
        await withDiscardingTaskGroup { group in
            for c in collectors { group.addTask { await c() } }
        }
        return render()
    }

    /// The exposition text of the current values, without running collectors.
    public func render() -> String {
        var out = ""
        for metric in state.withLock({ $0.metrics }) { metric.render(into: &out) }
        return out
    }
}
