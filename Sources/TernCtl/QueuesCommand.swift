// `ternctl queues`, `ternctl pools`/`ips` and `ternctl message`: what waits where, the
// source IPs' standing, and one message's story. The documents are those of the API's
// GET /v1/groups, /v1/providers and /v1/pools (`QueueView`, shared).

import Foundation
import TernCore
import TernMail

enum QueuesCommand {
    static let command = CtlCommand(
        name: "queues", summary: "waiting messages by group and by provider",
        help: """
            usage: ternctl queues [--providers] [--env-file FILE] [--json]

            Prints every group (pool:domain) with waiting messages, earliest due first (at
            most \(QueueView.groupLimit)): its provider, messages queued and due now, when it
            may next send, the senders' open connections from its pool to its provider
            (shared by the pool's groups of that provider; "-" for the default provider,
            whose connections are counted per MX host), and the pauses that stop it.
            Then the providers: messages queued for each, and each source IP's rate
            towards it with its state (steady, backing_off, paused) and the reason for its
            last change. --providers prints only the providers.

            A group is due when its earliest message is; it may still wait for its
            provider's rate, a warm-up cap, a breaker or a pause.

            Providers are named as the scheduler names them: TERN_PROVIDERS_FILE over the
            built-in profiles, and what the scheduler learned from MX hosts.

            Exit status: 0, 64 bad usage, 69 Redis does not answer, 78 a setting is wrong.

            \(CtlContext.optionsHelp)
            """,
        run: run)

    static func run(_ arguments: [String], _ io: CtlOutput) async throws -> Int32 {
        let args = try ArgumentReader(arguments, valued: CtlContext.valued,
                                      flags: CtlContext.flags.union(["providers"]))
        guard args.operands.isEmpty else { throw UsageError("queues takes no operands") }
        let ctx = try CtlContext(args)
        let view = try await view(ctx)
        let (groups, truncated) = try await view.groups()
        let providers = try await view.providerStates()
        let onlyProviders = args.flags.contains("providers")
        if ctx.json {
            var doc: [String: Any] = ["providers": providers]
            if !onlyProviders { (doc["groups"], doc["truncated"]) = (groups, truncated) }
            ctx.print(json: doc, io)
            return 0
        }
        if !onlyProviders {
            io.text(groups.isEmpty ? "no group has waiting messages" : "groups:")
            let now = nowMs()
            for line in table(["  group", "provider", "queued", "due", "conns", "next", "paused"],
                              groups.map { g in
                let next = g["next_due"] as? String ?? ""
                return ["  " + (g["group"] as? String ?? ""), g["provider"] as? String ?? "",
                        "\(g["queued"] ?? 0)", "\(g["due_now"] ?? 0)",
                        (g["connections"] as? Int).map(String.init) ?? "-",
                        relative(next, now: now),
                        (g["paused"] as? [String] ?? []).joined(separator: ",")]
            }) where !groups.isEmpty { io.text(line) }
            if truncated { io.text("  (the first \(QueueView.groupLimit) groups only)") }
        }
        io.text("providers:")
        for p in providers {
            let paused = p["paused"] as? Bool == true ? ", PAUSED" : ""
            io.text("  \(p["provider"] ?? ""): \(p["queued"] ?? 0) queued in "
                    + "\(p["groups"] ?? 0) group(s), \(p["due_now"] ?? 0) due, "
                    + "\(p["messages_per_minute"] ?? 0)/min per IP\(paused)")
            for t in p["throttles"] as? [[String: Any]] ?? [] {
                let rate = (t["rate"] as? NSNumber)?.doubleValue ?? 0
                io.text("    \(t["ip"] ?? "") \(t["state"] ?? "") "
                        + String(format: "%.1f/min", rate)
                        + ((t["reason"] as? String).map { $0.isEmpty ? "" : ": " + $0 } ?? ""))
            }
        }
        return 0
    }

    static func view(_ ctx: CtlContext) async throws -> QueueView {
        let providers = try ProviderCatalog.load(overrides: ctx.env.values["TERN_PROVIDERS_FILE"])
        return QueueView(redis: try await ctx.redis(), keys: ctx.keys, providers: providers,
                         pools: try Pools(ctx.env))
    }

    /// "now", "in 5s" or "3m ago" for an RFC 3339 timestamp of ours.
    static func relative(_ stamp: String, now: Int64) -> String {
        guard let ms = parseTimestamp(stamp) else { return stamp }
        let d = ms - now
        return abs(d) < 1000 ? "now" : d > 0 ? "in " + ago(ms: d) : ago(ms: -d) + " ago"
    }

    static func parseTimestamp(_ text: String) -> Int64? {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.date(from: text).map { Int64($0.timeIntervalSince1970 * 1000) }
    }
}

enum PoolsCommand {
    static let pools = CtlCommand(
        name: "pools", summary: "pools: IPs active, listed, in warm-up; queues",
        help: """
            usage: ternctl pools [--env-file FILE] [--json]

            Prints every pool of TERN_POOLS: how many of its IPs the scheduler may use now
            (the reputation monitor's pool:{pool}:active; all of them until it has
            published), how many are listed on a blocklist, whether it is paused, and the
            messages waiting for it. Under each pool, each IP with its EHLO name, its
            standing (active, listed, identity, unchecked) and why, and its warm-up state
            (active, paused, or none). `ternctl ips` prints the same by IP.

            Exit status: 0, 64 bad usage, 69 Redis does not answer, 78 a setting is wrong.

            \(CtlContext.optionsHelp)
            """,
        run: { try await run($0, $1, byIP: false) })

    static let ips = CtlCommand(
        name: "ips", summary: "source IPs: standing, listings, warm-up",
        help: """
            usage: ternctl ips [--env-file FILE] [--json]

            Prints every source IP of TERN_POOLS: its pools, whether the scheduler may use
            it now, its standing as the reputation monitor keeps it (active, listed,
            identity, unchecked) with the reason, and its warm-up state (active, paused or
            none). The API's GET /v1/ips adds each listing and the warm-up caps.

            Exit status: 0, 64 bad usage, 69 Redis does not answer, 78 a setting is wrong.

            \(CtlContext.optionsHelp)
            """,
        run: { try await run($0, $1, byIP: true) })

    static func run(_ arguments: [String], _ io: CtlOutput, byIP: Bool) async throws -> Int32 {
        let args = try ArgumentReader(arguments, valued: CtlContext.valued,
                                      flags: CtlContext.flags)
        guard args.operands.isEmpty else { throw UsageError("no operands are taken") }
        let ctx = try CtlContext(args)
        let pools = try await QueuesCommand.view(ctx).poolStates()
        if byIP {
            var ips: [String: [String: Any]] = [:]
            for pool in pools {
                for ip in pool["ips"] as? [[String: Any]] ?? [] {
                    let address = ip["ip"] as? String ?? "*"
                    var entry = ips[address] ?? ip
                    entry["pools"] = (entry["pools"] as? [String] ?? [])
                        + [pool["pool"] as? String ?? ""]
                    entry.removeValue(forKey: "active")
                    entry["active_in"] = (ips[address]?["active_in"] as? [String] ?? [])
                        + (ip["active"] as? Bool == true ? [pool["pool"] as? String ?? ""] : [])
                    ips[address] = entry
                }
            }
            let list = ips.keys.sorted().compactMap { ips[$0] }
            if ctx.json {
                ctx.print(json: ["ips": list], io)
                return 0
            }
            for line in table(["ip", "helo", "pools", "active in", "status", "warm-up", "reason"],
                              list.map { ip in
                [ip["ip"] as? String ?? "", ip["helo"] as? String ?? "",
                 (ip["pools"] as? [String] ?? []).joined(separator: ","),
                 (ip["active_in"] as? [String] ?? []).joined(separator: ","),
                 ip["status"] as? String ?? "", ip["warmup"] as? String ?? "",
                 ip["reason"] as? String ?? ""]
            }) { io.text(line) }
            return 0
        }
        if ctx.json {
            ctx.print(json: ["pools": pools], io)
            return 0
        }
        for pool in pools {
            let ips = pool["ips"] as? [[String: Any]] ?? []
            let warming = ips.filter { ($0["warmup"] as? String ?? "none") != "none" }.count
            io.text("\(pool["pool"] ?? ""): \(pool["active"] ?? 0) of \(ips.count) IP(s) "
                    + "active, \(pool["listed"] ?? 0) listed, \(warming) in warm-up; "
                    + "\(pool["queued"] ?? 0) queued in \(pool["groups"] ?? 0) group(s)"
                    + (pool["paused"] as? Bool == true ? "; PAUSED" : ""))
            for ip in ips {
                let why = (ip["reason"] as? String).map { $0.isEmpty ? "" : " (\($0))" } ?? ""
                io.text("  \(ip["ip"] ?? "") \(ip["helo"] ?? ""): "
                        + "\(ip["active"] as? Bool == true ? "in use" : "not in use"), "
                        + "\(ip["status"] ?? "")\(why), warm-up \(ip["warmup"] ?? "none")")
            }
        }
        return 0
    }
}

enum MessageCommand {
    static let command = CtlCommand(
        name: "message", summary: "one message: state, history, attempts",
        help: """
            usage: ternctl message [--env-file FILE] [--json] ID

            Prints what became of message ID, as GET /v1/messages/{id} does: its state
            (queued, sending, deferred, delivered, bounced, expired, suppressed,
            cancelled), organisation, pool, sender, recipient, when it was accepted and
            when it expires, why it waits if it is held (breaker, cap, warm-up, pause),
            every history entry in order (accepted, held, deferred, reports, the final
            event) and every attempt with the remote's reply, MX host and source IP.
            The message body is never printed.

            Exit status: 0, 1 when there is no such message (records live for
            TERN_RECORD_TTL after their final event), 64 bad usage, 69 Redis does not
            answer, 78 a setting is wrong.

            \(CtlContext.optionsHelp)
            """,
        run: run)

    static func run(_ arguments: [String], _ io: CtlOutput) async throws -> Int32 {
        let args = try ArgumentReader(arguments, valued: CtlContext.valued,
                                      flags: CtlContext.flags)
        let id = try CtlContext.messageID(args)
        let ctx = try CtlContext(args)
        let redis = try await ctx.redis()
        let fields = [MessageField.state, MessageField.org, MessageField.pool,
                      MessageField.from, MessageField.recipient, MessageField.createdMs,
                      MessageField.expiresMs, MessageField.attempts, MessageField.held,
                      MessageField.lastReply]
        let replies = try await redis.pipeline([
            [.text("HMGET"), .text(ctx.keys.message(id))] + fields.map { .text($0) },
            ["LRANGE", .text(ctx.keys.history(id)), "0", "-1"],
            ["LRANGE", .text(ctx.keys.attempts(id)), "0", "-1"],
        ]).map { try $0.get() }
        let values = replies[0].array ?? []
        guard values.count == fields.count, let state = values[0].string else {
            io.error("message: no such message \(id)")
            return 1
        }
        var doc: [String: Any] = ["id": id, "state": state]
        for (i, name) in fields.enumerated().dropFirst() {
            guard let value = values[i].string, !value.isEmpty else { continue }
            switch name {
            case MessageField.createdMs, MessageField.expiresMs:
                doc[name == MessageField.createdMs ? "created" : "expires"] =
                    Int64(value).map { timestamp(ms: $0) } ?? value
            case MessageField.recipient: doc["to"] = value
            case MessageField.attempts: doc["attempts_made"] = Int(value) ?? 0
            default: doc[name] = value
            }
        }
        func objects(_ v: RedisValue) -> [Any] {
            (v.array ?? []).compactMap { $0.string }.compactMap {
                try? JSONReading.value($0)
            }
        }
        doc["history"] = objects(replies[1])
        doc["attempts"] = objects(replies[2])
        if ctx.json {
            ctx.print(json: doc, io)
            return 0
        }
        io.text("\(id): \(state)" + ((doc["held"] as? String).map { " (held: \($0))" } ?? ""))
        for key in ["org", "pool", "from", "to", "created", "expires", "attempts_made",
                    "last_reply"] {
            if let value = doc[key] { io.text("  \(key): \(value)") }
        }
        io.text("history:")
        for case let entry as [String: Any] in doc["history"] as? [Any] ?? [] {
            io.text("  " + historyLine(entry))
        }
        io.text("attempts:")
        for case let a as [String: Any] in doc["attempts"] as? [Any] ?? [] {
            io.text("  #\(a["attempt"] ?? "") \(a["at"] ?? "") \(a["outcome"] ?? "") "
                    + "\(a["code"] ?? "") via \(a["ip"] ?? "") to \(a["mx"] ?? ""): "
                    + "\(a["reply"] ?? "")")
        }
        return 0
    }

    /// One history entry: its time and event, then its other fields as key=value.
    static func historyLine(_ entry: [String: Any]) -> String {
        let rest = entry.keys.filter { $0 != "at" && $0 != "event" }.sorted().map {
            "\($0)=\(entry[$0] ?? "")"
        }
        return "\(entry["at"] ?? "") \(entry["event"] ?? "")"
            + (rest.isEmpty ? "" : " " + rest.joined(separator: " "))
    }
}
