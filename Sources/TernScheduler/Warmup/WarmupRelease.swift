// The release path's side of warm-up: which of a pool's IPs have room under their caps for
// a group's provider, and what the group does when none has.

import Foundation
import TernCore
import TernMail

extension SchedulerDaemon {
    /// Today's warm-up caps and counts of every active IP with an address, read once per
    /// release pass. Before the monitor has published today's caps (just after midnight UTC)
    /// yesterday's still apply; an IP with neither is not in warm-up.
    func warmupCaps(_ active: [String: [SourceIP]], nowMs: Int64) async throws
        -> [String: WarmupCaps]
    {
        let ips = Set(active.values.joined().map(\.address)).subtracting([""]).sorted()
        guard !ips.isEmpty else { return [:] }
        let today = WarmupDay.text(ms: nowMs)
        let yesterday = WarmupDay.text(ms: nowMs - 86_400_000)
        var cmds: [[RedisArg]] = []
        for ip in ips {
            cmds.append(["HGETALL", .text(keys.warmupCaps(ip, day: today))])
            cmds.append(["HGETALL", .text(keys.warmupCaps(ip, day: yesterday))])
            cmds.append(["HGETALL", .text(keys.warmupSent(ip, day: today))])
        }
        let replies = try await redis.pipeline(cmds)
        var out: [String: WarmupCaps] = [:]
        for (i, ip) in ips.enumerated() {
            var published = try replies[3 * i].get().fieldMap
            if published.isEmpty { published = try replies[3 * i + 1].get().fieldMap }
            guard !published.isEmpty else { continue }
            let sent = try replies[3 * i + 2].get().fieldMap.compactMapValues { Int($0) }
            out[ip] = WarmupCaps(caps: published.mapValues { Int($0) }, sent: sent)
        }
        return out
    }

    /// What a group may do about warm-up: send from any of `allowed` (nil: no IP of the pool
    /// is capped for this provider), or wait until a time, saying why.
    enum WarmupChoice {
        case send(allowed: Set<String>?, rooms: [String: WarmupRoom])
        case wait(untilMs: Int64, reason: String)
    }

    func warmupChoice(_ ips: [SourceIP], pool: String, provider: ProviderProfile,
                      caps: [String: WarmupCaps], nowMs: Int64) -> WarmupChoice {
        let name = ProviderCatalog.warmupName(provider)
        var rooms: [String: WarmupRoom] = [:]
        for ip in ips {
            rooms[ip.address] = caps[ip.address]?.room(provider: name,
                                                       pacing: settings.warmupPacing,
                                                       nowMs: nowMs) ?? .warm
        }
        let full = rooms.filter { $0.value.isFull }
        guard !full.isEmpty else { return .send(allowed: nil, rooms: rooms) }
        let open = Set(rooms.filter { !$0.value.isFull }.keys)
        let warmupOpen = rooms.contains { $0.value != .warm && !$0.value.isFull }
        // Under `wait`, warm IPs take only their own share: once every warm-up IP is full
        // the group waits rather than shifting the warm-up IPs' volume onto them.
        if warmupOpen || (settings.warmupFull[pool] == .overflow && !open.isEmpty) {
            return .send(allowed: open, rooms: rooms)
        }
        var until = Int64.max
        var parts: [String] = []
        for (ip, room) in full.sorted(by: { $0.key < $1.key }) {
            guard case .full(let at, let capName, let cap, let sent) = room else { continue }
            until = min(until, at)
            let why = sent >= cap ? "cap \(cap) reached" : "paced (\(sent) of \(cap) sent)"
            parts.append("\(ip) \(capName): \(why)")
        }
        return .wait(untilMs: until, reason: "every warm-up IP of pool \(pool) is at its "
                     + "daily cap for \(name) (" + parts.joined(separator: "; ")
                     + "): waiting until \(timestamp(ms: until))")
    }

    /// The first time a group waits for warm-up room, its first due message's history
    /// says so (the release script clears the mark when the message leaves).
    func noteWarmupHold(group: String, reason: String, nowMs: Int64) async throws {
        // The next to go: the first of the due set, else of the queue (not moved yet).
        let heads = try await redis.pipeline([
            ["ZRANGE", .text(keys.groupDue(group)), "0", "0"],
            ["ZRANGEBYSCORE", .text(keys.groupQueue(group)), "-inf", .text(String(nowMs)),
             "LIMIT", "0", "1"],
        ])
        let firsts = try heads.map { try $0.get().array?.first?.string }
        guard let id = firsts.compactMap({ $0 }).first else { return }
        let first = try await redis.run("HSETNX", keys.message(id), "held", "warmup").int
        guard first == 1 else { return }
        let org = try await redis.run("HGET", keys.message(id), MessageField.org).string ?? ""
        let entry = MessageEvent(id: id, event: .held, atMs: nowMs, org: org, from: "", to: "",
                                 metadataJSON: "{}", detail: ["reason": reason])
        try await redis.run("RPUSH", keys.history(id), entry.historyJSON)
        logger.info("held for warm-up", ("message_id", id), ("group", group),
                    ("reason", reason))
    }
}

/// UTC days as the warm-up keys name them (yyyy-mm-dd).
enum WarmupDay {
    static func text(ms: Int64) -> String { UTCDay.text(ms: ms) }
}
