// Delivery statistics per sending IP, per provider and per IP and provider: delivered,
// deferred, bounced and complained counts in time buckets, with the reply texts that came
// most often. Rolling windows (15 minutes, an hour, a day) are sums of buckets:
// minute buckets for the short windows, hour buckets for the day, and UTC-day buckets for
// the warm-up's daily decision.
//
// A bucket is chosen by the time the stream entry was written (its id), not by when it is
// read, so a backlog read late still lands where it happened.
//
// The provider is the scheduler's profile name (`gmail`, `microsoft`, …) found from the
// recipient domain or the MX host, and `*` for every domain without a profile of its own,
// so statistics, warm-up caps and throttles speak of the same providers.

import Foundation
import TernCore
import TernMail

public enum StatsWindow: String, Sendable, CaseIterable {
    case quarterHour = "15m"
    case hour = "1h"
    case day = "1d"

    /// The bucket granularity and how many buckets, ending with the current one.
    var buckets: (granularity: Granularity, count: Int) {
        switch self {
        case .quarterHour: return (.minute, 15)
        case .hour: return (.minute, 60)
        case .day: return (.hour, 24)
        }
    }
}

enum Granularity: String, CaseIterable {
    case minute = "m", hour = "h", day = "d"

    var ms: Int64 {
        switch self {
        case .minute: return 60_000
        case .hour: return 3_600_000
        case .day: return 86_400_000
        }
    }

    /// Kept a little longer than the longest window that reads it.
    var ttlSeconds: Int {
        switch self {
        case .minute: return 2 * 3600
        case .hour: return 2 * 86_400
        case .day: return 3 * 86_400
        }
    }

    func bucket(_ ms: Int64) -> Int64 { ms - ms % self.ms }
}

/// What one stream entry adds to the statistics.
public struct StatsSample: Sendable, Equatable {
    public var atMs: Int64
    /// The source IP, "" when the kernel chose it.
    public var ip: String
    public var provider: String
    public var field: String
    /// The reply, shortened and with its variable parts masked; "" for none.
    public var reply: String

    public var scopes: [String] {
        var out = ["prov:" + provider]
        if !ip.isEmpty { out += ["ip:" + ip, "ipprov:" + ip + "|" + provider] }
        return out
    }

    /// The Redis commands that count this sample, for one transaction.
    public func commands(_ keys: Keys) -> [[RedisArg]] {
        var cmds: [[RedisArg]] = []
        for scope in scopes {
            for g in Granularity.allCases {
                let bucket = g.bucket(atMs)
                let ttl = RedisArg.text(String(g.ttlSeconds))
                let counts = keys.stats(g.rawValue, scope, bucket)
                cmds.append(["HINCRBY", .text(counts), .text(field), "1"])
                cmds.append(["EXPIRE", .text(counts), ttl])
                guard g != .day, !reply.isEmpty else { continue }
                let replies = keys.statsReplies(g.rawValue, scope, bucket)
                cmds.append(["ZINCRBY", .text(replies), "1", .text(reply)])
                cmds.append(["EXPIRE", .text(replies), ttl])
            }
        }
        if !ip.isEmpty {
            let day = Granularity.day.bucket(atMs)
            let seen = keys.statsProviders(ip, day)
            cmds.append(["SADD", .text(seen), .text(provider)])
            cmds.append(["EXPIRE", .text(seen), .text(String(Granularity.day.ttlSeconds))])
        }
        return cmds
    }

    /// "421 4.7.0 Try again in 300 seconds [abc123]" -> "421 4.7.0 try again in # seconds #":
    /// the first line, lowercased after the codes, tokens with digits masked, 120 characters.
    public static func replyText(code: Int, enhanced: String, reply: String) -> String {
        var line = reply.split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
        // A reply line may repeat its code, "550-" on all but the last line (RFC 5321 §4.2.1).
        if code > 0, line.hasPrefix("\(code)-") { line = String(line.dropFirst(4)) }
        var words = line.split(separator: " ").map(String.init)
        if words.first == String(code) { words.removeFirst() }
        if !enhanced.isEmpty, words.first == enhanced { words.removeFirst() }
        let masked = words.map { w in w.contains(where: \.isNumber) ? "#" : w.lowercased() }
        let head = [code > 0 ? String(code) : "", enhanced].filter { !$0.isEmpty }
        return String((head + masked).joined(separator: " ").prefix(120))
    }
}

extension ProviderCatalog {
    /// The provider statistics and warm-up caps count a recipient domain under: its profile
    /// by the domain's name, else by the MX host that answered, else `*`.
    public func statsName(domain: String, mx: String) -> String {
        let profile = provider(forDomain: domain) ?? provider(forMXHosts: mx.isEmpty ? [] : [mx])
        return profile.map(Self.warmupName) ?? "*"
    }
}

/// Counts and top replies of one scope over one window.
public struct WindowStats: Sendable, Equatable {
    public var counts = DayCounts()
    /// Most frequent reply texts first, with how often each came.
    public var topReplies: [(String, Int)] = []

    public static func == (a: WindowStats, b: WindowStats) -> Bool {
        a.counts == b.counts && a.topReplies.map(\.0) == b.topReplies.map(\.0)
            && a.topReplies.map(\.1) == b.topReplies.map(\.1)
    }
}

extension RedisClient {
    /// The window ending at `nowMs` for `scope` (`ip:<ip>`, `prov:<p>`, `ipprov:<ip>|<p>`).
    public func window(_ w: StatsWindow, scope: String, keys: Keys, nowMs: Int64,
                       top: Int = 5) async throws -> WindowStats {
        let (g, n) = w.buckets
        let last = g.bucket(nowMs)
        let buckets = (0..<Int64(n)).map { last - $0 * g.ms }
        var cmds: [[RedisArg]] = buckets.map {
            ["HGETALL", .text(keys.stats(g.rawValue, scope, $0))]
        }
        var union: [RedisArg] = ["ZUNION", .text(String(n))]
        union += buckets.map { .text(keys.statsReplies(g.rawValue, scope, $0)) }
        cmds.append(union + ["WITHSCORES"])
        let replies = try await pipeline(cmds)
        var out = WindowStats()
        for r in replies.dropLast() {
            let f = r.fieldMap
            out.counts.delivered += Int(f[StatsField.delivered] ?? "") ?? 0
            out.counts.deferred += Int(f[StatsField.deferred] ?? "") ?? 0
            out.counts.bounced += Int(f[StatsField.bounced] ?? "") ?? 0
            out.counts.complained += Int(f[StatsField.complained] ?? "") ?? 0
        }
        let flat = try replies.last!.get().array ?? []
        var pairs: [(String, Int)] = []
        var i = 0
        while i + 1 < flat.count {
            pairs.append((flat[i].string ?? "", Int(flat[i + 1].string ?? "") ?? 0))
            i += 2
        }
        out.topReplies = Array(pairs.sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }
            .prefix(top))
        return out
    }

    /// One UTC day's counts for a scope (the warm-up's input).
    public func dayCounts(scope: String, day: Int, keys: Keys) async throws -> DayCounts {
        let f = try await run("HGETALL",
                              keys.stats("d", scope, Int64(day) * 86_400_000)).fieldMap
        return DayCounts(delivered: Int(f[StatsField.delivered] ?? "") ?? 0,
                         deferred: Int(f[StatsField.deferred] ?? "") ?? 0,
                         bounced: Int(f[StatsField.bounced] ?? "") ?? 0,
                         complained: Int(f[StatsField.complained] ?? "") ?? 0)
    }
}
