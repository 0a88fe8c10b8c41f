// The warm-up's daily roll: once a minute, each IP on a plan is moved to the current UTC day
// (judging yesterday by its statistics) and today's caps are published for the scheduler.
// The IPs on a plan are those of TERN_WARMUP and those an operator added through the API
// (`Keys.warmupIPs`); the API's start, pause, resume and restart are fields of the plan hash
// that the roll honours (see `WarmupPlanField`).
//
// Known limit: a restart written by the API while a roll of the same IP is in flight can be
// overwritten by that roll's steps; the operator sees the old curve and restarts again.

import Foundation
import TernCore
import TernMail

extension ReputationDaemon {
    func warmupLoop(shutdown: Shutdown) async {
        while !shutdown.isRequested && !Task.isCancelled {
            var plans = settings.warmup
            do {
                let added = try await redis.run("SMEMBERS", keys.warmupIPs).array ?? []
                for ip in added.compactMap(\.string) where plans[ip] == nil {
                    plans[ip] = .some(nil)
                }
            } catch {
                logger.error("reading the warm-up IPs failed: \(error)")
            }
            for (ip, start) in plans.sorted(by: { $0.key < $1.key }) {
                do {
                    try await rollWarmup(ip: ip, configuredStart: start,
                                         today: WarmupPlan.day(ms: nowMs()))
                } catch {
                    logger.error("warm-up update failed: \(error)", ("ip", ip))
                }
            }
            try? await Task.sleep(for: .seconds(60))
        }
    }

    func rollWarmup(ip: String, configuredStart: Int?, today: Int) async throws {
        let stored = try await redis.run("HGETALL", keys.warmupPlan(ip)).fieldMap
        let storedStart = stored[WarmupPlanField.startDay].flatMap(WarmupPlan.day(text:))
        let paused = stored[WarmupPlanField.state] == "paused"
        var plan: WarmupPlan
        if let start = storedStart,
           let last = stored[WarmupPlanField.lastDay].flatMap(WarmupPlan.day(text:)),
           let steps = stored[WarmupPlanField.steps].flatMap({
               try? JSONDecoder().decode([String: Int].self, from: Data($0.utf8))
           })
        {
            plan = WarmupPlan(startDay: start)
            plan.lastDay = last
            plan.steps = steps
        } else {
            // A new plan, or one the API started or restarted (start day without steps).
            let start = storedStart ?? configuredStart ?? today
            plan = WarmupPlan(startDay: start)
            // A plan that started in the past begins its first judged day today.
            plan.lastDay = max(start, today - 1)
        }

        var counts: [String: DayCounts] = [:]
        if today > plan.lastDay {
            let yesterday = today - 1
            let seen = try await redis.run(
                "SMEMBERS", keys.statsProviders(ip, Int64(yesterday) * 86_400_000))
            for p in (seen.array ?? []).compactMap(\.string) {
                counts[p] = try await redis.dayCounts(scope: "ipprov:\(ip)|\(p)", day: yesterday,
                                                      keys: keys)
            }
        }
        let records = plan.roll(to: today, policy: settings.warmupPolicy, counts: counts,
                                paused: paused)

        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let steps = String(decoding: try encoder.encode(plan.steps), as: UTF8.self)
        var cmds: [[RedisArg]] = [
            ["HSET", .text(keys.warmupPlan(ip)), .text(WarmupPlanField.startDay),
             .text(WarmupPlan.dayText(plan.startDay)), .text(WarmupPlanField.lastDay),
             .text(WarmupPlan.dayText(plan.lastDay)), .text(WarmupPlanField.steps), .text(steps)],
        ]
        for r in records {
            let json = String(decoding: try encoder.encode(r), as: UTF8.self)
            cmds.append(["RPUSH", .text(keys.warmupDecisions(ip)), .text(json)])
            logger.info("warm-up \(r.decision.rawValue)", ("ip", ip), ("provider", r.provider),
                        ("reason", r.reason), ("cap", r.cap.map(String.init) ?? "none"))
        }
        cmds.append(["LTRIM", .text(keys.warmupDecisions(ip)), "-1000", "-1"])
        let capsKey = keys.warmupCaps(ip, day: WarmupPlan.dayText(today))
        cmds.append(["DEL", .text(capsKey)])
        for (provider, cap) in plan.caps(settings.warmupPolicy).sorted(by: { $0.key < $1.key }) {
            cmds.append(["HSET", .text(capsKey), .text(provider),
                         .text(cap.map(String.init) ?? "none")])
        }
        cmds.append(["EXPIRE", .text(capsKey), .text(String(3 * 86_400))])
        _ = try await redis.transaction(cmds)
    }
}
