// The scheduler: files accepted messages under their group, releases each one when its group
// allows, and turns attempt results and bounces into states, retries and events.
//
// Four loops share one Redis client: intake (`submit`), release (the due index), results
// (`results`) and inbound (`inbound`). Each stream entry is applied and acknowledged in one
// MULTI/EXEC, so a crash at any point either applies an entry completely or leaves it pending
// for this consumer's next start (or for another scheduler's claim).

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
    let roundRobin = RoundRobin()

    public init(settings: SchedulerSettings, logger: Logger) throws {
        self.settings = settings
        self.logger = logger
        self.redis = try RedisClient(url: settings.common.redisURL)
        self.keys = Keys(prefix: settings.common.redisPrefix)
        self.policy = RetryPolicy(delays: settings.retryDelays)
    }

    public func run(shutdown: Shutdown, ready: @escaping @Sendable (String) -> Void) async throws {
        for stream in [StreamName.submit, .results, .inbound] {
            try await redis.ensureGroup(stream: keys.stream(stream), group: stream.group)
        }
        ready("scheduling \(settings.pools.byName.count) pool(s)")
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await consume(.submit, shutdown: shutdown, apply: intake) }
            group.addTask { await consume(.results, shutdown: shutdown, apply: applyResult) }
            group.addTask { await consume(.inbound, shutdown: shutdown, apply: applyInbound) }
            group.addTask { await releaseLoop(shutdown: shutdown) }
            await shutdown.wait()
            group.cancelAll()
        }
    }

    // MARK: Consuming streams

    /// Reads one stream through the consumer group until shutdown: first what this consumer
    /// was given before (pending after a crash), then new entries, and from time to time the
    /// entries a dead consumer left behind.
    func consume(_ stream: StreamName, shutdown: Shutdown,
                 apply: @escaping @Sendable (StreamEntry) async throws -> Void) async {
        let name = keys.stream(stream)
        let consumer = settings.common.instance
        var failures: [String: Int] = [:]
        var lastClaim = ContinuousClock.now
        var pendingFirst = true
        while !shutdown.isRequested && !Task.isCancelled {
            do {
                var entries = try await redis.readGroup(
                    stream: name, group: stream.group, consumer: consumer, count: 100,
                    block: pendingFirst ? nil : .seconds(1), pending: pendingFirst)
                if pendingFirst && entries.isEmpty {
                    pendingFirst = false
                    continue
                }
                if ContinuousClock.now - lastClaim > settings.claimIdle / 2 {
                    lastClaim = .now
                    entries += try await redis.claimStale(
                        stream: name, group: stream.group, consumer: consumer,
                        minIdle: settings.claimIdle, count: 100)
                }
                for (entry, error) in await applyAll(entries, apply) {
                    guard let error else {
                        failures[entry.id] = nil
                        continue
                    }
                    failures[entry.id, default: 0] += 1
                    try await giveUpIfPoisoned(entry, stream: stream, failures: failures,
                                               error: error)
                    pendingFirst = true
                }
            } catch is CancellationError {
                return
            } catch IOError.cancelled {
                return
            } catch {
                logger.error("reading \(stream.rawValue) failed: \(error)")
                pendingFirst = true
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// How many messages' entries of one batch are applied at once. Each costs a few Redis
    /// round trips, so one at a time capped the whole scheduler at the round-trip rate.
    static let applyConcurrency = 16

    /// Applies a batch: entries of one message in stream order, different messages side by
    /// side. Returns each entry with its error, if it failed.
    func applyAll(_ entries: [StreamEntry],
                  _ apply: @escaping @Sendable (StreamEntry) async throws -> Void)
        async -> [(StreamEntry, (any Error)?)]
    {
        var byMessage: [String: [StreamEntry]] = [:]
        var order: [String] = []
        for e in entries {
            let id = e[EntryField.id] ?? e.id
            if byMessage[id] == nil { order.append(id) }
            byMessage[id, default: []].append(e)
        }
        return await withTaskGroup(of: [(StreamEntry, (any Error)?)].self) { group in
            var out: [(StreamEntry, (any Error)?)] = []
            var next = order.makeIterator()
            func start() -> Bool {
                guard let id = next.next(), let list = byMessage[id] else { return false }
                group.addTask {
                    var done: [(StreamEntry, (any Error)?)] = []
                    for e in list {
                        do { try await apply(e); done.append((e, nil)) }
                        catch { done.append((e, error)) }
                    }
                    return done
                }
                return true
            }
            for _ in 0..<Self.applyConcurrency where start() {}
            while let done = await group.next() {
                out += done
                _ = start()
            }
            return out
        }
    }

    /// An entry that fails again and again is a bug in whoever wrote it; it is logged whole
    /// and acknowledged so that it cannot stop the stream behind it.
    private func giveUpIfPoisoned(_ entry: StreamEntry, stream: StreamName, failures: [String: Int],
                                  error: any Error) async throws {
        let count = failures[entry.id] ?? 0
        guard count >= 5 else {
            logger.warning("applying \(stream.rawValue) entry failed, will retry: \(error)",
                           ("entry", entry.id), ("message_id", entry[EntryField.id] ?? ""))
            return
        }
        logger.critical("dropping \(stream.rawValue) entry after \(count) failures: \(error)",
                        ("entry", entry.id), ("fields", "\(entry.fields)"))
        _ = try await redis.transaction(ack(stream, entry))
    }

    func ack(_ stream: StreamName, _ entry: StreamEntry) -> [[RedisArg]] {
        let name = keys.stream(stream)
        return [["XACK", .text(name), .text(stream.group), .text(entry.id)],
                ["XDEL", .text(name), .text(entry.id)]]
    }

    // MARK: Intake

    @Sendable func intake(_ entry: StreamEntry) async throws {
        guard let id = entry[EntryField.id], let record = try await load(id) else {
            logger.error("submit entry for a message with no record", ("entry", entry.id))
            _ = try await redis.transaction(ack(.submit, entry))
            return
        }
        let log = logger.with(("message_id", id))
        guard settings.pools.byName[record.pool] != nil else {
            log.warning("unknown ip pool", ("pool", record.pool))
            let detail: [String: any Sendable] = ["reason": "unknown ip pool \(record.pool)"]
            var cmds = finalize(record, .bounced, state: .bounced, detail: detail)
            cmds += ack(.submit, entry)
            _ = try await redis.transaction(cmds)
            return
        }
        let now = nowMs()
        var cmds: [[RedisArg]] = []
        if record.state == .queued {
            // The scheduler owns the retry policy, so it sets the deadline from its own
            // maximum age (a message's `expires_ms`, when the API gave one, may only shorten it).
            let limit = record.createdMs + settings.lifetime.maxAge.milliseconds
            let expires = record.expiresMs > 0 ? min(record.expiresMs, limit) : limit
            cmds.append(["HSET", .text(keys.message(id)), .text(MessageField.expiresMs),
                         .text(String(expires))])
            cmds.append(["ZADD", .text(keys.groupQueue(record.group)), .text(String(now)),
                         .text(id)])
            cmds.append(["ZADD", .text(keys.dueGroups), "LT", .text(String(now)),
                         .text(record.group)])
        }
        cmds += ack(.submit, entry)
        _ = try await redis.transaction(cmds)
        log.debug("queued", ("group", record.group))
    }

    // MARK: Release

    /// Releases due messages group by group. The due index holds each group once, scored by
    /// when it may next send, so the cost of a pass grows with the groups that are due, not
    /// with all the groups there are.
    func releaseLoop(shutdown: Shutdown) async {
        while !shutdown.isRequested && !Task.isCancelled {
            do {
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

    func releaseDue() async throws -> Int {
        let now = nowMs()
        let due = try await redis.run("ZRANGEBYSCORE", keys.dueGroups, "-inf", String(now),
                                      "LIMIT", "0", "500")
        var released = 0
        for value in due.array ?? [] {
            guard let group = value.string else { continue }
            let poolName = String(group.prefix(while: { $0 != ":" }))
            guard let ips = settings.pools.byName[poolName] else {
                logger.error("group of an unknown pool in the due index", ("group", group))
                try await redis.run("ZREM", keys.dueGroups, group)
                continue
            }
            let ip = ips[roundRobin.next(poolName) % ips.count]
            let reply = try await redis.eval(
                Scripts.release,
                keys: [keys.groupQueue(group), keys.dueGroups, keys.groupPace(group),
                       keys.stream(.ready)],
                args: [.text(group), .text(String(now)),
                       .text(String(settings.groupInterval.milliseconds)), .text(ip.address),
                       .text(ip.helo), .text(keys.message(""))])
            var replies = [(reply, ip)]
            if settings.groupInterval == .zero, reply.array?.first?.string == "released" {
                // No pace: the rest of a due burst goes in one round trip, not one per pass.
                let more = (1..<Self.releaseBurst).map { _ in
                    ips[roundRobin.next(poolName) % ips.count]
                }
                let sha = RedisArg.text(Scripts.release.sha)
                let calls: [[RedisArg]] = more.map { ip in
                    ["EVALSHA", sha, "4", .text(keys.groupQueue(group)), .text(keys.dueGroups),
                     .text(keys.groupPace(group)), .text(keys.stream(.ready)), .text(group),
                     .text(String(now)), "0", .text(ip.address), .text(ip.helo),
                     .text(keys.message(""))]
                }
                replies += zip(try await redis.pipeline(calls), more).map { ($0, $1) }
            }
            for (reply, ip) in replies {
                let parts = reply.array?.compactMap(\.string) ?? []
                if parts.first == "released", parts.count == 3 {
                    released += 1
                    logger.info("released", ("message_id", parts[1]), ("group", group),
                                ("ip", ip.address), ("attempt", parts[2]))
                }
            }
        }
        return released
    }

    /// Messages one group may release in one pass when TERN_GROUP_INTERVAL is 0.
    static let releaseBurst = 32

    // MARK: Results

    @Sendable func applyResult(_ entry: StreamEntry) async throws {
        let now = nowMs()
        guard let id = entry[EntryField.id],
              let attempt = AttemptRecord(result: entry.fields, at: timestamp(ms: now))
        else {
            logger.critical("malformed results entry", ("entry", entry.id),
                            ("fields", "\(entry.fields)"))
            _ = try await redis.transaction(ack(.results, entry))
            return
        }
        guard let record = try await load(id) else {
            _ = try await redis.transaction(ack(.results, entry))
            return
        }
        let log = logger.with(("message_id", id))
        let attemptJSON = String(decoding: try JSONEncoder().encode(attempt), as: UTF8.self)
        var cmds: [[RedisArg]] = [
            ["RPUSH", .text(keys.attempts(id)), .text(attemptJSON)],
            ["HSET", .text(keys.message(id)), .text(MessageField.lastReply),
             .text(attempt.reply)],
        ]
        var detail: [String: any Sendable] = [
            "attempt": attempt.attempt, "code": attempt.code, "enhanced": attempt.enhanced,
            "reply": attempt.reply, "mx": attempt.mx, "ip": attempt.ip,
        ]
        let decision = record.state.isFinal
            ? nil
            : policy.decide(outcome: attempt.outcome, attempt: attempt.attempt, nowMs: now,
                            expiresMs: record.expiresMs)
        switch decision {
        case nil:
            log.notice("result for a message already final", ("state", record.state.rawValue))
        case .delivered:
            cmds += finalize(record, .delivered, state: .delivered, detail: detail)
        case .bounced:
            cmds += finalize(record, .bounced, state: .bounced, detail: detail)
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
        cmds += ack(.results, entry)
        _ = try await redis.transaction(cmds)
        log.info("attempt \(attempt.outcome.rawValue)", ("domain", record.domain),
                 ("mx", attempt.mx), ("ip", attempt.ip), ("code", String(attempt.code)),
                 ("decision", decision.map { "\($0)" } ?? "none"))
    }

    // MARK: Inbound bounces

    @Sendable func applyInbound(_ entry: StreamEntry) async throws {
        guard let id = entry[EntryField.id], let record = try await load(id) else {
            logger.notice("bounce for an unknown message", ("entry", entry.id))
            _ = try await redis.transaction(ack(.inbound, entry))
            return
        }
        var cmds: [[RedisArg]] = []
        // A message can bounce after it was delivered (the remote accepted, then failed
        // it); a message that already ended otherwise keeps its first final state.
        if !record.state.isFinal || record.state == .delivered {
            let detail: [String: any Sendable] = [
                "source": entry[EntryField.kind] ?? "bounce",
                "status": entry[EntryField.status] ?? "",
                "diagnostic": entry[EntryField.diagnostic] ?? "",
                "reporter": entry[EntryField.reporter] ?? "",
            ]
            cmds += finalize(record, .bounced, state: .bounced, detail: detail)
            logger.info("asynchronous bounce", ("message_id", id),
                        ("status", entry[EntryField.status] ?? ""))
        }
        cmds += ack(.inbound, entry)
        _ = try await redis.transaction(cmds)
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
        let expiresMs: Int64
        let createdMs: Int64
        let state: MessageState
        var group: String { pool + ":" + domain }
    }

    func load(_ id: String) async throws -> Record? {
        let f = [MessageField.org, MessageField.pool, MessageField.domain, MessageField.from,
                 MessageField.recipient, MessageField.metadata, MessageField.expiresMs,
                 MessageField.state, MessageField.createdMs]
        let v = try await redis.run(["HMGET", keys.message(id)] + f).array ?? []
        guard v.count == f.count, let state = v[7].string.flatMap(MessageState.init(rawValue:))
        else { return nil }
        return Record(id: id, org: v[0].string ?? "", pool: v[1].string ?? "",
                      domain: v[2].string ?? "", from: v[3].string ?? "", to: v[4].string ?? "",
                      metadata: v[5].string ?? "{}", expiresMs: Int64(v[6].int ?? 0),
                      createdMs: Int64(v[8].int ?? 0), state: state)
    }

    /// Commands that append `kind` to the message's history and to `events`.
    func event(_ r: Record, _ kind: EventKind, detail: [String: any Sendable]) -> [[RedisArg]] {
        let e = MessageEvent(id: r.id, event: kind, atMs: nowMs(), org: r.org, from: r.from,
                             to: r.to, metadataJSON: r.metadata, detail: detail)
        return [
            ["RPUSH", .text(keys.history(r.id)), .text(e.historyJSON)],
            xadd(keys.stream(.events), [(EntryField.id, r.id), (EntryField.event, kind.rawValue),
                                        (EntryField.json, e.json)], maxLen: 1_000_000),
        ]
    }

    /// Commands that put a message in its final state: the event, and a TTL on its keys.
    func finalize(_ r: Record, _ kind: EventKind, state: MessageState,
                  detail: [String: any Sendable]) -> [[RedisArg]] {
        let ttl = RedisArg.text(String(settings.lifetime.recordTTL.milliseconds / 1000))
        return [["HSET", .text(keys.message(r.id)), .text(MessageField.state),
                 .text(state.rawValue)]]
            + event(r, kind, detail: detail)
            + [keys.message(r.id), keys.history(r.id), keys.attempts(r.id)].map {
                ["EXPIRE", .text($0), ttl]
            }
    }
}

/// Spreads a pool's messages over its IPs in turn.
final class RoundRobin: Sendable {
    private let counters = Mutex<[String: Int]>([:])

    func next(_ pool: String) -> Int {
        counters.withLock { c in
            defer { c[pool, default: 0] &+= 1 }
            return c[pool, default: 0]
        }
    }
}
