// Messages held past their deadline: a pause, an open breaker, a cap or a warm-up or
// engagement wait must not keep a message beyond its maximum age (TERN_MAX_AGE), nor let it
// be sent after it.
//
// Two Redis steps set such a message `expired`: the release script, for one it pops, and the
// deadline sweep (`Scripts.expireOverdue`), for one it never pops. Both leave its id in
// `expiring`; here it gets its `expired` event, history entry and record TTL in one
// transaction that also takes it out of `expiring`. A crash between the two leaves the id
// there for the next sweep, so the event is written once and the message is never released.
//
// Known limit: a message filed before the `deadlines` index existed is not in it: the release
// script still expires it when popped, but in a paused group it waits for the resume.

import Foundation
import TernCore
import TernMail

extension SchedulerDaemon {
    /// How often the release loop sweeps the deadlines (ms): a held message ends at most
    /// this long after its deadline.
    static let sweepEveryMs: Int64 = 250

    /// Messages one sweep sets expired, at most; a backlog goes over a few sweeps.
    static let sweepLimit = 200

    /// Sets expired the waiting messages past their deadline and writes the events of every
    /// message left in `expiring`. Runs in the release loop only (one writer of the events).
    func expireOverdue(nowMs: Int64) async throws {
        let reply = try await redis.eval(
            Scripts.expireOverdue, keys: [keys.deadlines, keys.expiring],
            args: [.text(String(nowMs)), .text(keys.message("")), .text(keys.groupQueue("")),
                   .text(keys.groupDue("")), .text(keys.pauseHeldPrefix),
                   .text(String(Self.sweepLimit))])
        for (id, held) in reply.fieldMap.sorted(by: { $0.key < $1.key }) {
            try await finishExpiry(id: id, held: held)
        }
    }

    /// Writes the `expired` event of a message a script set expired (`held`: its `held`
    /// field then, "" for none) and takes it out of `expiring`.
    func finishExpiry(id: String, held: String) async throws {
        let done: [RedisArg] = ["HDEL", .text(keys.expiring), .text(id)]
        guard let record = try await load(id) else {
            try await redis.run("HDEL", keys.expiring, id)
            return
        }
        let reason = try await expiryReason(record, held: held)
        var detail: [String: any Sendable] = ["reason": reason,
                                              "deadline": timestamp(ms: record.expiresMs)]
        if !held.isEmpty { detail["held"] = held }
        _ = try await redis.transaction(
            finalize(record, .expired, state: .expired, detail: detail) + [done])
        logger.info("expired before release", ("message_id", id), ("org", record.org),
                    ("group", record.group), ("reason", reason))
    }

    /// Why a message did not go before its deadline, as its history and event say: a pause
    /// that stops it now, else what its `held` field recorded.
    func expiryReason(_ r: Record, held: String) async throws -> String {
        let scoped = Throttles.scope(provider(of: r.domain), domain: r.domain)
        let fields = [Pause.field(.org, r.org), Pause.field(.group, r.group),
                      Pause.field(.pool, r.pool), Pause.field(.provider, pauseName(scoped))]
        let replies = try await redis.pipeline([
            ["HMGET", .text(keys.pauses)] + fields.map { RedisArg.text($0) },
            ["HGET", .text(keys.heldOrgs), .text(r.org)],
        ])
        let pauses = try replies[0].get().array?.compactMap(\.string) ?? []
        let breakerHeld = try replies[1].get().string != nil
        let prefix = "held past its deadline: "
        if let json = pauses.first,
           let pause = try? JSONDecoder().decode(Pause.self, from: Data(json.utf8)) {
            return prefix + "\(pause.kind == .org ? "organisation" : pause.kind.rawValue) "
                + "\(pause.name) is paused" + (pause.reason.isEmpty ? "" : " (\(pause.reason))")
        }
        switch held {
        case "breaker": return prefix + "the circuit breaker of organisation \(r.org) is open"
        case "cap": return prefix + "organisation \(r.org) is at its sending cap"
        case "warmup": return prefix + "waiting for warm-up room"
        case "pause": return prefix + "paused"
        default:
            return breakerHeld
                ? prefix + "the circuit breaker of organisation \(r.org) is open"
                : "not released before its deadline"
        }
    }
}
