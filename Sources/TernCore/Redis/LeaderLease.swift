// A lease in Redis that lets one process of a role lead while others of the same role stand
// by: for daemons whose state must have one writer (the scheduler's throttles and breakers).
//
// The holder renews it every third of its time to live; a holder that cannot renew in time
// (crashed, stalled, cut off from Redis) loses it, stops its work at once, and another
// process takes over. A lease that lapses while its holder is merely slow can leave both
// working for up to one renewal interval; every hand-over they make is atomic in Redis, so
// that window costs at most a rate or a breaker count, never a message.

import Foundation

public final class LeaderLease: Sendable {
    public let redis: RedisClient
    public let key: String
    /// Who holds it: the instance name, unique per process of a role as the consumer names
    /// of the streams already must be. A process restarted after a crash under the same
    /// name takes its lease back at once instead of waiting for it to lapse.
    public let owner: String
    public let ttl: Duration

    public init(redis: RedisClient, key: String, instance: String, ttl: Duration = .seconds(15)) {
        self.redis = redis
        self.key = key
        self.owner = instance
        self.ttl = ttl
    }

    static let renewScript = RedisScript("""
        if redis.call('GET', KEYS[1]) == ARGV[1] then
          return redis.call('PEXPIRE', KEYS[1], ARGV[2])
        end
        return 0
        """)

    static let releaseScript = RedisScript("""
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        """)

    static let acquireScript = RedisScript("""
        if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
        if redis.call('GET', KEYS[1]) == ARGV[1] then
          return redis.call('PEXPIRE', KEYS[1], ARGV[2])
        end
        return 0
        """)

    public func tryAcquire() async throws -> Bool {
        try await redis.eval(Self.acquireScript, keys: [key],
                             args: [.text(owner), .text(String(ttl.milliseconds))]).int == 1
    }

    public func renew() async throws -> Bool {
        try await redis.eval(Self.renewScript, keys: [key],
                             args: [.text(owner), .text(String(ttl.milliseconds))]).int == 1
    }

    public func release() async {
        _ = try? await redis.eval(Self.releaseScript, keys: [key], args: [.text(owner)])
    }

    /// Runs `work` each time this process becomes the leader, cancelling it when the lease is
    /// lost; stands by in between. Returns at shutdown, having released the lease.
    public func lead(shutdown: Shutdown, logger: Logger,
                     work: @escaping @Sendable () async -> Void) async {
        let interval = ttl / 3
        while !shutdown.isRequested && !Task.isCancelled {
            let acquired: Bool
            do { acquired = try await tryAcquire() } catch {
                logger.warning("cannot ask for the leader lease: \(error)", ("key", key))
                acquired = false
            }
            guard acquired else {
                try? await Task.sleep(for: interval)
                continue
            }
            logger.notice("leading", ("lease", key), ("owner", owner))
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await work() }
                group.addTask {
                    var lastRenewed = ContinuousClock.now
                    while !Task.isCancelled && !shutdown.isRequested {
                        try? await Task.sleep(for: interval)
                        let held: Bool
                        do { held = try await self.renew() } catch {
                            // Redis unreachable: keep working until the lease would have
                            // lapsed anyway, then stop, since another may take over.
                            if ContinuousClock.now - lastRenewed < self.ttl - interval {
                                continue
                            }
                            held = false
                        }
                        guard held else {
                            logger.warning("lost the leader lease: standing by",
                                           ("lease", self.key))
                            return
                        }
                        lastRenewed = .now
                    }
                }
                // Whichever ends first (the work at shutdown, or the renewal on a lost
                // lease) ends the other.
                await group.next()
                group.cancelAll()
            }
        }
        await release()
    }
}
