// Webhook deliveries in Redis: what is waiting, what is being posted, what was given up.
// Every change is one Lua script, so a process killed at any moment leaves a state another
// process (or its own restart) carries on from; nothing lives only in memory.
//
// Per endpoint E, under the key prefix:
//
//   wh:E:q:<order key>  sorted set, score 0: the waiting events of one message (or IP, or
//                       organisation) as sortable stream ids; the first is the one to post
//   wh:E:due            sorted set: order keys scored by when their first event may go (ms);
//                       a key being posted is scored at the end of its lease
//   wh:E:body           hash: sortable id -> the body to post
//   wh:E:try            hash: sortable id -> "<failures> <first failure ms>"
//   wh:E:failed         hash: sortable id -> JSON of a given-up delivery, body included
//   wh:E:failed:ids     sorted set, score 0: the same ids, oldest first, for trimming
//   wh:E:stats          hash: delivered, failed, last_success_ms, last_error, last_error_ms
//
// Order: an event is posted only once it is the first of its key's queue, and only once no
// `events` entry before it is still pending in the `webhooks` group (read by some API process
// and not yet fanned out). Together these mean a later event of a message never overtakes an
// earlier one, whichever process read which entry and whatever died on the way.

import Foundation
import TernCore
import TernMail

struct WebhookStore: Sendable {
    let redis: RedisClient
    let keys: Keys

    /// The keys of one endpoint.
    struct EndpointKeys: Sendable {
        let base: String
        init(_ keys: Keys, _ endpoint: String) { base = keys.prefix + "wh:" + endpoint + ":" }
        var due: String { base + "due" }
        var body: String { base + "body" }
        var tries: String { base + "try" }
        var failed: String { base + "failed" }
        var failedIDs: String { base + "failed:ids" }
        var stats: String { base + "stats" }
        var queuePrefix: String { base + "q:" }
        func queue(_ orderKey: String) -> String { queuePrefix + orderKey }
    }

    func endpointKeys(_ name: String) -> EndpointKeys { EndpointKeys(keys, name) }

    // MARK: Fan-out

    /// Puts one `events` entry in the queues of the endpoints that want it and acknowledges
    /// it, in one step. An event already waiting for an endpoint (the entry read twice) is
    /// not added again.
    func fanOut(entryID: String, event: WebhookEvent?, endpoints: [String], nowMs: Int64)
        async throws
    {
        var scriptKeys = [keys.stream(.events)]
        var args: [RedisArg] = [.text(StreamName.events.group), .text(entryID)]
        if let event, let sortable = WebhookEvent.sortable(event.id) {
            args += [.text(sortable), .text(event.orderKey), .text(event.body),
                     .text(String(nowMs))]
            for name in endpoints {
                let k = endpointKeys(name)
                scriptKeys += [k.body, k.queue(event.orderKey), k.due]
            }
        }
        _ = try await redis.eval(Self.fanOutScript, keys: scriptKeys, args: args)
    }

    static let fanOutScript = RedisScript("""
        for i = 2, #KEYS, 3 do
          if redis.call('HSETNX', KEYS[i], ARGV[3], ARGV[5]) == 1 then
            redis.call('ZADD', KEYS[i + 1], 0, ARGV[3])
            redis.call('ZADD', KEYS[i + 2], 'NX', ARGV[6], ARGV[4])
          end
        end
        redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
        return 1
        """)

    // MARK: Claiming

    /// A delivery handed to this process: the first event of one order key.
    struct Claim: Sendable {
        let orderKey: String
        let sortable: String
        let body: String
        /// Failed attempts so far, and when the first failed (0 before any).
        let failures: Int
        let firstFailureMs: Int64
        var eventID: String { WebhookEvent.streamID(sortable: sortable) }
    }

    /// Takes up to `limit` due keys of an endpoint whose first event may be posted now, and
    /// leases each until `leaseUntilMs`: if this process dies, the key is due again then.
    /// Also returns when the earliest other key is due (ms), nil when none is waiting.
    func claim(_ endpoint: String, limit: Int, nowMs: Int64, leaseUntilMs: Int64)
        async throws -> (claims: [Claim], nextDueMs: Int64?)
    {
        let k = endpointKeys(endpoint)
        let reply = try await redis.eval(
            Self.claimScript, keys: [k.due, keys.stream(.events), k.body, k.tries],
            args: [.text(String(nowMs)), .text(String(leaseUntilMs)), .text(String(limit)),
                   .text(StreamName.events.group), .text(k.queuePrefix)])
        let parts = reply.array ?? []
        var claims: [Claim] = []
        var i = 1
        while i + 3 < parts.count {
            let tries = (parts[i + 3].string ?? "").split(separator: " ")
            claims.append(Claim(
                orderKey: parts[i].string ?? "", sortable: parts[i + 1].string ?? "",
                body: parts[i + 2].string ?? "",
                failures: tries.first.flatMap { Int($0) } ?? 0,
                firstFailureMs: tries.count > 1 ? Int64(tries[1]) ?? 0 : 0))
            i += 4
        }
        let next = parts.first?.string.flatMap { Int64($0) }
        return (claims, next)
    }

    /// Keys blocked behind a pending `events` entry are looked at again after this long.
    static let blockedRecheckMs = 200

    static let claimScript = RedisScript("""
        local now = tonumber(ARGV[1])
        local wmMs, wmSeq
        local pending = redis.call('XPENDING', KEYS[2], ARGV[4])
        if pending[1] > 0 and pending[2] then
          local a, b = string.match(pending[2], '^(%d+)-(%d+)$')
          wmMs, wmSeq = tonumber(a), tonumber(b)
        end
        local out = {''}
        local taken = 0
        local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)
        for _, key in ipairs(due) do
          if taken >= tonumber(ARGV[3]) then break end
          local head = redis.call('ZRANGE', ARGV[5] .. key, 0, 0)[1]
          if not head then
            redis.call('ZREM', KEYS[1], key)
          else
            local ms, seq = tonumber(string.sub(head, 1, 15)), tonumber(string.sub(head, 17))
            if wmMs and (wmMs < ms or (wmMs == ms and wmSeq < seq)) then
              redis.call('ZADD', KEYS[1], now + \(blockedRecheckMs), key)
            else
              redis.call('ZADD', KEYS[1], ARGV[2], key)
              local body = redis.call('HGET', KEYS[3], head) or ''
              local tries = redis.call('HGET', KEYS[4], head) or ''
              table.insert(out, key)
              table.insert(out, head)
              table.insert(out, body)
              table.insert(out, tries)
              taken = taken + 1
            end
          end
        end
        local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
        if first[2] then out[1] = first[2] end
        return out
        """)

    // MARK: Outcomes

    /// The first event of `claim.orderKey` arrived: it leaves its queue, and the key's next
    /// event (if any) is due at once. False when another process finished it meanwhile.
    @discardableResult
    func delivered(_ endpoint: String, _ claim: Claim, nowMs: Int64) async throws -> Bool {
        try await finish(endpoint, claim, nowMs: nowMs, ["delivered", "", "", "0"])
    }

    /// An attempt failed: the key waits until `retryAtMs`, its event keeping its place.
    @discardableResult
    func failed(_ endpoint: String, _ claim: Claim, error: String, failures: Int,
                firstFailureMs: Int64, retryAtMs: Int64, nowMs: Int64) async throws -> Bool {
        try await finish(endpoint, claim, nowMs: nowMs,
                         ["retry", .text(error), .text("\(failures) \(firstFailureMs)"),
                          .text(String(retryAtMs))])
    }

    /// The event was tried for as long as the settings allow: it moves to the failed list
    /// (at most `keep` per endpoint, oldest dropped) and the key's next event goes.
    @discardableResult
    func gaveUp(_ endpoint: String, _ claim: Claim, error: String, failures: Int,
                nowMs: Int64, keep: Int) async throws -> Bool {
        let record: [String: any Sendable] = [
            "key": claim.orderKey, "attempts": failures, "error": error,
            "failed_ms": nowMs, "body": claim.body,
        ]
        return try await finish(endpoint, claim, nowMs: nowMs,
                                ["give_up", .text(error), .text(SortedJSON.encode(record)),
                                 .text(String(keep))])
    }

    /// Runs `finishScript` for a claim; `outcome` is its ARGV from the outcome on.
    private func finish(_ endpoint: String, _ claim: Claim, nowMs: Int64,
                        _ outcome: [RedisArg]) async throws -> Bool {
        let k = endpointKeys(endpoint)
        let reply = try await redis.eval(
            Self.finishScript,
            keys: [k.due, k.queue(claim.orderKey), k.body, k.tries, k.stats, k.failed,
                   k.failedIDs],
            args: [.text(claim.orderKey), .text(claim.sortable), .text(String(nowMs))] + outcome)
        return reply.int == 1
    }

    /// ARGV: order key, sortable id, now, outcome (delivered, retry, give_up), error, then
    /// the try record and retry time (retry) or the failed record and how many to keep.
    static let finishScript = RedisScript("""
        local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
        if head ~= ARGV[2] then return 0 end
        local outcome = ARGV[4]
        if outcome == 'retry' then
          redis.call('HSET', KEYS[4], ARGV[2], ARGV[6])
          redis.call('ZADD', KEYS[1], ARGV[7], ARGV[1])
          redis.call('HSET', KEYS[5], 'last_error', ARGV[5], 'last_error_ms', ARGV[3])
          return 1
        end
        redis.call('ZREM', KEYS[2], ARGV[2])
        redis.call('HDEL', KEYS[3], ARGV[2])
        redis.call('HDEL', KEYS[4], ARGV[2])
        if outcome == 'delivered' then
          redis.call('HINCRBY', KEYS[5], 'delivered', 1)
          redis.call('HSET', KEYS[5], 'last_success_ms', ARGV[3])
        else
          redis.call('HINCRBY', KEYS[5], 'failed', 1)
          redis.call('HSET', KEYS[5], 'last_error', ARGV[5], 'last_error_ms', ARGV[3])
          redis.call('HSET', KEYS[6], ARGV[2], ARGV[6])
          redis.call('ZADD', KEYS[7], 0, ARGV[2])
          local over = redis.call('ZCARD', KEYS[7]) - tonumber(ARGV[7])
          if over > 0 then
            local old = redis.call('ZRANGE', KEYS[7], 0, over - 1)
            redis.call('ZREM', KEYS[7], unpack(old))
            redis.call('HDEL', KEYS[6], unpack(old))
          end
        end
        if redis.call('ZCARD', KEYS[2]) > 0 then
          redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
        else
          redis.call('ZREM', KEYS[1], ARGV[1])
        end
        return 1
        """)

    // MARK: Operators

    /// What GET /v1/webhooks shows of one endpoint.
    struct Status: Sendable {
        var pending = 0
        var failedKept = 0
        var stats: [String: String] = [:]
    }

    func status(_ endpoints: [String], within timeout: Duration = .seconds(10)) async throws
        -> [String: Status]
    {
        var commands: [[RedisArg]] = []
        for name in endpoints {
            let k = endpointKeys(name)
            commands += [["HLEN", .text(k.body)], ["HLEN", .text(k.failed)],
                         ["HGETALL", .text(k.stats)]]
        }
        let replies = try await redis.pipeline(commands, within: timeout)
        var out: [String: Status] = [:]
        for (i, name) in endpoints.enumerated() {
            out[name] = Status(pending: replies[3 * i].int ?? 0,
                               failedKept: replies[3 * i + 1].int ?? 0,
                               stats: replies[3 * i + 2].fieldMap)
        }
        return out
    }

    /// The given-up deliveries of an endpoint, oldest first: (sortable id, record).
    func failedList(_ endpoint: String, limit: Int) async throws -> [(String, [String: Any])] {
        try await failedRecords(endpoint, ids: failedIDs(endpoint, limit: limit))
    }

    /// Puts given-up deliveries back in their queues, each at its place in its key's order
    /// and due at once. Returns how many went back.
    func retryFailed(_ endpoint: String, ids: [String], nowMs: Int64) async throws -> Int {
        let k = endpointKeys(endpoint)
        var count = 0
        for (id, record) in try await failedRecords(endpoint, ids: ids) {
            guard let key = record["key"] as? String, let body = record["body"] as? String
            else { continue }
            // NX: a key being posted or waiting for a retry keeps its time, so its
            // lease is never broken by an operator's retry.
            let reply = try await redis.eval(
                Self.retryScript,
                keys: [k.failed, k.failedIDs, k.body, k.tries, k.queue(key), k.due],
                args: [.text(id), .text(key), .text(body), .text(String(nowMs))])
            count += reply.int ?? 0
        }
        return count
    }

    private func failedRecords(_ endpoint: String, ids: [String]) async throws
        -> [(String, [String: Any])]
    {
        guard !ids.isEmpty else { return [] }
        let docs = try await redis.run(["HMGET", endpointKeys(endpoint).failed] + ids).array
            ?? []
        return zip(ids, docs).compactMap { id, doc in
            guard let text = doc.string,
                  let object = try? JSONReading.value(text) as? [String: Any]
            else { return nil }
            return (id, object)
        }
    }

    static let retryScript = RedisScript("""
        if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
        redis.call('ZREM', KEYS[2], ARGV[1])
        redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
        redis.call('HDEL', KEYS[4], ARGV[1])
        redis.call('ZADD', KEYS[5], 0, ARGV[1])
        redis.call('ZADD', KEYS[6], 'NX', ARGV[4], ARGV[2])
        return 1
        """)

    /// Every failed id of an endpoint, oldest first, up to `limit`.
    func failedIDs(_ endpoint: String, limit: Int) async throws -> [String] {
        let k = endpointKeys(endpoint)
        return (try await redis.run(["ZRANGE", k.failedIDs, "0", String(limit - 1)]).array
            ?? []).compactMap(\.string)
    }

    /// Creates the `webhooks` group on `events` if missing, starting at the stream's end:
    /// an endpoint configured today gets today's events, not the million before them.
    func ensureGroup() async throws {
        do {
            try await redis.run("XGROUP", "CREATE", keys.stream(.events),
                                StreamName.events.group, "$", "MKSTREAM")
        } catch RedisError.server(let e) where e.hasPrefix("BUSYGROUP") {
            return
        }
    }
}
