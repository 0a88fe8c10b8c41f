// Reading settings from TERN_* environment variables (a systemd EnvironmentFile in production).
//
// Each daemon declares its settings in one struct with the name, default and one line of doc
// beside each; this reader turns a bad value into a fatal configuration error that names the
// variable, so a daemon never starts half-configured.

import Foundation

public struct ConfigError: Error, CustomStringConvertible {
    public let variable: String
    public let problem: String

    public init(_ variable: String, _ problem: String) {
        self.variable = variable
        self.problem = problem
    }

    public var description: String { "\(variable): \(problem)" }
}

public struct Environment: Sendable {
    public let values: [String: String]

    public init(_ values: [String: String] = ProcessInfo.processInfo.environment) {
        self.values = values
    }

    public func string(_ name: String, default value: String) -> String {
        values[name].flatMap { $0.isEmpty ? nil : $0 } ?? value
    }

    public func int(_ name: String, default value: Int, range: ClosedRange<Int>) throws -> Int {
        guard let raw = values[name], !raw.isEmpty else { return value }
        guard let n = Int(raw), range.contains(n) else {
            throw ConfigError(name, "'\(raw)' is not a whole number in \(range)")
        }
        return n
    }

    public func duration(_ name: String, default value: Duration) throws -> Duration {
        guard let raw = values[name], !raw.isEmpty else { return value }
        guard let d = parseDuration(raw) else {
            throw ConfigError(name, "'\(raw)' is not a duration like 500ms, 30s, 5m, 4h or 3d")
        }
        return d
    }

    public func durations(_ name: String, default value: [Duration]) throws -> [Duration] {
        guard let raw = values[name], !raw.isEmpty else { return value }
        var out: [Duration] = []
        for part in raw.split(separator: ",") {
            guard let d = parseDuration(part.trimmingCharacters(in: .whitespaces)) else {
                throw ConfigError(name,
                                  "'\(part)' is not a duration like 500ms, 30s, 5m, 4h or 3d")
            }
            out.append(d)
        }
        return out
    }

    public func address(_ name: String, default value: String) throws -> SocketAddress {
        let raw = string(name, default: value)
        guard let a = SocketAddress(raw) else {
            throw ConfigError(name, "'\(raw)' is not an address like 127.0.0.1:8025 or [::1]:8025")
        }
        return a
    }

    public func logLevel(_ name: String = "TERN_LOG_LEVEL") throws -> LogLevel {
        let raw = string(name, default: "info")
        guard let l = LogLevel(name: raw) else {
            throw ConfigError(name, "'\(raw)' is not one of trace, debug, info, notice, warning, "
                + "error, critical")
        }
        return l
    }
}

/// "250ms", "30s", "5m", "4h", "3d"; a bare number is seconds.
public func parseDuration(_ text: String) -> Duration? {
    let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000),
                                    ("d", 86_400_000)]
    for (suffix, ms) in units where text.hasSuffix(suffix) {
        let number = text.dropLast(suffix.count)
        // "ms" must not be read as minutes of "…m" + "s": try the longest suffix first.
        guard let n = Int64(number), n >= 0 else { continue }
        return .milliseconds(n * ms)
    }
    if let n = Int64(text), n >= 0 { return .seconds(n) }
    return nil
}

extension Duration {
    /// Whole milliseconds, for Redis scores and stream fields.
    public var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}

/// Wall-clock milliseconds since the epoch: the unit of every time stored in Redis.
public func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
