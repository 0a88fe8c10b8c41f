// `ternctl status`: the running system as Redis shows it. Daemons are seen through the
// consumers of their consumer groups (a consumer's idle time says when it last read) and
// the scheduler's leader lease; each stream's backlog, pending entries and oldest entry say
// whether work is flowing.

import Foundation
import TernCore
import TernMail

enum StatusCommand {
    static let command = CtlCommand(
        name: "status", summary: "stream readers seen, the scheduler's leader, stream backlogs",
        help: """
            usage: ternctl status [--env-file FILE] [--json]

            Reads the daemons' Redis and prints:

              daemons   every consumer of every consumer group: the scheduler on submit,
                        results and inbound; senders on ready; the reputation monitor on
                        results and inbound. "idle" is the time since the consumer last
                        read; a daemon idle far longer than its read timeout (seconds) has
                        stopped, or nothing reached it. The API reads only events, and
                        only with webhooks set; the bounce receiver reads no stream: ask
                        their /health.
              leader    which scheduler holds the lease (leader:scheduler) and for how long
                        still, unless renewed
              streams   per stream: entries (XLEN), per group the entries delivered and not
                        acknowledged (pending) and not yet delivered (lag), and the age of
                        the oldest entry. A growing backlog with no consumer means the
                        daemon that reads it is down.
              queues    groups with waiting messages, how many are due now, the group
                        due the longest (and for how long), and the active pauses

            Exit status: 0, 69 when Redis does not answer, 1 when no scheduler leads or a
            stream has no consumer at all, 64 bad usage, 78 a setting is wrong.

            \(CtlContext.optionsHelp)
            """,
        run: run)

    static func run(_ arguments: [String], _ io: CtlOutput) async throws -> Int32 {
        let args = try ArgumentReader(arguments, valued: CtlContext.valued,
                                      flags: CtlContext.flags)
        guard args.operands.isEmpty else { throw UsageError("status takes no operands") }
        let ctx = try CtlContext(args)
        let redis = try await ctx.redis()
        let now = nowMs()
        var streams: [[String: Any]] = []
        var daemons: [String: [String: Any]] = [:]
        var problems: [String] = []
        for stream in StreamName.allCases {
            let key = ctx.keys.stream(stream)
            let replies = try await redis.pipeline([
                ["XLEN", .text(key)], ["XRANGE", .text(key), "-", "+", "COUNT", "1"],
                ["XINFO", "GROUPS", .text(key)],
            ])
            var entry: [String: Any] = ["stream": stream.rawValue,
                                        "length": (try? replies[0].get().int) ?? 0]
            if let first = (try? replies[1].get())?.array?.first?.array?.first?.string,
               let id = StreamID(first) {
                entry["oldest_age_ms"] = now - Int64(id.ms)
            }
            var groups: [[String: Any]] = []
            for g in (try? replies[2].get())?.array ?? [] {
                let info = g.fieldMap
                guard let name = info["name"] else { continue }
                var group: [String: Any] = ["group": name,
                                            "pending": Int(info["pending"] ?? "") ?? 0]
                if let lag = info["lag"].flatMap({ Int($0) }) { group["lag"] = lag }
                let consumers = try await redis.pipeline(
                    [["XINFO", "CONSUMERS", .text(key), .text(name)]])[0]
                var seen: [[String: Any]] = []
                for c in (try? consumers.get())?.array ?? [] {
                    let m = c.fieldMap
                    guard let consumer = m["name"] else { continue }
                    let idle = Int64(m["idle"] ?? "") ?? 0
                    seen.append(["consumer": consumer, "idle_ms": idle,
                                 "pending": Int(m["pending"] ?? "") ?? 0])
                    var d = daemons[consumer] ?? ["name": consumer, "reads": [String](),
                                                  "idle_ms": idle]
                    d["reads"] = (d["reads"] as? [String] ?? []) + ["\(stream.rawValue)/\(name)"]
                    d["idle_ms"] = min(d["idle_ms"] as? Int64 ?? idle, idle)
                    daemons[consumer] = d
                }
                if seen.isEmpty && stream != .events {
                    problems.append("\(stream.rawValue): group \(name) has no consumer")
                }
                group["consumers"] = seen
                groups.append(group)
            }
            entry["groups"] = groups
            streams.append(entry)
        }
        let lease = try await redis.pipeline([["GET", .text(ctx.keys.schedulerLeader)],
                                              ["PTTL", .text(ctx.keys.schedulerLeader)]])
        let leader: Any
        if let owner = try lease[0].get().string {
            leader = ["instance": owner, "expires_in_ms": try lease[1].get().int ?? 0]
        } else {
            leader = NSNull()
            problems.append("no scheduler holds the leader lease: nothing is released")
        }
        let counts = try await redis.pipeline([
            ["ZCARD", .text(ctx.keys.dueGroups)],
            ["ZCOUNT", .text(ctx.keys.dueGroups), "-inf", .text(String(now))],
            ["HLEN", .text(ctx.keys.pauses)],
            ["ZRANGE", .text(ctx.keys.dueGroups), "0", "0", "WITHSCORES"],
        ]).map { try $0.get() }
        var queues: [String: Any] = ["groups": counts[0].int ?? 0,
                                     "groups_due_now": counts[1].int ?? 0,
                                     "pauses": counts[2].int ?? 0]
        // The group waiting longest past its due time: a large age with a leader means
        // something holds it (a pause, a breaker, a cap, no IP).
        if let first = counts[3].array, first.count == 2, let group = first[0].string,
           let score = first[1].string.flatMap(Double.init), Int64(score) < now {
            queues["oldest_due"] = ["group": group, "overdue_ms": now - Int64(score)]
        }
        let report: [String: Any] = [
            "daemons": daemons.keys.sorted().compactMap { daemons[$0] },
            "leader": leader, "streams": streams, "queues": queues, "problems": problems,
        ]
        if ctx.json {
            ctx.print(json: report, io)
        } else {
            printText(report, io)
        }
        return problems.isEmpty ? 0 : 1
    }

    static func printText(_ r: [String: Any], _ io: CtlOutput) {
        io.text("daemons (consumers of the streams; the API reads only events, for webhooks, "
                + "the bounce receiver none: ask their /health):")
        let daemons = r["daemons"] as? [[String: Any]] ?? []
        if daemons.isEmpty { io.text("  none seen") }
        for line in table(["  name", "idle", "reads"], daemons.map {
            ["  " + ($0["name"] as? String ?? ""), ago(ms: $0["idle_ms"] as? Int64 ?? 0),
             ($0["reads"] as? [String] ?? []).joined(separator: " ")]
        }) { io.text(line) }
        if let leader = r["leader"] as? [String: Any] {
            io.text("leader: \(leader["instance"] ?? "") (lease "
                    + "\(ago(ms: Int64(leader["expires_in_ms"] as? Int ?? 0))) left)")
        } else {
            io.text("leader: none")
        }
        io.text("streams:")
        var rows: [[String]] = []
        for s in r["streams"] as? [[String: Any]] ?? [] {
            let oldest = (s["oldest_age_ms"] as? Int64).map { ago(ms: $0) } ?? "-"
            let groups = (s["groups"] as? [[String: Any]] ?? []).map {
                "\($0["group"] ?? ""): pending \($0["pending"] ?? 0)"
                    + ($0["lag"].map { ", lag \($0)" } ?? "")
                    + ", \(($0["consumers"] as? [Any])?.count ?? 0) consumer(s)"
            }
            rows.append(["  " + (s["stream"] as? String ?? ""), "\(s["length"] ?? 0)", oldest,
                         groups.isEmpty ? "no group" : groups.joined(separator: "; ")])
        }
        for line in table(["  stream", "length", "oldest", "groups"], rows) { io.text(line) }
        if let q = r["queues"] as? [String: Any] {
            io.text("queues: \(q["groups"] ?? 0) group(s) waiting, \(q["groups_due_now"] ?? 0) "
                    + "of them due now; \(q["pauses"] ?? 0) pause(s)")
            if let oldest = q["oldest_due"] as? [String: Any] {
                io.text("  longest due: \(oldest["group"] ?? ""), for "
                        + ago(ms: oldest["overdue_ms"] as? Int64 ?? 0))
            }
        }
        for p in r["problems"] as? [String] ?? [] { io.text("problem: " + p) }
    }
}
