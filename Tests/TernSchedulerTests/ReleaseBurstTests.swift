// One call of the release script for several messages of a group (a burst): each message
// still passes every check on its own, in rank order, and what holds one does not stop the
// others; what ends a call (an empty group) ends it for all.

import Foundation
import Testing
import TernCore
import TernMail
@testable import TernScheduler
import TernTestSupport

@Suite struct ReleaseBurstTests {
    @Test func eachMessageOfABurstPassesItsOwnChecks() async throws {
        let f = try ReleaseScriptFixture()
        defer { f.server.stop() }
        let (redis, keys, now, group) = (f.redis, f.keys, f.now, f.group)
        // Six due messages, ranked by due time. The third is of a paused organisation; acme
        // may send three a day.
        var ids: [String] = []
        var setup: [[RedisArg]] = [["HSET", .text(keys.orgCaps), "acme", "0,3"],
                                   ["HSET", .text(keys.pauses), "org:globex", "{}"]]
        for k in 0..<6 {
            let id = MessageID.generate()
            ids.append(id)
            let org: RedisArg = k == 2 ? "globex" : "acme"
            let record: [RedisArg] = [
                "HSET", .text(keys.message(id)), "id", .text(id), "org", org, "pool", "default",
                "from", "s@tern.example", "rcpt", .text("r\(k)@inbox.example"),
                "domain", "inbox.example", "expires_ms", .text(String(now + 600_000)),
                "state", "queued",
            ]
            let due = String(now - 60 + Int64(k) * 10)
            setup.append(record)
            setup.append(["ZADD", .text(keys.groupQueue(group)), .text(due), .text(id)])
        }
        setup.append(["ZADD", .text(keys.dueGroups), .text(String(now - 60)), .text(group)])
        _ = try await redis.transaction(setup)

        let more: [RedisArg] = (3...7).flatMap { [RedisArg.text("127.0.0.\($0)"), "out.example"] }
        let reply = try await f.release(more: more)
        let outcomes = (reply.array ?? []).map { $0.array?.compactMap(\.string) ?? [] }
        #expect(outcomes.map(\.first) == ["released", "released", "held", "released", "held",
                                          "held"])
        #expect(outcomes.map { $0.count > 1 ? $0[1] : "" } == ids)
        // Each released message went from the source IP it was given.
        #expect(outcomes[0].last == "127.0.0.2" && outcomes[1].last == "127.0.0.3")
        #expect(outcomes[3].last == "127.0.0.5")
        #expect(outcomes[2] == ["held", ids[2], "globex", "1", "pause"])
        #expect(outcomes[4].last == "day" && outcomes[5].last == "day")

        let ready = try await redis.run("XRANGE", keys.stream(.ready), "-", "+").array ?? []
        #expect(ready.compactMap { $0.array?[1].fieldMap["id"] } == [ids[0], ids[1], ids[3]])
        let states = try await redis.pipeline(ids.map {
            ["HGET", .text(keys.message($0)), "state"]
        })
        #expect(states.map { try? $0.get().string } == ["sending", "sending", "queued", "sending",
                                                      "queued", "queued"])
        // Held ones are back in the queue, and the group is due again with them waiting.
        #expect(try await redis.run("ZCARD", keys.groupQueue(group)).int == 3)
        #expect(try await redis.run("ZCARD", keys.groupDue(group)).int == 0)
        #expect(try await redis.run("ZSCORE", keys.dueGroups, group).string != nil)
    }

    @Test func aBurstLargerThanTheGroupEndsWhenTheGroupIsEmpty() async throws {
        let f = try ReleaseScriptFixture()
        defer { f.server.stop() }
        let (redis, keys, now, group) = (f.redis, f.keys, f.now, f.group)
        let id = MessageID.generate()
        _ = try await redis.transaction([
            ["HSET", .text(keys.message(id)), "id", .text(id), "org", "acme", "pool", "default",
             "from", "s@tern.example", "rcpt", "a@inbox.example", "domain", "inbox.example",
             "expires_ms", .text(String(now + 600_000)), "state", "queued"],
            ["ZADD", .text(keys.groupQueue(group)), .text(String(now - 10)), .text(id)],
            ["ZADD", .text(keys.dueGroups), .text(String(now - 10)), .text(group)],
        ])
        let reply = try await f.release(more: ["127.0.0.3", "out.example", "127.0.0.4",
                                               "out.example"])
        let outcomes = (reply.array ?? []).map { $0.array?.compactMap(\.string) ?? [] }
        #expect(outcomes == [["released", id, "1", "127.0.0.2"]])
        // Nothing is left: the group leaves the due index.
        #expect(try await redis.run("ZSCORE", keys.dueGroups, group).string == nil)
    }
}
