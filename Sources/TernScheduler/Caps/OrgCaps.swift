// Per-organisation release caps: at most so many messages an hour and a UTC day, counted in
// the release script for the messages that actually go out.

import Foundation
import TernCore
import TernMail

public struct OrgCaps: Sendable, Equatable {
    public struct Cap: Sendable, Equatable {
        public var hourly = 0     // 0: no cap
        public var daily = 0
    }

    public let byOrg: [String: Cap]

    /// Parses `acme=1000/h,20000/d;globex=500/h` (TERN_ORG_CAPS); "" is no caps.
    public init(_ text: String, variable: String = "TERN_ORG_CAPS") throws {
        var caps: [String: Cap] = [:]
        for part in text.split(separator: ";") {
            let pair = part.split(separator: "=", maxSplits: 1)
                .map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2, !pair[0].isEmpty else {
                throw ConfigError(variable, "'\(part)' is not org=N/h,N/d")
            }
            var cap = Cap()
            for item in pair[1].split(separator: ",") {
                let fields = item.trimmingCharacters(in: .whitespaces).split(separator: "/")
                guard fields.count == 2, let n = Int(fields[0]), n > 0 else {
                    throw ConfigError(variable, "'\(item)' for \(pair[0]) is not N/h or N/d")
                }
                switch fields[1] {
                case "h": cap.hourly = n
                case "d": cap.daily = n
                default: throw ConfigError(variable, "'\(item)' for \(pair[0]): say /h or /d")
                }
            }
            caps[pair[0]] = cap
        }
        byOrg = caps
    }

    /// The caps hash's fields: org → "hourly,daily".
    var hashFields: [String] {
        byOrg.sorted { $0.key < $1.key }.flatMap {
            [$0.key, "\($0.value.hourly),\($0.value.daily)"]
        }
    }

    /// The release script's ARGV 10-14: the counters' prefix, this hour's and today's
    /// buckets, and the milliseconds to the next hour and the next UTC day.
    static func scriptArgs(prefix: String, nowMs: Int64) -> [RedisArg] {
        let hourMs: Int64 = 3_600_000, dayMs: Int64 = 86_400_000
        let day = UTCDay.text(ms: nowMs)
        let hour = String(String(100 + Int((nowMs % dayMs) / hourMs)).dropFirst())
        return [.text(prefix), .text(day + "T" + hour), .text(day),
                .text(String(hourMs - nowMs % hourMs)), .text(String(dayMs - nowMs % dayMs))]
    }
}

extension SchedulerDaemon {
    /// Writes TERN_ORG_CAPS where the release script reads it, replacing what a previous
    /// leader (perhaps with other settings) wrote.
    func publishOrgCaps() async throws {
        var cmds: [[RedisArg]] = [["DEL", .text(keys.orgCaps)]]
        let fields = settings.orgCaps.hashFields
        if !fields.isEmpty {
            cmds.append([.text("HSET"), .text(keys.orgCaps)] + fields.map { RedisArg.text($0) })
        }
        _ = try await redis.transaction(cmds)
    }
}
