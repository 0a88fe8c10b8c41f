// The connection limit shared by every sender process: each SMTP connection holds a lease on
// its scope — the source IP and provider, `{ip}|{provider}` (see `MXDelivery`) — a member of
// the sorted set `lease:{scope}` scored by when it expires (Redis's own clock, so hosts with
// skewed clocks agree). Below, "group" names that scope.
//
// A lease is taken by a Lua script that first drops the expired ones, so the leases of a
// sender that died vanish within `ttl` without anyone cleaning up after it. A sender that
// died and is started again (same instance name, as systemd restarts `tern-sender@N`) does
// not wait that long: at start it frees every lease its previous run left, found through the
// set of scopes the instance has leased on. A live sender
// renews all its leases every `ttl / 3` in one script call and gives each back when its
// connection closes. A refusal also marks the group as wanted for a moment, so that another
// sender holding idle sessions of it gives one up (`SessionPool`).

import Synchronization
import TernCore
import TernMail

public final class GroupLeases: Sendable {
    /// How long a lease outlives its last renewal.
    public static let ttl: Duration = .seconds(60)

    let redis: RedisClient
    let keys: Keys
    /// TERN_GROUP_MAX_CONNECTIONS: leases per scope across all senders, unless `acquire` is
    /// given the provider's own limit.
    public let limit: Int
    /// The sender's instance name; unique among the senders that run at once.
    let instance: String
    /// Unique to this process: lease ids of two senders never collide, even across restarts.
    let token: String
    private let held = Mutex<[String: String]>([:])   // lease id -> group
    private let counter = Atomic<Int>(0)

    // KEYS[1] the group's lease set, KEYS[2] its wanted mark, KEYS[3] the instance's scopes.
    // ARGV: lease id, limit, ttl ms, group.
    static let acquireScript = RedisScript("""
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
        if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
            redis.call('SET', KEYS[2], '1', 'PX', 2000)
            return 0
        end
        redis.call('DEL', KEYS[2])
        redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
        redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
        redis.call('SADD', KEYS[3], ARGV[4])
        redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[3]))
        return 1
        """)

    // KEYS[1] the instance's scopes, then lease sets; ARGV[1] ttl ms, then one lease id per
    // lease set. Only leases still held are extended: one that expired meanwhile may already
    // be someone else's slot.
    static let renewScript = RedisScript("""
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local ttl = tonumber(ARGV[1])
        local lost = 0
        redis.call('PEXPIRE', KEYS[1], ttl)
        for i = 2, #KEYS do
            local key = KEYS[i]
            if redis.call('ZSCORE', key, ARGV[i]) then
                redis.call('ZADD', key, now + ttl, ARGV[i])
                redis.call('PEXPIRE', key, ttl)
            else
                lost = lost + 1
            end
        end
        return lost
        """)

    // KEYS: lease sets the instance leased on; ARGV[1] the instance name, ARGV[2] the token
    // of this run. Frees the leases of the instance's earlier runs (an id is
    // `{instance}.{run}.{n}`) and returns how many.
    static let reclaimScript = RedisScript("""
        local freed = 0
        for _, key in ipairs(KEYS) do
            for _, id in ipairs(redis.call('ZRANGE', key, 0, -1)) do
                local instance, run = string.match(id, '^(.*)%.([^.]*)%.[^.]*$')
                if instance == ARGV[1] and instance .. '.' .. run ~= ARGV[2] then
                    redis.call('ZREM', key, id)
                    freed = freed + 1
                end
            end
        end
        return freed
        """)

    public init(redis: RedisClient, keys: Keys, limit: Int, instance: String) {
        self.redis = redis
        self.keys = keys
        self.limit = limit
        self.instance = instance
        token = instance + "." + String(UInt64.random(in: 0...UInt64.max), radix: 36)
    }

    /// Frees the leases an earlier run of this instance left behind (it crashed, so their
    /// connections are gone); returns how many. Called once at start, before any acquire.
    public func reclaimEarlierRuns() async throws -> Int {
        let scopes = try await redis.run("SMEMBERS", keys.leaseScopes(instance))
        let groups = scopes.array?.compactMap(\.string) ?? []
        guard !groups.isEmpty else { return 0 }
        let freed = try await redis.eval(
            Self.reclaimScript, keys: groups.map { keys.groupLeases($0) },
            args: [.text(instance), .text(token)])
        return freed.int ?? 0
    }

    public var count: Int { held.withLock { $0.count } }

    /// A new lease on `group`, or nil when the group has `limit` (by default the one given
    /// at init) already, or Redis failed: without Redis the limit cannot be kept, so no
    /// connection is opened.
    public func acquire(_ group: String, limit: Int? = nil) async -> String? {
        let limit = limit ?? self.limit
        let id = "\(token).\(counter.add(1, ordering: .relaxed).newValue)"
        let ttl = String(Self.ttl.milliseconds)
        do {
            let got = try await redis.eval(
                Self.acquireScript,
                keys: [keys.groupLeases(group), keys.leaseWanted(group),
                       keys.leaseScopes(instance)],
                args: [.text(id), .text(String(limit)), .text(ttl), .text(group)])
            guard got.int == 1 else { return nil }
        } catch {
            return nil
        }
        held.withLock { $0[id] = group }
        return id
    }

    public func release(_ id: String) async {
        guard let group = held.withLock({ $0.removeValue(forKey: id) }) else { return }
        _ = try? await redis.run("ZREM", keys.groupLeases(group), id)
    }

    /// Which of `groups` another sender was refused a lease of in the last two seconds.
    public func wanted(_ groups: [String]) async -> [String] {
        guard !groups.isEmpty,
              let replies = try? await redis.pipeline(groups.map {
                  ["EXISTS", .text(keys.leaseWanted($0))]
              })
        else { return [] }
        return zip(groups, replies).filter { $0.1.int == 1 }.map(\.0)
    }

    /// Extends every lease held; returns how many had already expired.
    @discardableResult
    public func renew() async throws -> Int {
        let all = held.withLock { Array($0) }
        guard !all.isEmpty else { return 0 }
        let got = try await redis.eval(
            Self.renewScript,
            keys: [keys.leaseScopes(instance)] + all.map { keys.groupLeases($0.value) },
            args: [.text(String(Self.ttl.milliseconds))] + all.map { .text($0.key) })
        return got.int ?? 0
    }

    /// Renews until cancelled.
    public func keepRenewed(logger: Logger) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: Self.ttl / 3)
            if Task.isCancelled { return }
            do {
                let lost = try await renew()
                if lost > 0 {
                    logger.warning("connection leases expired before renewal",
                                   ("count", String(lost)))
                }
            } catch {
                logger.warning("renewing connection leases failed: \(error)")
            }
        }
    }
}
