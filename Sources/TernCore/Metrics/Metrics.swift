// Counters, gauges and histograms with labels, kept in memory and rendered in the Prometheus
// text exposition format, version 0.0.4.
//
// A daemon registers its metrics once at start and updates them from any task; each metric
// holds its series behind its own lock, so an update costs one short critical section and a
// scrape never stops the work. Values that live elsewhere (stream lengths in Redis, the
// scheduler's throttles) are set by collectors that run at scrape time.

import Synchronization

/// The three kinds of metric Tern exposes (the format's `# TYPE`).
public enum MetricKind: String, Sendable {
    case counter, gauge, histogram
}

/// One metric: a name, its help, its label names and a series per set of label values.
public class Metric: @unchecked Sendable {
    public let name: String
    public let help: String
    public let kind: MetricKind
    public let labelNames: [String]

    init(name: String, help: String, kind: MetricKind, labelNames: [String]) {
        precondition(Metric.isValidName(name), "metric name \(name) is not valid")
        precondition(labelNames.allSatisfy { Metric.isValidName($0) && !$0.hasPrefix("__") },
                     "label names of \(name) are not valid")
        self.name = name
        self.help = help
        self.kind = kind
        self.labelNames = labelNames
    }

    /// The sample lines, without HELP and TYPE.
    func samples() -> [String] { [] }

    func render(into out: inout String) {
        out += "# HELP \(name) \(Metric.escapeHelp(help))\n"
        out += "# TYPE \(name) \(kind.rawValue)\n"
        for line in samples() { out += line + "\n" }
    }

    func checkArity(_ values: [String]) {
        precondition(values.count == labelNames.count,
                     "\(name) takes labels \(labelNames), got \(values.count) value(s)")
    }

    /// `name{a="x",b="y"}`, or the bare name without labels.
    static func series(_ name: String, _ names: [String], _ values: [String]) -> String {
        guard !names.isEmpty else { return name }
        let pairs = zip(names, values).map { "\($0)=\"\(escapeLabel($1))\"" }
        return name + "{" + pairs.joined(separator: ",") + "}"
    }

    /// Metric and label names: [a-zA-Z_:][a-zA-Z0-9_:]* (labels without ':').
    static func isValidName(_ s: String) -> Bool {
        guard let first = s.utf8.first, !(48...57).contains(first) else { return false }
        return s.utf8.allSatisfy { c in
            (65...90).contains(c) || (97...122).contains(c) || (48...57).contains(c)
                || c == 95 || c == 58
        }
    }

    /// Label values escape backslash, double quote and line feed.
    static func escapeLabel(_ s: String) -> String {
        var out = ""
        for ch in s.unicodeScalars {
            switch ch {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }

    /// HELP text escapes backslash and line feed only.
    static func escapeHelp(_ s: String) -> String {
        s.replacingBackslashes().split(separator: "\n", omittingEmptySubsequences: false)
            .joined(separator: "\\n")
    }

    /// Whole numbers without a fraction, the rest as Swift prints them; +Inf, -Inf, NaN.
    public static func format(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return String(v)
    }
}

extension String {
    fileprivate func replacingBackslashes() -> String {
        var out = ""
        for ch in unicodeScalars {
            if ch == "\\" { out += "\\\\" } else { out.unicodeScalars.append(ch) }
        }
        return out
    }
}

/// Series values keyed by their label values, rendered in sorted order so scrapes are stable.
struct SeriesTable<Value: Sendable>: Sendable {
    var values: [[String]: Value] = [:]

    var sorted: [([String], Value)] {
        values.sorted { $0.key.lexicographicallyPrecedes($1.key) }.map { ($0.key, $0.value) }
    }
}

/// A value that only goes up; its name ends in `_total`.
public final class Counter: Metric, @unchecked Sendable {
    private let table = Mutex(SeriesTable<Double>())

    public init(_ name: String, help: String, labels: [String] = []) {
        precondition(name.hasSuffix("_total"), "counter \(name) must end in _total")
        super.init(name: name, help: help, kind: .counter, labelNames: labels)
        // A counter without labels exists from the start, at 0.
        if labels.isEmpty { table.withLock { $0.values[[]] = 0 } }
    }

    public func inc(_ labels: String..., by amount: Double = 1) {
        inc(labels: labels, by: amount)
    }

    public func inc(labels: [String], by amount: Double = 1) {
        checkArity(labels)
        precondition(amount >= 0, "\(name) can only go up")
        table.withLock { $0.values[labels, default: 0] += amount }
    }

    /// Sets the value read from elsewhere (a Redis counter), for collectors.
    public func set(labels: [String], to value: Double) {
        checkArity(labels)
        table.withLock { $0.values[labels] = value }
    }

    public func value(_ labels: String...) -> Double {
        table.withLock { $0.values[labels] ?? 0 }
    }

    override func samples() -> [String] {
        table.withLock { $0.sorted }.map {
            Metric.series(name, labelNames, $0.0) + " " + Metric.format($0.1)
        }
    }
}

/// A value that goes up and down.
public final class Gauge: Metric, @unchecked Sendable {
    private let table = Mutex(SeriesTable<Double>())

    public init(_ name: String, help: String, labels: [String] = []) {
        super.init(name: name, help: help, kind: .gauge, labelNames: labels)
        if labels.isEmpty { table.withLock { $0.values[[]] = 0 } }
    }

    public func set(_ value: Double, _ labels: String...) { set(value, labels: labels) }

    public func set(_ value: Double, labels: [String]) {
        checkArity(labels)
        table.withLock { $0.values[labels] = value }
    }

    public func add(_ amount: Double, _ labels: String...) {
        checkArity(labels)
        table.withLock { $0.values[labels, default: 0] += amount }
    }

    /// Replaces every series at once, so series that no longer exist (an IP that left its
    /// pool) disappear instead of keeping their last value.
    public func replaceAll(_ values: [[String]: Double]) {
        for key in values.keys { checkArity(key) }
        table.withLock { $0.values = values }
    }

    public func value(_ labels: String...) -> Double {
        table.withLock { $0.values[labels] ?? 0 }
    }

    override func samples() -> [String] {
        table.withLock { $0.sorted }.map {
            Metric.series(name, labelNames, $0.0) + " " + Metric.format($0.1)
        }
    }
}

/// Observations counted into fixed buckets (cumulative on output), with their sum and count.
public final class Histogram: Metric, @unchecked Sendable {
    public let buckets: [Double]
    private struct Series: Sendable {
        var counts: [UInt64]
        var sum: Double = 0
        var count: UInt64 = 0
    }
    private let table = Mutex(SeriesTable<Series>())

    /// Upper bounds for durations of network round trips, in seconds.
    public static let latencyBuckets: [Double] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                  0.5, 1, 2.5, 5, 10, 30]

    public init(_ name: String, help: String, labels: [String] = [], buckets: [Double]) {
        precondition(!buckets.isEmpty && zip(buckets, buckets.dropFirst()).allSatisfy(<),
                     "buckets of \(name) must increase")
        precondition(!labels.contains("le"), "le is the bucket label of \(name)")
        self.buckets = buckets
        super.init(name: name, help: help, kind: .histogram, labelNames: labels)
    }

    public func observe(_ value: Double, _ labels: String...) {
        observe(value, labels: labels)
    }

    public func observe(_ value: Double, labels: [String]) {
        checkArity(labels)
        let slot = buckets.firstIndex { value <= $0 } ?? buckets.count
        let width = buckets.count + 1
        table.withLock { t in
            var s = t.values[labels] ?? Series(counts: Array(repeating: 0, count: width))
            s.counts[slot] += 1
            s.sum += value
            s.count += 1
            t.values[labels] = s
        }
    }

    public func count(_ labels: String...) -> UInt64 {
        table.withLock { $0.values[labels]?.count ?? 0 }
    }

    override func samples() -> [String] {
        var lines: [String] = []
        let names = labelNames + ["le"]
        for (labels, s) in table.withLock({ $0.sorted }) {
            var running: UInt64 = 0
            for (i, bound) in (buckets + [Double.infinity]).enumerated() {
                running += s.counts[i]
                lines.append(Metric.series(name + "_bucket", names,
                                           labels + [Metric.format(bound)]) + " \(running)")
            }
            lines.append(Metric.series(name + "_sum", labelNames, labels) + " "
                + Metric.format(s.sum))
            lines.append(Metric.series(name + "_count", labelNames, labels) + " \(s.count)")
        }
        return lines
    }
}
