// The scheduler: files accepted messages under their group, releases each one when its group
// allows, and turns attempt results and bounces into states, retries and events.
//
// Four loops share one Redis client: intake (`submit`, where suppressed recipients end at
// once), release (the due index), results (`results`) and inbound reports (`inbound`). Each
// stream entry is applied and acknowledged in one MULTI/EXEC, so a crash at any point either
// applies an entry completely or leaves it pending for this consumer's next start (or for
// another scheduler's claim).

import Foundation
import Synchronization
import TernCore
import TernMail

public struct SchedulerDaemon: Daemon {
    let settings: SchedulerSettings
    let logger: Logger
    let redis: RedisClient
    let keys: Keys
    let policy: RetryPolicy
    let throttles: Throttles
    let breakers: Breakers
    /// Providers of domains learned from their MX hosts (see `provider(of:)`).
    let learnedProviders = LearnedProviders()
    /// The release path's clock (ms since the epoch); tests move it to another UTC day.
    let clock: @Sendable () -> Int64
    let metrics: SchedulerMetrics
    /// The release script's fixed engagement arguments: lead per point, default score and
    /// the store's key prefix (made once, not per release).
    let engagementArgs: [RedisArg]

    public init(settings: SchedulerSettings, logger: Logger,
                clock: @escaping @Sendable () -> Int64 = { nowMs() }) throws {
        self.clock = clock
        self.settings = settings
        self.logger = logger
        self.redis = try RedisClient(url: settings.common.redisURL)
        self.keys = Keys(prefix: settings.common.redisPrefix)
        self.policy = RetryPolicy(delays: settings.retryDelays,
                                  ambiguousRetries: settings.ambiguousRetries,
                                  ambiguousDelay: settings.ambiguousDelay)
        self.throttles = Throttles(settings: settings.throttle)
        self.breakers = Breakers(settings: settings.breaker)
        self.metrics = SchedulerMetrics(throttles: throttles, breakers: breakers)
        engagementArgs = [.text(String(settings.engagement.leadPerPointMs)),
                          .text(String(settings.engagement.defaultScore)),
                          .text(keys.engagement(""))]
        metrics.registry.streamMetrics(redis: redis, streams: consumedStreams)
        metrics.pauseMetrics(redis: redis, keys: keys)
        metrics.finalStateMetrics(redis: redis, keys: keys)
    }

    public func run(shutdown: Shutdown, ready: @escaping @Sendable (String) -> Void) async throws {
        for stream in [StreamName.submit, .results, .inbound] {
            try await redis.ensureGroup(stream: keys.stream(stream), group: stream.group)
        }
        ready("scheduling \(settings.pools.byName.count) pool(s) when leading")
        // One scheduler leads; others stand by, so the throttles and breakers it keeps in
        // memory have one writer. Each new leader starts from what the last one saved. The
        // metrics and health endpoint answers whether this one leads or not.
        let lease = LeaderLease(redis: redis, key: keys.schedulerLeader,
                                instance: settings.common.instance, ttl: settings.leaderTTL)
        await withTaskGroup(of: Void.self) { outer in
            outer.addTask { await serveMetrics(shutdown: shutdown) }
            outer.addTask { await lead(lease, shutdown: shutdown) }
        }
    }

    private func lead(_ lease: LeaderLease, shutdown: Shutdown) async {
        await lease.lead(shutdown: shutdown, logger: logger) {
            do {
                try await publishOrgCaps()
                try await restoreThrottles()
                breakers.restore(try await redis.run("HGETALL", keys.breakers).fieldMap)
            } catch {
                logger.error("cannot read the saved throttles and breakers: \(error)")
                try? await Task.sleep(for: .seconds(1))
                return
            }
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await consume(.submit, shutdown: shutdown, apply: intake) }
                group.addTask {
                    await consume(.results, shutdown: shutdown, apply: applyResult)
                }
                group.addTask {
                    await consume(.inbound, shutdown: shutdown, apply: applyInbound)
                }
                group.addTask { await releaseLoop(shutdown: shutdown) }
                await shutdown.wait()
                group.cancelAll()
            }
        }
    }

    // MARK: Consuming streams

    /// Reads one stream through the scheduler's consumer group until shutdown (see
    /// `StreamConsumer`); each entry is applied and acknowledged in one transaction.
    func consume(_ stream: StreamName, shutdown: Shutdown,
                 apply: @escaping @Sendable (StreamEntry) async throws -> Void) async {
        var consumer = StreamConsumer(redis: redis, stream: keys.stream(stream),
                                      group: stream.group, consumer: settings.common.instance,
                                      logger: logger)
        consumer.claimIdle = settings.claimIdle
        // Trimmed in one step now and then rather than deleted entry by entry: XDEL costs
        // Redis about 14 µs an entry, an XTRIM MINID about half a µs.
        consumer.trimAcknowledged = true
        // One message's entries in stream order, different messages side by side: each
        // costs a few round trips, and one at a time capped the scheduler at their rate.
        // Known limit: two entries of one organisation that both change its breaker's state
        // in the same batch may commit those changes (`held` hash) in the other order;
        // the in-memory breaker is right and the next change rewrites the hash.
        consumer.sideBySide = Self.applyConcurrency
        consumer.orderKey = { $0[EntryField.id] ?? $0.id }
        switch stream {
        case .submit: consumer.applyBatch = intakeBatch
        case .results: consumer.applyBatch = applyResults
        default: break
        }
        await consumer.run(shutdown: shutdown, apply: apply) { entry in
            _ = try await redis.transaction(ack(stream, entry))
        }
    }

    /// Acknowledges an entry; the stream is trimmed after the batch below what every group
    /// has acknowledged (`StreamConsumer.trimAcknowledged`).
    func ack(_ stream: StreamName, _ entry: StreamEntry) -> [[RedisArg]] {
        [["XACK", .text(keys.stream(stream)), .text(stream.group), .text(entry.id)]]
    }

    // MARK: Intake

    /// When a newly accepted message is first due, and its deadline. The scheduler owns the
    /// retry policy, so it sets the deadline from its own maximum age (a message's
    /// `expires_ms`, when the API gave one, may only shorten it). A message the client
    /// scheduled (send_at) is first due then, and its age counts from then: it is not late
    /// before it was meant to go.
    func firstDueAndDeadline(_ record: Record, now: Int64) -> (due: Int64, expires: Int64) {
        let due = max(now, record.sendAtMs)
        let limit = max(record.createdMs, record.sendAtMs) + settings.lifetime.maxAge.milliseconds
        return (due, record.expiresMs > 0 ? min(record.expiresMs, limit) : limit)
    }

    /// A hard bounce or a complaint put the recipient on the organisation's list: the
    /// message ends `suppressed` at intake.
    func suppress(_ record: Record, _ log: Logger) -> [[RedisArg]] {
        log.info("suppressed", ("org", record.org), ("rcpt", record.to))
        return finalize(record, .suppressed, state: .suppressed,
                        detail: ["reason": "the recipient is on the organisation's "
                                 + "suppression list"])
    }

    @Sendable func intake(_ entry: StreamEntry) async throws {
        guard let id = entry[EntryField.id], let record = try await load(id) else {
            logger.error("submit entry for a message with no record", ("entry", entry.id))
            _ = try await redis.transaction(ack(.submit, entry))
            return
        }
        let log = logger.with(("message_id", id))
        // Only a waiting message bounces; one cancelled before intake stays as it ended.
        guard settings.pools.byName[record.pool] != nil || record.state != .queued else {
            log.warning("unknown ip pool", ("pool", record.pool))
            let detail: [String: any Sendable] = ["reason": "unknown ip pool \(record.pool)"]
            var cmds = finalize(record, .bounced, state: .bounced, detail: detail)
            cmds += ack(.submit, entry)
            _ = try await redis.transaction(cmds)
            return
        }
        let now = nowMs()
        var cmds: [[RedisArg]] = []
        if record.state == .queued, try await isSuppressed(record) {
            cmds += suppress(record, log)
        } else if record.state == .queued {
            let (due, expires) = firstDueAndDeadline(record, now: now)
            cmds.append(["HSET", .text(keys.message(id)), .text(MessageField.expiresMs),
                         .text(String(expires))])
            cmds.append(["ZADD", .text(keys.groupQueue(record.group)), .text(String(due)),
                         .text(id)])
            cmds.append(["ZADD", .text(keys.dueGroups), "LT", .text(String(due)),
                         .text(record.group)])
            cmds.append(["ZADD", .text(keys.deadlines), .text(String(expires)), .text(id)])
        }
        cmds += ack(.submit, entry)
        _ = try await redis.transaction(cmds)
        log.debug("queued", ("group", record.group))
    }

    /// A whole `submit` batch in three round trips rather than three per message: the
    /// records, the organisations' suppression lists, then one transaction that queues every
    /// message (one ZADD per group), ends the suppressed ones and acknowledges every entry.
    /// The effects are `intake`'s, entry by entry; a crash before EXEC leaves the batch pending.
    @Sendable func intakeBatch(_ entries: [StreamEntry]) async throws {
        let records = try await loadAll(entries.map { $0[EntryField.id] })
        // Every member a queued message's recipient may have in its organisation's list,
        // asked in one SMISMEMBER per organisation; the ids of those found are suppressed.
        var asked: [String: [(id: String, member: String)]] = [:]
        for case let r? in records where r.state == .queued {
            for member in r.suppressionMembers {
                asked[r.org, default: []].append((r.id, member))
            }
        }
        let orgs = Array(asked.keys)
        let found = try await redis.pipeline(orgs.map { org in
            ["SMISMEMBER", .text(keys.suppressions(org))]
                + asked[org, default: []].map { RedisArg.text($0.member) }
        })
        var suppressed: Set<String> = []
        for (org, reply) in zip(orgs, found) {
            for (ask, flag) in zip(asked[org, default: []], try reply.get().array ?? [])
            where flag.int == 1 { suppressed.insert(ask.id) }
        }
        let now = nowMs()
        var cmds: [[RedisArg]] = []
        var queues: [String: [RedisArg]] = [:], groups: [String] = []
        var firstDue: [String: Int64] = [:]
        var deadlines: [RedisArg] = []
        for (entry, record) in zip(entries, records) {
            guard let record else {
                logger.error("submit entry for a message with no record", ("entry", entry.id))
                continue
            }
            let log = logger.with(("message_id", record.id))
            if record.state == .queued, settings.pools.byName[record.pool] == nil {
                log.warning("unknown ip pool", ("pool", record.pool))
                let detail: [String: any Sendable] = ["reason": "unknown ip pool \(record.pool)"]
                cmds += finalize(record, .bounced, state: .bounced, detail: detail)
            } else if record.state == .queued, suppressed.contains(record.id) {
                cmds += suppress(record, log)
            } else if record.state == .queued {
                let (due, expires) = firstDueAndDeadline(record, now: now)
                if expires != record.expiresMs {
                    cmds.append(["HSET", .text(keys.message(record.id)),
                                 .text(MessageField.expiresMs), .text(String(expires))])
                }
                if queues[record.group] == nil { groups.append(record.group) }
                queues[record.group, default: []] += [.text(String(due)), .text(record.id)]
                firstDue[record.group] = min(firstDue[record.group] ?? due, due)
                deadlines += [.text(String(expires)), .text(record.id)]
            }
        }
        if !deadlines.isEmpty { cmds.append(["ZADD", .text(keys.deadlines)] + deadlines) }
        for group in groups {
            cmds.append(["ZADD", .text(keys.groupQueue(group))] + queues[group, default: []])
            cmds.append(["ZADD", .text(keys.dueGroups), "LT",
                         .text(String(firstDue[group] ?? now)), .text(group)])
        }
        let stream = keys.stream(.submit)
        let ids = entries.map { RedisArg.text($0.id) }
        cmds.append(["XACK", .text(stream), .text(StreamName.submit.group)] + ids)
        _ = try await redis.transaction(cmds)
    }

    // MARK: Release

    /// Releases due messages group by group. The due index holds each group once, scored by
    /// when it may next send, so the cost of a pass grows with the groups that are due, not
    /// with all the groups there are.
    ///
    /// The deadline sweep (`expireOverdue`) runs in the same loop, so the messages the
    /// release script sets expired get their event from one task only.
    func releaseLoop(shutdown: Shutdown) async {
        var swept: Int64 = 0
        while !shutdown.isRequested && !Task.isCancelled {
            do {
                let now = clock()
                if now - swept >= Self.sweepEveryMs || now < swept {
                    swept = now
                    try await expireOverdue(nowMs: now)
                }
                let released = try await releaseDue()
                if released == 0 { try await Task.sleep(for: .milliseconds(20)) }
            } catch is CancellationError {
                return
            } catch {
                logger.error("release pass failed: \(error)")
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// How long a message held by its organisation's breaker waits before it is looked at
    /// again; short enough that a trial starts soon after the cool-down.
    var holdMs: Int64 { min(10_000, settings.breaker.coolDown.milliseconds) }

    func releaseDue() async throws -> Int {
        let now = clock()
        try await startDueTrials(nowMs: now)
        let due = try await redis.run("ZRANGEBYSCORE", keys.dueGroups, "-inf", String(now),
                                      "LIMIT", "0", "500")
        guard let groups = due.array, !groups.isEmpty else { return 0 }
        let active = try await activeIPs()
        var caps = try await warmupCaps(active, nowMs: now)
        var released = 0
        for value in groups {
            guard let group = value.string else { continue }
            let poolName = String(group.prefix(while: { $0 != ":" }))
            guard let ips = active[poolName] else {
                logger.error("group of an unknown pool in the due index", ("group", group))
                try await redis.run("ZREM", keys.dueGroups, group)
                continue
            }
            guard !ips.isEmpty else {
                // The reputation monitor took every IP of the pool out: its mail waits.
                try await redis.run("ZADD", keys.dueGroups, "XX", String(now + 1000), group)
                logger.debug("pool has no active IP; holding", ("group", group))
                continue
            }
            let domain = String(group.dropFirst(poolName.count + 1))
            let provider = Throttles.scope(provider(of: domain), domain: domain)
            let allowed: Set<String>?, rooms: [String: WarmupRoom]
            switch warmupChoice(ips, pool: poolName, provider: provider, caps: caps, nowMs: now) {
            case .send(let open, let r): (allowed, rooms) = (open, r)
            case .wait(let until, let reason):
                try await noteWarmupHold(group: group, reason: reason, nowMs: now)
                try await redis.run("ZADD", keys.dueGroups, "XX", "GT", String(until), group)
                continue
            }
            let (route, retryAt) = route(ips, pool: poolName, provider: provider,
                                         rooms: rooms, allowed: allowed, nowMs: now)
            guard let route else {
                // Every IP of the pool is at its rate or held for this provider: the group
                // waits, and never earlier than its first message is due.
                try await redis.run("ZADD", keys.dueGroups, "XX", "GT", String(retryAt), group)
                continue
            }
            let ip = route.high
            var capName = "", limit = ""
            if case .room(let l, let n) = rooms[ip.address] { (limit, capName) = (l, n) }
            let reply = try await redis.eval(
                Scripts.release, keys: releaseKeys(group, ip: ip, nowMs: now),
                args: releaseArgs(group, ip: ip, nowMs: now, provider: pauseName(provider),
                                  capName: capName, limit: limit, route: route))
            guard let outcome = reply.array?.first,
                  let used = try await isRelease(outcome, group: group, pool: poolName,
                                                 provider: provider, ips: [ip, route.low],
                                                 nowMs: now, charged: false)
            else { continue }
            released += 1
            if !capName.isEmpty && used == ip {
                caps[ip.address]?.sent[capName, default: 0] += 1
            }
            // The rest of the group in one round trip, where no IP has a warm-up cap to
            // count (a capped IP releases one message per pass).
            if settings.groupInterval == .zero && rooms.values.allSatisfy({ $0 == .warm }) {
                released += try await releaseBurst(group, pool: poolName, ips: ips,
                                                   provider: provider, nowMs: now)
            }
        }
        return released
    }

    /// Each pool's IPs that the reputation monitor leaves active (all of them when it has
    /// published nothing), read once per release pass.
    func activeIPs() async throws -> [String: [SourceIP]] {
        let names = Array(settings.pools.byName.keys)
        let published = try await redis.run(["MGET"] + names.map(keys.poolActive)).array ?? []
        var out: [String: [SourceIP]] = [:]
        for (i, name) in names.enumerated() {
            let value = i < published.count ? published[i].string : nil
            out[name] = ActiveIPs.usable(settings.pools.byName[name] ?? [], published: value)
        }
        return out
    }

    /// How many messages' entries of one batch are applied at once (see `consume`).
    static let applyConcurrency = 16

    /// Messages one group may release in one pass when TERN_GROUP_INTERVAL is 0.
    static let releaseBurst = 32

    func releaseKeys(_ group: String, ip: SourceIP, nowMs: Int64) -> [String] {
        [keys.groupQueue(group), keys.dueGroups, keys.groupPace(group), keys.stream(.ready),
         keys.heldOrgs, keys.warmupSent(ip.address, day: WarmupDay.text(ms: nowMs)),
         keys.orgCaps, keys.pauses, keys.groupDue(group), keys.deadlines, keys.expiring]
    }

    /// The provider name a pause gives: the profile's, `default` for every domain of none.
    func pauseName(_ scoped: ProviderProfile) -> String {
        scoped.name.hasPrefix("default:") ? "default" : scoped.name
    }

    /// `provider`: the group's provider profile name, which a pause may name. `capName` and
    /// `limit`: the warm-up cap the script counts the release against ("" for an IP without
    /// one). `route`: the warm IP for a message under the engagement threshold.
    func releaseArgs(_ group: String, ip: SourceIP, nowMs: Int64, provider: String,
                     capName: String = "", limit: String = "", route: EngagementRoute? = nil)
        -> [RedisArg]
    {
        var routing: [RedisArg] = ["", "", "", ""]
        if let route, route.routing, let threshold = settings.engagement.warmupThreshold {
            routing = [.text(String(threshold)), .text(route.low?.address ?? ""),
                       .text(route.low?.helo ?? ""),
                       .text(route.low == nil ? String(route.lowRetryMs) : "")]
        }
        return [.text(group), .text(String(nowMs)),
                .text(String(settings.groupInterval.milliseconds)), .text(ip.address),
                .text(ip.helo), .text(keys.message("")), .text(String(holdMs)), .text(capName),
                .text(limit)] + OrgCaps.scriptArgs(prefix: keys.orgSentPrefix, nowMs: nowMs)
            + [.text(provider), .text(keys.pauseHeldPrefix)]
            + engagementArgs.prefix(2) + routing + engagementArgs.suffix(1)
    }

    /// Reads one reply of the release script: notes a message the breaker holds, and for a
    /// released one counts it against the IP's throttle (unless `charged` at the pick
    /// already) and logs it. The IP of `ips` the message went from, nil when none went.
    func isRelease(_ reply: RedisValue, group: String, pool: String, provider: ProviderProfile,
                   ips: [SourceIP?], nowMs: Int64, charged: Bool) async throws -> SourceIP? {
        let parts = reply.array?.compactMap(\.string) ?? []
        if parts.first == "held", parts.count >= 4, parts[3] == "1" {
            try await noteHeld(id: parts[1], org: parts[2], cap: parts.count > 4 ? parts[4] : nil)
        }
        if parts.first == "paused", parts.count == 4, parts[3] == "1" {
            try await notePaused(id: parts[1], field: parts[2], nowMs: nowMs)
        }
        if parts.first == "expired", parts.count == 2 {
            let held = try await redis.run("HGET", keys.expiring, parts[1]).string
            if let held { try await finishExpiry(id: parts[1], held: held) }
        }
        guard parts.first == "released", parts.count == 4,
              let ip = ips.compactMap({ $0 }).first(where: { $0.address == parts[3] })
        else { return nil }
        metrics.releases.inc()
        if !charged {
            throttles.sent(ip: ip.address, pool: pool, provider: provider, nowMs: nowMs)
        }
        logger.info("released", ("message_id", parts[1]), ("group", group),
                    ("provider", provider.name), ("ip", ip.address), ("attempt", parts[2]))
        return ip
    }

    /// With no pace, the rest of a group's due messages go in one call of the release
    /// script rather than one per pass. Each still takes an IP the provider's throttle allows
    /// now (counted as sent at the pick, so the next pick sees it) and passes the script's
    /// checks. A pick whose message turns out held or gone, or that the call never reaches,
    /// is not given back: the IP waits one interval more than it had to, never less.
    func releaseBurst(_ group: String, pool: String, ips: [SourceIP],
                      provider: ProviderProfile, nowMs: Int64) async throws -> Int {
        let counts = try await redis.pipeline([
            ["ZCARD", .text(keys.groupDue(group))],
            ["ZCOUNT", .text(keys.groupQueue(group)), "-inf", .text(String(nowMs))],
        ])
        let due = try counts.reduce(0) { $0 + (try $1.get().int ?? 0) }
        var picked: [SourceIP] = []
        while picked.count < min(due, Self.releaseBurst - 1),
              let ip = throttles.pick(ips, pool: pool, provider: provider, nowMs: nowMs).ip {
            throttles.sent(ip: ip.address, pool: pool, provider: provider, nowMs: nowMs)
            picked.append(ip)
        }
        guard let first = picked.first else { return 0 }
        let more = picked.dropFirst().flatMap { [RedisArg.text($0.address), .text($0.helo)] }
        let reply = try await redis.eval(
            Scripts.release, keys: releaseKeys(group, ip: first, nowMs: nowMs),
            args: releaseArgs(group, ip: first, nowMs: nowMs, provider: pauseName(provider))
                + more)
        var count = 0
        for (outcome, ip) in zip(reply.array ?? [], picked) {
            if try await isRelease(outcome, group: group, pool: pool, provider: provider,
                                   ips: [ip], nowMs: nowMs, charged: true) != nil { count += 1 }
        }
        return count
    }

    // MARK: Results

    @Sendable func applyResult(_ entry: StreamEntry) async throws {
        try await applyResults([entry])
    }

    /// Results in two round trips however many there are: their records, then one
    /// transaction with every result's commands and one XACK for all the entries. A message
    /// with two results in the batch has them applied one after the other.
    @Sendable func applyResults(_ entries: [StreamEntry]) async throws {
        let ids = entries.map { $0[EntryField.id] }
        guard Set(ids.compactMap { $0 }).count == ids.compactMap({ $0 }).count else {
            for entry in entries { try await applyResults([entry]) }
            return
        }
        let records = try await loadAll(ids)
        var cmds: [[RedisArg]] = []
        var after: [() -> Void] = []
        var breakerOrgs: Set<String> = []
        for (entry, record) in zip(entries, records) {
            if let done = resultCommands(entry, record, into: &cmds, breakerOrgs: &breakerOrgs) {
                after.append(done)
            }
        }
        // Each organisation's breaker is saved once, as it stands after the whole batch:
        // encoding it (a minute's counts each) for every result was a tenth of the CPU.
        for org in breakerOrgs.sorted() { cmds += saveBreaker(org) }
        let stream = keys.stream(.results)
        cmds.append(["XACK", .text(stream), .text(StreamName.results.group)]
            + entries.map { RedisArg.text($0.id) })
        _ = try await redis.transaction(cmds)
        for done in after { done() }
    }

    /// Appends what one result changes to `cmds` (nothing for a malformed entry or a
    /// message without a record), but not the breaker whose counts it moved: its organisation
    /// goes into `breakerOrgs`, for the caller to save. Returns what to count and log once
    /// it is written.
    func resultCommands(_ entry: StreamEntry, _ record: Record?, into cmds: inout [[RedisArg]],
                        breakerOrgs: inout Set<String>) -> (() -> Void)?
    {
        let now = nowMs()
        guard entry[EntryField.id] != nil,
              let attempt = AttemptRecord(result: entry.fields, at: timestamp(ms: now))
        else {
            logger.critical("malformed results entry", ("entry", entry.id),
                            ("fields", "\(entry.fields)"))
            return nil
        }
        guard let record else { return nil }
        let id = record.id
        let log = logger.with(("message_id", id))
        cmds.append(["RPUSH", .text(keys.attempts(id)), .text(attempt.json)])
        cmds.append(["HSET", .text(keys.message(id)), .text(MessageField.lastReply),
                     .text(attempt.reply)])
        var detail: [String: any Sendable] = [
            "attempt": attempt.attempt, "code": attempt.code, "enhanced": attempt.enhanced,
            "reply": attempt.reply, "mx": attempt.mx, "ip": attempt.ip,
        ]
        let provider = provider(of: record.domain, learningFrom: attempt.mx, into: &cmds)
        let signal = ReplySignal.assess(code: attempt.code, enhanced: attempt.enhanced,
                                        text: attempt.reply, stage: attempt.stage,
                                        profile: provider)
        detail["provider"] = provider.name
        detail["signal"] = signal.rawValue
        detail.merge(engagementDetail(record)) { a, _ in a }
        detail.merge(attempt.timings?.detail ?? [:]) { a, _ in a }
        cmds += throttleChange(record, ip: attempt.ip,
                               provider: Throttles.scope(provider, domain: record.domain),
                               signal: signal,
                               reply: attempt.reply, nowMs: now)
        // A refusal of the sending IP is not the recipient's fault: the message waits for
        // another try (from another IP, or after the pause) instead of bouncing.
        let outcome = signal == .blocked ? AttemptOutcome.deferred : attempt.outcome
        let decision = record.state.isFinal
            ? nil
            : policy.decide(outcome: outcome, attempt: attempt.attempt, nowMs: now,
                            expiresMs: record.expiresMs, reply: attempt.reply,
                            ambiguousBefore: record.ambiguous)
        if attempt.outcome == .ambiguous {
            // Kept apart from a plain deferral or delivery in the history and the event.
            detail["ambiguous"] = true
            cmds.append(["HINCRBY", .text(keys.message(id)), .text(MessageField.ambiguous), "1"])
            if decision == .delivered {
                detail["note"] = "delivery unknown: the connection was lost after the final "
                    + "dot; not sent again after \(record.ambiguous) resend(s) "
                    + "(TERN_AMBIGUOUS_RETRIES)"
            }
        }
        switch decision {
        case nil:
            log.notice("result for a message already final", ("state", record.state.rawValue))
        case .delivered:
            cmds += finalize(record, .delivered, state: .delivered, detail: detail)
            cmds += breakerOutcome(org: record.org, .delivered, nowMs: now, save: false)
            breakerOrgs.insert(record.org)
        case .bounced:
            cmds += finalize(record, .bounced, state: .bounced, detail: detail)
            cmds += breakerOutcome(org: record.org, .bounced, nowMs: now, save: false)
            breakerOrgs.insert(record.org)
            if signal == .recipient {
                cmds.append(["SADD", .text(keys.suppressions(record.org)),
                             .text(record.listKey)])
            }
        case .expired:
            cmds += finalize(record, .expired, state: .expired, detail: detail)
        case .retry(let at):
            detail["next_attempt_at"] = timestamp(ms: at)
            cmds.append(["HSET", .text(keys.message(id)), .text(MessageField.state),
                         .text(MessageState.deferred.rawValue)])
            cmds.append(["ZADD", .text(keys.groupQueue(record.group)), .text(String(at)),
                         .text(id)])
            cmds.append(["ZADD", .text(keys.dueGroups), "LT", .text(String(at)),
                         .text(record.group)])
            cmds += event(record, .deferred, detail: detail)
        }
        let metrics = self.metrics
        return {
            metrics.attempt(attempt, outcome: attempt.outcome, provider: provider.name)
            log.info("attempt \(attempt.outcome.rawValue)", ("domain", record.domain),
                     ("mx", attempt.mx), ("ip", attempt.ip), ("code", String(attempt.code)),
                     ("decision", decision.map { "\($0)" } ?? "none"))
        }
    }

    // MARK: Inbound reports

    /// A classified report (docs/bounces.md): a hard bounce ends the message as `bounced`
    /// (also one already delivered: the remote accepted, then failed it) and suppresses the
    /// address; a complaint is a `complained` event and suppresses the address; everything
    /// else (soft bounces, delays, feedback, auto-replies) only goes into the history. The
    /// same report (message, kind, recipient) applied twice counts once.
    @Sendable func applyInbound(_ entry: StreamEntry) async throws {
        guard let id = entry[EntryField.id], let record = try await load(id) else {
            logger.notice("report for an unknown message", ("entry", entry.id))
            _ = try await redis.transaction(ack(.inbound, entry))
            return
        }
        let kind = entry[EntryField.kind] ?? "bounce"
        // Entries from a contract-1 receiver carry only failed recipients and no severity.
        let severity = entry[EntryField.severity] ?? (kind == "bounce" ? "hard" : "soft")
        let rcpt = entry[EntryField.recipient] ?? ""
        let seen = keys.inboundSeen(id: id, kind: kind, recipient: rcpt)
        let log = logger.with(("message_id", id))
        // Only one scheduler runs, so nothing applies the same report between this check
        // and the transaction that marks it.
        if try await redis.run("EXISTS", seen).int == 1 {
            log.info("duplicate report ignored", ("kind", kind), ("rcpt", rcpt))
            _ = try await redis.transaction(ack(.inbound, entry))
            return
        }
        var detail: [String: any Sendable] = ["source": kind, "severity": severity]
        for (key, field) in [("reason", EntryField.reason), ("status", EntryField.status),
                             ("diagnostic", EntryField.diagnostic),
                             ("reporter", EntryField.reporter), ("rcpt", EntryField.recipient),
                             ("feedback_type", EntryField.feedbackType),
                             ("dkim", EntryField.dkim), ("dkim_domain", EntryField.dkimDomain)] {
            // status, diagnostic and reporter are always there, as in contract 1.
            let always = ["status", "diagnostic", "reporter"].contains(key)
            if let value = entry[field], !value.isEmpty || always { detail[key] = value }
        }
        let ttl = String(settings.lifetime.recordTTL.milliseconds / 1000)
        var cmds: [[RedisArg]] = [["SET", .text(seen), "1", "EX", .text(ttl)]]
        let suppress: [RedisArg] = ["SADD", .text(keys.suppressions(record.org)),
                                    .text(record.listKey)]
        switch (kind, severity) {
        case ("bounce", "hard"):
            if !record.state.isFinal || record.state == .delivered {
                cmds += finalize(record, .bounced, state: .bounced, detail: detail)
            } else {
                cmds.append(note(record, detail))
            }
            cmds.append(suppress)
            cmds += breakerOutcome(org: record.org, .bounced, nowMs: nowMs())
            log.info("hard bounce", ("status", entry[EntryField.status] ?? ""),
                     ("reason", entry[EntryField.reason] ?? ""))
        case ("complaint", _):
            cmds += event(record, .complained, detail: detail)
            cmds.append(suppress)
            cmds += breakerOutcome(org: record.org, .complained, nowMs: nowMs())
            log.info("complaint", ("feedback_type", entry[EntryField.feedbackType] ?? ""))
        default:
            cmds.append(note(record, detail))
            log.debug("report noted", ("kind", kind), ("severity", severity))
        }
        cmds += ack(.inbound, entry)
        _ = try await redis.transaction(cmds)
        metrics.inboundBounces.inc()
    }

    var consumedStreams: [ConsumedStream] {
        [StreamName.submit, .results, .inbound].map {
            ConsumedStream(name: $0.rawValue, key: keys.stream($0), group: $0.group)
        }
    }

    /// /metrics and /health on TERN_METRICS_LISTEN, with the scheduler's three streams.
    func serveMetrics(shutdown: Shutdown) async {
        let endpoint = MetricsEndpoint(registry: metrics.registry, redis: redis,
                                       streams: consumedStreams)
        await endpoint.serve(listen: settings.metricsListen, shutdown: shutdown, logger: logger)
    }

    /// A history entry that is not an event: a report worth showing in the message's story
    /// but not worth a webhook (a soft bounce, a delay notice, an auto-reply).
    func note(_ r: Record, _ detail: [String: any Sendable]) -> [RedisArg] {
        var object: [String: any Sendable] = ["event": "report", "at": timestamp(ms: nowMs())]
        for (k, v) in detail { object[k] = v }
        return ["RPUSH", .text(keys.history(r.id)), .text(SortedJSON.encode(object))]
    }

    /// The `events` entry of an event about no single message (an IP paused, a breaker
    /// opened): its kind and the JSON of `body` with the kind in it.
    func systemEvent(_ kind: EventKind, _ body: [String: any Sendable]) -> [RedisArg] {
        var object = body
        object["event"] = kind.rawValue
        return xadd(keys.stream(.events), [(EntryField.event, kind.rawValue),
                                           (EntryField.json, SortedJSON.encode(object))],
                    maxLen: 1_000_000)
    }

    // MARK: Records and events

    struct Record {
        let id: String
        let org: String
        let pool: String
        let domain: String
        let from: String
        let to: String
        let metadata: String
        let tags: String
        let expiresMs: Int64
        let createdMs: Int64
        /// When the client asked the message to go; 0 for at once.
        let sendAtMs: Int64
        let state: MessageState
        /// The score given by the API or recorded for the address; nil: the default.
        var engagement: Int? = nil
        var engagementSource = ""
        /// Earlier attempts whose outcome was ambiguous.
        var ambiguous = 0
        /// The recipient's `EmailAddress.listKey` as the API wrote it; "" on older records.
        var recipientKey = ""
        var group: String { pool + ":" + domain }

        /// The recipient's key in suppression lists.
        var listKey: String {
            recipientKey.isEmpty ? EmailAddress.listKey(of: to) : recipientKey
        }

        /// What a suppression list may hold for the recipient (`EmailAddress
        /// .suppressionMembers`), without parsing the address again when the API gave its key.
        var suppressionMembers: [String] {
            guard !recipientKey.isEmpty else { return EmailAddress.suppressionMembers(of: to) }
            let given = to.lowercased()
            return given == recipientKey ? [recipientKey] : [recipientKey, given]
        }
    }

    static let recordFields = [
        MessageField.org, MessageField.pool, MessageField.domain, MessageField.from,
        MessageField.recipient, MessageField.metadata, MessageField.expiresMs,
        MessageField.state, MessageField.createdMs, MessageField.tags,
        MessageField.sendAtMs, MessageField.engagement, MessageField.engagementSource,
        MessageField.ambiguous, MessageField.recipientKey,
    ]

    func load(_ id: String) async throws -> Record? {
        let v = try await redis.run(["HMGET", keys.message(id)] + Self.recordFields)
        return record(id, v)
    }

    /// The records of many messages in one round trip (nil where there is none).
    func loadAll(_ ids: [String?]) async throws -> [Record?] {
        let fields = Self.recordFields.map { RedisArg.text($0) }
        let known = ids.compactMap { $0 }
        let replies = try await redis.pipeline(known.map {
            ["HMGET", .text(keys.message($0))] + fields
        })
        var next = zip(known, replies).makeIterator()
        return try ids.map { id in
            guard id != nil, let (id, reply) = next.next() else { return nil }
            return record(id, try reply.get())
        }
    }

    func record(_ id: String, _ reply: RedisValue) -> Record? {
        let v = reply.array ?? []
        guard v.count == Self.recordFields.count,
              let state = v[7].string.flatMap(MessageState.init(rawValue:))
        else { return nil }
        return Record(id: id, org: v[0].string ?? "", pool: v[1].string ?? "",
                      domain: v[2].string ?? "", from: v[3].string ?? "", to: v[4].string ?? "",
                      metadata: v[5].string ?? "{}", tags: v[9].string ?? "[]",
                      expiresMs: Int64(v[6].int ?? 0), createdMs: Int64(v[8].int ?? 0),
                      sendAtMs: Int64(v[10].int ?? 0), state: state,
                      engagement: v[11].string.flatMap { Int($0) },
                      engagementSource: v[12].string ?? "", ambiguous: v[13].int ?? 0,
                      recipientKey: v[14].string ?? "")
    }

    /// Commands that append `kind` to the message's history and to `events`.
    func event(_ r: Record, _ kind: EventKind, detail: [String: any Sendable]) -> [[RedisArg]] {
        let e = MessageEvent(id: r.id, event: kind, atMs: nowMs(), org: r.org, from: r.from,
                             to: r.to, metadataJSON: r.metadata, tagsJSON: r.tags,
                             detail: detail).documents
        return [
            ["RPUSH", .text(keys.history(r.id)), .text(e.history)],
            xadd(keys.stream(.events), [(EntryField.id, r.id), (EntryField.event, kind.rawValue),
                                        (EntryField.json, e.json)], maxLen: 1_000_000),
        ]
    }

    /// Commands that put a message in its final state: the event, its content dropped, and a
    /// TTL on its keys.
    func finalize(_ r: Record, _ kind: EventKind, state: MessageState,
                  detail: [String: any Sendable]) -> [[RedisArg]] {
        let ttl = RedisArg.text(String(settings.lifetime.recordTTL.milliseconds / 1000))
        // The content goes at once: no sender reads a final message, and the record that
        // stays for TERN_RECORD_TTL would otherwise hold every message ever sent.
        let record = RedisArg.text(keys.message(r.id))
        return [["HSET", record, .text(MessageField.state), .text(state.rawValue)],
                ["HDEL", record, .text(MessageField.body)],
                ["ZREM", .text(keys.deadlines), .text(r.id)],
                ["HINCRBY", .text(keys.finalCounts), .text(state.rawValue), "1"]]
            + event(r, kind, detail: detail)
            + [keys.message(r.id), keys.history(r.id), keys.attempts(r.id)].map {
                ["EXPIRE", .text($0), ttl]
            }
    }
}

// MARK: Providers, throttles and suppression

extension SchedulerDaemon {
    /// The provider of a recipient domain: by its name, else as learned from the MX host that
    /// answered for it, else the default profile.
    func provider(of domain: String) -> ProviderProfile {
        let catalog = settings.providers
        if let known = catalog.provider(forDomain: domain) { return known }
        let learned = learnedProviders.name(of: domain)
        return learned.flatMap(catalog.profile(named:)) ?? catalog.fallback
    }

    /// As `provider(of:)`, first learning the domain's provider from `mx` when its name does
    /// not tell; the learned name is saved with the result's other commands.
    func provider(of domain: String, learningFrom mx: String, into cmds: inout [[RedisArg]])
        -> ProviderProfile
    {
        let catalog = settings.providers
        if let known = catalog.provider(forDomain: domain) { return known }
        guard !mx.isEmpty else { return provider(of: domain) }
        let found = catalog.provider(forMXHosts: [mx]) ?? catalog.fallback
        if learnedProviders.learn(domain, found.name) {
            cmds.append(["HSET", .text(keys.domainProviders), .text(domain), .text(found.name)])
        }
        return found
    }

    func restoreThrottles() async throws {
        let saved = try await redis.run("HGETALL", keys.throttles).fieldMap
        throttles.restore(saved)
        let providers = try await redis.run("HGETALL", keys.domainProviders).fieldMap
        learnedProviders.restore(providers)
        if !saved.isEmpty {
            logger.info("throttles restored", ("count", String(saved.count)))
        }
    }

    /// Commands that save a changed rate, with an `ip_paused` event when the provider
    /// refused the IP.
    func throttleChange(_ r: Record, ip: String, provider: ProviderProfile, signal: ReplySignal,
                        reply: String, nowMs: Int64) -> [[RedisArg]] {
        guard let rate = throttles.record(ip: ip, provider: provider, signal: signal,
                                          reply: reply, nowMs: nowMs),
              let json = try? JSONEncoder().encode(rate)
        else { return [] }
        let log = logger.with(("ip", ip), ("provider", provider.name),
                              ("state", rate.state.rawValue),
                              ("rate", String(format: "%.1f", rate.rate)), ("reason", rate.reason))
        var cmds: [[RedisArg]] = [["HSET", .text(keys.throttles),
                                   .text(Throttles.key(ip: ip, provider: provider.name)),
                                   .text(String(decoding: json, as: UTF8.self))]]
        if signal == .blocked {
            log.warning("provider refuses the sending ip: paused")
            cmds.append(systemEvent(.ipPaused, [
                "ip": ip, "provider": provider.name, "until": timestamp(ms: rate.holdUntilMs),
                "reason": rate.reason, "message_id": r.id,
            ]))
        } else {
            log.notice("throttle changed")
        }
        return cmds
    }

    func isSuppressed(_ r: Record) async throws -> Bool {
        let found = try await redis.run(["SMISMEMBER", keys.suppressions(r.org)]
                                        + r.suppressionMembers)
        return found.array?.contains { $0.int == 1 } == true
    }
}

// MARK: Circuit breakers

extension SchedulerDaemon {
    /// Commands that save an organisation's breaker after an outcome (unless `save` is false:
    /// the caller saves it later in the same transaction) and, when its state changed, hold
    /// or free its messages and raise the event.
    func breakerOutcome(org: String, _ outcome: CircuitBreaker.Outcome, nowMs: Int64,
                        save: Bool = true) -> [[RedisArg]]
    {
        breakerCommands(breakers.record(org: org, outcome, nowMs: nowMs), save: save)
    }

    /// The command that writes an organisation's breaker as it stands to `breakers`.
    func saveBreaker(_ org: String) -> [[RedisArg]] {
        breakers.breaker(of: org).map { save(org, $0) } ?? []
    }

    private func save(_ org: String, _ breaker: CircuitBreaker) -> [[RedisArg]] {
        guard let json = try? JSONEncoder().encode(breaker) else { return [] }
        return [["HSET", .text(keys.breakers), .text(org),
                 .text(String(decoding: json, as: UTF8.self))]]
    }

    func breakerCommands(_ change: Breakers.Change, save: Bool = true) -> [[RedisArg]] {
        var cmds = save ? self.save(change.org, change.breaker) : []
        guard let state = change.newState else { return cmds }
        let log = logger.with(("org", change.org), ("state", state.rawValue),
                              ("reason", change.breaker.reason))
        switch state {
        case .open:
            log.warning("circuit breaker opened: the organisation's mail waits")
            cmds.append(["HSET", .text(keys.heldOrgs), .text(change.org), "0"])
        case .halfOpen:
            log.notice("circuit breaker half-open: a trial goes out")
            cmds.append(["HSET", .text(keys.heldOrgs), .text(change.org),
                         .text(String(settings.breaker.trialSize))])
        case .closed:
            log.notice("circuit breaker closed")
            cmds.append(["HDEL", .text(keys.heldOrgs), .text(change.org)])
        }
        if state != .halfOpen {
            cmds.append(systemEvent(state == .open ? .breakerOpened : .breakerClosed, [
                "org": change.org, "reason": change.breaker.reason, "at": timestamp(ms: nowMs()),
            ]))
        }
        return cmds
    }

    func startDueTrials(nowMs: Int64) async throws {
        for change in breakers.startDueTrials(nowMs: nowMs) {
            _ = try await redis.transaction(breakerCommands(change))
        }
    }

    /// The first time a breaker, a cap or a pause holds a message, its history says so.
    func noteHeld(id: String, org: String, cap: String? = nil) async throws {
        if cap == "pause" {
            return try await notePaused(id: id, field: Pause.field(.org, org), nowMs: nowMs())
        }
        let reason = cap.map {
            "organisation \(org) reached its \($0 == "day" ? "daily" : "hourly") cap: "
                + "waiting for the next \($0)"
        }
            ?? "circuit breaker of organisation \(org) is open: waiting"
        let entry = MessageEvent(id: id, event: .held, atMs: nowMs(), org: org, from: "",
                                 to: "", metadataJSON: "{}", detail: ["reason": reason])
        try await redis.run("RPUSH", keys.history(id), entry.historyJSON)
    }
}

// MARK: Pauses

extension SchedulerDaemon {
    /// The first time a pause holds a message, its history says which and why.
    func notePaused(id: String, field: String, nowMs: Int64) async throws {
        let json = try await redis.run("HGET", keys.pauses, field).string ?? "{}"
        let pause = try? JSONDecoder().decode(Pause.self, from: Data(json.utf8))
        let reason = pause?.holdReason ?? "\(field) is paused: waiting for a resume"
        let org = try await redis.run("HGET", keys.message(id), MessageField.org).string ?? ""
        let entry = MessageEvent(id: id, event: .held, atMs: nowMs, org: org, from: "", to: "",
                                 metadataJSON: "{}", detail: ["reason": reason, "pause": field])
        try await redis.run("RPUSH", keys.history(id), entry.historyJSON)
        logger.info("held by a pause", ("message_id", id), ("pause", field))
    }
}
