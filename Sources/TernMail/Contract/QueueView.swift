// The queues, providers and pools as operators see them, read from the keys the scheduler
// and the reputation monitor keep. The API's state endpoints and `ternctl queues`/`pools`
// print the same documents (JSON objects with snake_case keys), so both say the same thing.
//
// Read-only, and not one atomic snapshot: numbers read a moment apart may disagree by the
// messages released in between.

import Foundation
import TernCore

public struct QueueView: Sendable {
    public let redis: RedisClient
    public let keys: Keys
    public let providers: ProviderCatalog
    public let pools: Pools

    /// Groups listed at most, earliest due first.
    public static let groupLimit = 1000

    public init(redis: RedisClient, keys: Keys, providers: ProviderCatalog, pools: Pools) {
        self.redis = redis
        self.keys = keys
        self.providers = providers
        self.pools = pools
    }

    /// Every group with waiting messages (from the due index, earliest first, at most
    /// `groupLimit`): its pool, domain, provider, messages queued and due now, when it may
    /// next send, the senders' connections from its pool to its provider (shared by the
    /// pool's groups of that provider; nil for the `default` provider) and the pauses that
    /// stop it.
    /// Returns the groups and whether the list was cut.
    public func groups(nowMs: Int64 = nowMs()) async throws -> ([[String: Any]], Bool) {
        let due = try await redis.run("ZRANGE", keys.dueGroups, "0", String(Self.groupLimit),
                                      "WITHSCORES").array ?? []
        var names: [(String, Int64)] = []
        var i = 0
        while i + 1 < due.count {
            if let name = due[i].string {
                names.append((name, Int64(Double(due[i + 1].string ?? "") ?? 0)))
            }
            i += 2
        }
        let truncated = names.count > Self.groupLimit
        names = Array(names.prefix(Self.groupLimit))
        var cmds: [[RedisArg]] = [["HGETALL", .text(keys.pauses)]]
        for (name, _) in names {
            // Due messages the release script has ranked by engagement count as queued
            // and due now, beside the queue's own.
            cmds.append(["ZCARD", .text(keys.groupQueue(name))])
            cmds.append(["ZCOUNT", .text(keys.groupQueue(name)), "-inf", .text(String(nowMs))])
            cmds.append(["ZCARD", .text(keys.groupDue(name))])
        }
        let domains = names.map { domain(ofGroup: $0.0) }
        if !domains.isEmpty {
            cmds.append(["HMGET", .text(keys.domainProviders)] + domains.map { .text($0) })
        }
        let replies = try await redis.pipeline(cmds).map { try $0.get() }
        let paused = Set(replies[0].fieldMap.keys)
        let learned = domains.isEmpty ? [] : replies.last?.array ?? []
        let providerOf = names.indices.map {
            providerName(domains[$0], learned: $0 < learned.count ? learned[$0].string : nil)
        }
        let connections = try await connectionCounts(
            names.indices.map { (pool(ofGroup: names[$0].0), providerOf[$0]) }, nowMs: nowMs)
        var out: [[String: Any]] = []
        for (n, (name, score)) in names.enumerated() {
            let pool = pool(ofGroup: name)
            let provider = providerOf[n]
            let pauses = [Pause.field(.group, name), Pause.field(.pool, pool),
                          Pause.field(.provider, provider)].filter(paused.contains)
            out.append([
                "group": name, "pool": pool, "domain": domains[n], "provider": provider,
                "queued": (replies[1 + 3 * n].int ?? 0) + (replies[3 + 3 * n].int ?? 0),
                "due_now": (replies[2 + 3 * n].int ?? 0) + (replies[3 + 3 * n].int ?? 0),
                "next_due": timestamp(ms: score),
                "connections": connections[n].map { $0 as Any } ?? NSNull(),
                "paused": pauses,
            ])
        }
        return (out, truncated)
    }

    private func pool(ofGroup group: String) -> String {
        String(group.prefix(while: { $0 != ":" }))
    }

    /// Open connections from each pool's source IPs to each provider: senders hold a lease
    /// per connection on `{ip}|{provider}` ("*" for the kernel's choice of address, as for a
    /// pool without IPs). Nil for the `default` provider, whose leases are counted per MX
    /// host, which the queues do not know.
    private func connectionCounts(_ groups: [(pool: String, provider: String)],
                                  nowMs: Int64) async throws -> [Int?] {
        var cmds: [[RedisArg]] = []
        var spans: [Range<Int>?] = []
        for (pool, provider) in groups {
            guard provider != "default" else {
                spans.append(nil)
                continue
            }
            let addresses = (pools.byName[pool] ?? []).map(\.address).filter { !$0.isEmpty }
            let start = cmds.count
            for ip in addresses.isEmpty ? ["*"] : addresses {
                cmds.append(["ZCOUNT", .text(keys.groupLeases(ip + "|" + provider)),
                             .text(String(nowMs)), "+inf"])
            }
            spans.append(start..<cmds.count)
        }
        let counts = cmds.isEmpty ? [] : try await redis.pipeline(cmds).map { try $0.get().int ?? 0 }
        return spans.map { span in span.map { counts[$0].reduce(0, +) } }
    }

    /// Every provider profile, with its queues (from `groups`), each IP's adaptive rate
    /// towards it (state, rate, the reason for the last change) and whether it is paused.
    public func providerStates(nowMs: Int64 = nowMs()) async throws -> [[String: Any]] {
        let (groups, _) = try await self.groups(nowMs: nowMs)
        let replies = try await redis.pipeline([["HGETALL", .text(keys.throttles)],
                                                ["HGETALL", .text(keys.pauses)]])
        let saved = try replies[0].get().fieldMap
        let paused = try replies[1].get().fieldMap
        var byName: [String: [String: Any]] = [:]
        for p in providers.profiles {
            byName[p.name] = ["provider": p.name, "messages_per_minute": p.messagesPerMinute,
                              "queued": 0, "due_now": 0, "groups": 0, "throttles": [Any](),
                              "paused": paused[Pause.field(.provider, p.name)] != nil]
        }
        for g in groups {
            guard let name = g["provider"] as? String, var entry = byName[name] else { continue }
            entry["queued"] = (entry["queued"] as? Int ?? 0) + (g["queued"] as? Int ?? 0)
            entry["due_now"] = (entry["due_now"] as? Int ?? 0) + (g["due_now"] as? Int ?? 0)
            entry["groups"] = (entry["groups"] as? Int ?? 0) + 1
            byName[name] = entry
        }
        for (key, json) in saved.sorted(by: { $0.key < $1.key }) {
            let at = key.lastIndex(of: "|") ?? key.endIndex
            let ip = String(key[..<at])
            let scope = at < key.endIndex ? String(key[key.index(after: at)...]) : ""
            // A domain of no profile keeps its own rate (`default:<domain>`).
            let name = scope.hasPrefix("default:") ? "default" : scope
            guard var entry = byName[name],
                  let object = (try? JSONReading.value(json)) as? [String: Any]
            else { continue }
            var rate: [String: Any] = ["ip": ip, "scope": scope,
                                       "state": object["state"] ?? "steady",
                                       "rate": object["rate"] ?? 0,
                                       "reason": object["reason"] ?? ""]
            if let ms = (object["changedMs"] as? NSNumber)?.int64Value, ms > 0 {
                rate["changed"] = timestamp(ms: ms)
            }
            if let ms = (object["holdUntilMs"] as? NSNumber)?.int64Value, ms > nowMs {
                rate["hold_until"] = timestamp(ms: ms)
            }
            entry["throttles"] = (entry["throttles"] as? [Any] ?? []) + [rate]
            byName[name] = entry
        }
        return byName.keys.sorted().compactMap { byName[$0] }
    }

    /// Every pool of TERN_POOLS: its IPs (configured, active now, each IP's standing and
    /// warm-up state), its queues and whether it is paused.
    public func poolStates(nowMs: Int64 = nowMs()) async throws -> [[String: Any]] {
        let (groups, _) = try await self.groups(nowMs: nowMs)
        let names = pools.byName.keys.sorted()
        var cmds: [[RedisArg]] = [["HGETALL", .text(keys.pauses)]]
        cmds.append(["MGET"] + names.map { .text(keys.poolActive($0)) })
        let ips = Array(Set(pools.byName.values.flatMap { $0.map(\.address) })
            .filter { !$0.isEmpty }).sorted()
        let today = UTCDay.text(ms: nowMs)
        for ip in ips {
            cmds.append(["HMGET", .text(keys.ipState(ip)), .text(IPField.status),
                         .text(IPField.reason)])
            cmds.append(["HGET", .text(keys.warmupPlan(ip)), .text(WarmupPlanField.state)])
            cmds.append(["EXISTS", .text(keys.warmupCaps(ip, day: today))])
        }
        let replies = try await redis.pipeline(cmds).map { try $0.get() }
        let paused = replies[0].fieldMap
        let published = replies[1].array ?? []
        var standing: [String: [String: Any]] = [:]
        for (n, ip) in ips.enumerated() {
            let state = replies[2 + 3 * n].array ?? []
            let plan = replies[3 + 3 * n].string
            let capped = replies[4 + 3 * n].int == 1
            standing[ip] = [
                "ip": ip, "status": state.first?.string ?? "unchecked",
                "reason": state.count > 1 ? state[1].string ?? "" : "",
                // On a plan (started by an operator) or capped today (TERN_WARMUP).
                "warmup": plan ?? (capped ? "active" : "none"),
            ]
        }
        var out: [[String: Any]] = []
        for (n, name) in names.enumerated() {
            let configured = pools.byName[name] ?? []
            let value = n < published.count ? published[n].string : nil
            let active = Set(ActiveIPs.usable(configured, published: value).map(\.address))
            let mine = groups.filter { $0["pool"] as? String == name }
            out.append([
                "pool": name,
                "ips": configured.map { ip -> [String: Any] in
                    var entry = standing[ip.address]
                        ?? ["ip": "*", "status": "active", "reason": "", "warmup": "none"]
                    entry["helo"] = ip.helo
                    entry["active"] = active.contains(ip.address)
                    return entry
                },
                "active": active.count, "listed": configured.filter {
                    (standing[$0.address]?["status"] as? String) == "listed"
                }.count,
                "queued": mine.reduce(0) { $0 + ($1["queued"] as? Int ?? 0) },
                "groups": mine.count, "paused": paused[Pause.field(.pool, name)] != nil,
            ])
        }
        return out
    }

    func domain(ofGroup name: String) -> String {
        guard let colon = name.firstIndex(of: ":") else { return name }
        return String(name[name.index(after: colon)...])
    }

    /// The provider profile name of a recipient domain, as the scheduler finds it: by its
    /// name, else as learned from its MX hosts, else `default`.
    func providerName(_ domain: String, learned: String?) -> String {
        if let known = providers.provider(forDomain: domain) { return known.name }
        if let learned, providers.profile(named: learned) != nil { return learned }
        return providers.fallback.name
    }
}
