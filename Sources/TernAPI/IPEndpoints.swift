// What operators see and change about the source IPs: their standing as the reputation
// monitor keeps it, and their warm-up plans.
//
//   GET  /v1/ips                 every IP of TERN_POOLS: pools, active or not and why,
//                                blocklist listings, identity check, warm-up and today's
//                                caps and sent counts per provider
//   GET  /v1/ips/{ip}/warmup     the plan, its decisions with reasons, caps by day
//   POST /v1/ips/{ip}/warmup     {"action": "start"|"pause"|"resume"|"restart",
//                                 "start_day"?: "yyyy-mm-dd"}
//
// The IPs belong to the whole system: every endpoint here needs a key bound to no
// organisation. The API writes only the plan's `start_day` and `state` (and clears `steps`
// and `last_day` to restart); the reputation monitor takes them up at its next roll, within
// a minute, and publishes the caps the scheduler enforces.

import Foundation
import TernCore
import TernMail

extension APIDaemon {
    func ipRoute(_ request: HTTPRequest) async -> HTTPResponse? {
        let path = request.path
        guard path == "/v1/ips" || path.hasPrefix("/v1/ips/") else { return nil }
        if let refusal = authorizeOperator(request, what: "the IPs") { return refusal }
        let readOnly = request.method == "GET" || request.method == "HEAD"
        if path == "/v1/ips" {
            guard readOnly else { return notAllowed("GET, HEAD") }
            return await listIPs()
        }
        let parts = path.dropFirst("/v1/ips/".count).split(separator: "/",
                                                          omittingEmptySubsequences: false)
        guard parts.count == 2, parts[1] == "warmup" else { return notFound() }
        let ip = String(parts[0]).removingPercentEncoding ?? ""
        guard configuredIPs[ip] != nil else {
            return .error(404, "'\(ip)' is not an address of TERN_POOLS", field: "ip")
        }
        if readOnly { return await warmupCurve(ip) }
        guard request.method == "POST" else { return notAllowed("GET, HEAD, POST") }
        return await changeWarmup(ip, request)
    }

    /// Address -> (EHLO name, pools), for the addresses of TERN_POOLS (not `*`).
    var configuredIPs: [String: (helo: String, pools: [String])] {
        var out: [String: (helo: String, pools: [String])] = [:]
        for (pool, ips) in settings.ipPools.byName.sorted(by: { $0.key < $1.key }) {
            for ip in ips where !ip.address.isEmpty {
                out[ip.address, default: (ip.helo, [])].pools.append(pool)
            }
        }
        return out
    }

    func listIPs() async -> HTTPResponse {
        let today = UTCDay.text(ms: nowMs())
        let ips = configuredIPs.sorted { $0.key < $1.key }
        var cmds: [[RedisArg]] = []
        for (ip, _) in ips {
            cmds += [["HGETALL", .text(keys.ipState(ip))], ["HGETALL", .text(keys.ipListings(ip))],
                     ["HGETALL", .text(keys.warmupPlan(ip))],
                     ["HGETALL", .text(keys.warmupCaps(ip, day: today))],
                     ["HGETALL", .text(keys.warmupSent(ip, day: today))]]
        }
        let pools = settings.ipPools.byName.keys.sorted()
        cmds.append(["MGET"] + pools.map { .text(keys.poolActive($0)) })
        guard let replies = await readAll(cmds) else { return unavailable503() }
        let published = replies.last?.array ?? []
        var activeIn: [String: Set<String>] = [:]
        for (i, pool) in pools.enumerated() {
            guard i < published.count, let value = published[i].string else { continue }
            activeIn[pool] = Set(value.split(separator: ",").map(String.init))
        }
        var list: [[String: Any]] = []
        for (i, (ip, configured)) in ips.enumerated() {
            let state = replies[5 * i].fieldMap
            var entry: [String: Any] = [
                "ip": ip, "helo": configured.helo, "pools": configured.pools,
                "status": state[IPField.status] ?? "unchecked",
                "reason": state[IPField.reason] ?? "",
                // Active where the monitor published nothing yet, as the scheduler reads it.
                "active_in": configured.pools.filter { activeIn[$0]?.contains(ip) ?? true },
            ]
            entry["active"] = !(entry["active_in"] as? [String] ?? []).isEmpty
            // 0: never listed.
            if let ms = state[IPField.since].flatMap(Int64.init), ms > 0 {
                entry["since"] = timestamp(ms: ms)
            }
            entry["listings"] = replies[5 * i + 1].fieldMap.sorted { $0.key < $1.key }.map {
                listing(list: $0.key, json: $0.value)
            }
            var identity: [String: Any] = ["result": state[IPField.identity] ?? "unchecked"]
            if let ms = state[IPField.identityChecked].flatMap(Int64.init) {
                identity["checked"] = timestamp(ms: ms)
            }
            entry["identity"] = identity
            entry["warmup"] = warmupSummary(plan: replies[5 * i + 2].fieldMap,
                                            caps: replies[5 * i + 3].fieldMap,
                                            sent: replies[5 * i + 4].fieldMap, today: today)
            list.append(entry)
        }
        return .json(200, ["ips": list])
    }

    func listing(list: String, json: String) -> [String: Any] {
        let object = APIDaemon.jsonObject(json) ?? [:]
        var out: [String: Any] = ["list": list, "code": object["code"] ?? "",
                                  "meaning": object["meaning"] ?? ""]
        if let ms = (object["since_ms"] as? NSNumber)?.int64Value {
            out["since"] = timestamp(ms: ms)
        }
        return out
    }

    /// An IP's warm-up at a glance; NSNull when it is on no plan.
    func warmupSummary(plan: [String: String], caps: [String: String], sent: [String: String],
                       today: String) -> Any {
        guard !plan.isEmpty || !caps.isEmpty else { return NSNull() }
        var providers: [String: Any] = [:]
        for name in Set(caps.keys).union(sent.keys) {
            providers[name] = ["cap": caps[name].flatMap { Int($0) }.map { $0 as Any }
                                   ?? NSNull(),
                               "sent": Int(sent[name] ?? "") ?? 0]
        }
        return ["state": plan[WarmupPlanField.state] ?? "active",
                "start_day": plan[WarmupPlanField.startDay] ?? NSNull(),
                "last_day": plan[WarmupPlanField.lastDay] ?? NSNull(),
                "day": today, "providers": providers] as [String: Any]
    }

    func warmupCurve(_ ip: String) async -> HTTPResponse {
        let now = nowMs()
        let days = (0..<3).map { UTCDay.text(ms: now - Int64($0) * UTCDay.ms) }
        var cmds: [[RedisArg]] = [["HGETALL", .text(keys.warmupPlan(ip))],
                                  ["LRANGE", .text(keys.warmupDecisions(ip)), "0", "-1"]]
        for day in days {
            cmds.append(["HGETALL", .text(keys.warmupCaps(ip, day: day))])
            cmds.append(["HGETALL", .text(keys.warmupSent(ip, day: day))])
        }
        guard let replies = await readAll(cmds) else { return unavailable503() }
        let plan = replies[0].fieldMap
        let decisions = (replies[1].array ?? []).compactMap { APIDaemon.jsonObject($0.string) }
        guard !plan.isEmpty || !decisions.isEmpty else {
            return .error(404, "\(ip) is on no warm-up plan", field: "ip")
        }
        // Caps by day: each decision sets its provider's cap from that day; the days still
        // published add what was sent under them.
        var byDay: [String: [String: Any]] = [:]
        for d in decisions {
            guard let day = d["day"] as? String, let provider = d["provider"] as? String
            else { continue }
            byDay[day, default: [:]][provider] = ["cap": d["cap"] ?? NSNull()]
        }
        for (i, day) in days.enumerated() {
            let caps = replies[2 + 2 * i].fieldMap, sent = replies[3 + 2 * i].fieldMap
            for name in Set(caps.keys).union(sent.keys) {
                byDay[day, default: [:]][name] = [
                    "cap": caps[name].flatMap { Int($0) }.map { $0 as Any } ?? NSNull(),
                    "sent": Int(sent[name] ?? "") ?? 0,
                ]
            }
        }
        let curve = byDay.sorted { $0.key < $1.key }.map { ["day": $0.key, "caps": $0.value] }
        var planOut: [String: Any] = ["state": plan[WarmupPlanField.state] ?? "active"]
        planOut["start_day"] = plan[WarmupPlanField.startDay] ?? NSNull()
        planOut["last_day"] = plan[WarmupPlanField.lastDay] ?? NSNull()
        planOut["steps"] = APIDaemon.jsonObject(plan[WarmupPlanField.steps]) ?? [:]
        return .json(200, ["ip": ip, "plan": planOut, "decisions": decisions, "curve": curve])
    }

    func changeWarmup(_ ip: String, _ request: HTTPRequest) async -> HTTPResponse {
        if let refusal = checkMediaType(request) { return refusal }
        guard let body = (try? JSONReading.value(request.body)) as? [String: Any]
        else { return .error(400, "must be a JSON object", field: "body") }
        if let extra = Set(body.keys).subtracting(["action", "start_day"]).sorted().first {
            return .error(400, "is not a field of a warm-up change", field: extra)
        }
        guard let action = body["action"] as? String,
              ["start", "pause", "resume", "restart"].contains(action)
        else {
            return .error(400, "must be start, pause, resume or restart", field: "action")
        }
        var startDay = UTCDay.text(ms: nowMs())
        if let given = body["start_day"] {
            guard action == "start" || action == "restart" else {
                return .error(400, "only start and restart take a first day", field: "start_day")
            }
            guard let text = given as? String, UTCDay.day(text: text) != nil else {
                return .error(400, "must be a day like 2026-12-01", field: "start_day")
            }
            startDay = text
        }
        let planKey = keys.warmupPlan(ip)
        guard let exists = await readAll([["EXISTS", .text(planKey)]])?.first?.int else {
            return unavailable503()
        }
        var cmds: [[RedisArg]]
        switch action {
        case "start":
            guard exists == 0 else {
                return .error(409, "\(ip) is already on a warm-up plan; restart it instead",
                              field: "action")
            }
            cmds = [["HSET", .text(planKey), .text(WarmupPlanField.startDay), .text(startDay),
                     .text(WarmupPlanField.state), "active"]]
        case "restart":
            cmds = [["HDEL", .text(planKey), .text(WarmupPlanField.steps),
                     .text(WarmupPlanField.lastDay)],
                    ["HSET", .text(planKey), .text(WarmupPlanField.startDay), .text(startDay),
                     .text(WarmupPlanField.state), "active"]]
        default:
            guard exists == 1 else {
                return .error(409, "\(ip) is on no warm-up plan; start one", field: "action")
            }
            cmds = [["HSET", .text(planKey), .text(WarmupPlanField.state),
                     .text(action == "pause" ? "paused" : "active")]]
        }
        cmds.append(["SADD", .text(keys.warmupIPs), .text(ip)])
        guard await readAll(cmds, transaction: true) != nil,
              let plan = await readAll([["HGETALL", .text(planKey)]])?.first?.fieldMap
        else { return unavailable503() }
        logger.notice("warm-up \(action)", ("ip", ip), ("start_day", plan["start_day"] ?? ""))
        return .json(action == "start" ? 201 : 200,
                     ["ip": ip, "action": action,
                      "plan": ["state": plan[WarmupPlanField.state] ?? "active",
                               "start_day": plan[WarmupPlanField.startDay] ?? ""]])
    }

    /// The replies of `cmds` (pipelined, or in one MULTI/EXEC), nil when Redis failed.
    private func readAll(_ cmds: [[RedisArg]], transaction: Bool = false) async -> [RedisValue]? {
        do {
            if transaction {
                _ = try await redis.transaction(cmds)
                return []
            }
            return try await redis.pipeline(cmds).map { try $0.get() }
        } catch {
            logger.error("could not read or write the IPs' state: \(error)")
            return nil
        }
    }

    private func unavailable503() -> HTTPResponse {
        .error(503, "the queue is unavailable; try again", headers: ["Retry-After": "5"])
    }
}
