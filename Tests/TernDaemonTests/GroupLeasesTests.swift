// The group connection leases against a real Redis: the limit, giving back, renewal, and the
// lease of a sender that died lapsing by itself or freed by the same instance's next run.

import Testing
import TernCore
import TernMail
import TernSender
import TernTestSupport

@Suite struct GroupLeasesTests {
    @Test func theLimitHoldsAcrossSendersAndAGivenBackLeaseIsFreeAgain() async throws {
        let server = try TestRedis()
        defer { server.stop() }
        let redis = try RedisClient(url: server.url)
        let keys = Keys()
        let one = GroupLeases(redis: redis, keys: keys, limit: 2, instance: "s1")
        let two = GroupLeases(redis: redis, keys: keys, limit: 2, instance: "s2")
        let a = await one.acquire("default:x.example")
        let b = await two.acquire("default:x.example")
        #expect(a != nil && b != nil && a != b)
        #expect(await one.acquire("default:x.example") == nil)
        #expect(await two.acquire("default:x.example") == nil)
        // Another group has its own limit.
        #expect(await two.acquire("default:y.example") != nil)

        // The refusals marked the group as wanted, so holders of idle sessions give one up.
        #expect(await one.wanted(["default:x.example", "default:y.example"])
                == ["default:x.example"])

        await one.release(a!)
        #expect(one.count == 0)
        #expect(await two.acquire("default:x.example") != nil)
        #expect(await one.wanted(["default:x.example"]).isEmpty)
        #expect(try await two.renew() == 0)
        #expect(try await redis.run("ZCARD", keys.groupLeases("default:x.example")).int == 2)
    }

    @Test func theLeaseOfADeadSenderLapses() async throws {
        let server = try TestRedis()
        defer { server.stop() }
        let redis = try RedisClient(url: server.url)
        let keys = Keys()
        let group = "default:x.example"
        // A sender that died holding the only lease, expired a second ago (score in ms).
        let now = try await redis.run("TIME").array?.first?.string.flatMap { Int($0) } ?? 0
        try await redis.run("ZADD", keys.groupLeases(group), String((now - 1) * 1000), "dead.1")
        let live = GroupLeases(redis: redis, keys: keys, limit: 1, instance: "s1")
        let lease = try #require(await live.acquire(group))
        let members = try await redis.run("ZRANGE", keys.groupLeases(group), "0", "-1")
        #expect(members.array?.compactMap(\.string) == [lease])
        // A lease that lapsed (this sender stalled past its life) is not brought back.
        try await redis.run("ZREM", keys.groupLeases(group), lease)
        #expect(try await live.renew() == 1)
        #expect(try await redis.run("ZCARD", keys.groupLeases(group)).int == 0)
    }

    @Test func aRestartedInstanceFreesTheLeasesOfItsEarlierRunOnly() async throws {
        let server = try TestRedis()
        defer { server.stop() }
        let redis = try RedisClient(url: server.url)
        let keys = Keys()
        let x = "192.0.2.1|gmail", y = "192.0.2.1|microsoft"
        // "sender-1" dies holding two leases on x and one on y; "sender-1.b" (a name that
        // starts like it) and "sender-2" hold one each on x.
        let dead = GroupLeases(redis: redis, keys: keys, limit: 10, instance: "sender-1")
        #expect(await dead.acquire(x) != nil)
        #expect(await dead.acquire(x) != nil)
        #expect(await dead.acquire(y) != nil)
        let lookalike = GroupLeases(redis: redis, keys: keys, limit: 10, instance: "sender-1.b")
        let other = GroupLeases(redis: redis, keys: keys, limit: 10, instance: "sender-2")
        let kept = [await lookalike.acquire(x), await other.acquire(x)].compactMap { $0 }
        #expect(kept.count == 2)

        let again = GroupLeases(redis: redis, keys: keys, limit: 10, instance: "sender-1")
        #expect(try await again.reclaimEarlierRuns() == 3)
        let left = try await redis.run("ZRANGE", keys.groupLeases(x), "0", "-1")
        #expect(Set(left.array?.compactMap(\.string) ?? []) == Set(kept))
        #expect(try await redis.run("ZCARD", keys.groupLeases(y)).int == 0)
        // Its own new leases are not taken for an earlier run's.
        let mine = try #require(await again.acquire(y))
        #expect(try await again.reclaimEarlierRuns() == 0)
        let onY = try await redis.run("ZRANGE", keys.groupLeases(y), "0", "-1")
        #expect(onY.array?.compactMap(\.string) == [mine])
    }
}
