import Testing
import TernCore
import TernTestSupport

@Suite struct RedisClientTests {
    @Test func aBadURLIsRefusedNotTrapped() {
        for url in ["redis://127.0.0.1:99999", "redis://127.0.0.1:6379/abc",
                    "redis://127.0.0.1:6379/-1", "http://127.0.0.1:6379"] {
            #expect(throws: RedisError.self, "\(url)") { try RedisClient(url: url) }
        }
        #expect(throws: Never.self) { try RedisClient(url: "redis://127.0.0.1:6380/2") }
    }

    /// The password never reaches a log line or an error, even of a URL that does not parse.
    @Test func theRedisPasswordIsMasked() {
        let cases = [
            ("redis://:pw@127.0.0.1", "redis://:***@127.0.0.1"),
            ("redis://:p@ss:w/rd@127.0.0.1:6380/2", "redis://:***@127.0.0.1:6380/2"),
            ("redis://tern:pw@127.0.0.1", "redis://tern:***@127.0.0.1"),
            ("redis://pw@127.0.0.1", "redis://***@127.0.0.1"),
            ("http://:pw@x", "http://:***@x"),
            ("pw@127.0.0.1", "***@127.0.0.1"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        ]
        for (url, masked) in cases { #expect(RedisURL.masked(url) == masked, "\(url)") }
        do {
            _ = try RedisClient(url: "redis://:secret-pw@127.0.0.1:99999")
            Issue.record("accepted a port over 65535")
        } catch {
            #expect("\(error)" == "bad redis URL: redis://:***@127.0.0.1:99999")
        }
        let parsed = try? RedisURL("redis://:secret-pw@127.0.0.1:6380/3")
        #expect(parsed?.password == "secret-pw" && parsed?.db == 3
                && parsed?.address.description == "127.0.0.1:6380")
    }

    @Test func commandsPipelinesAndTransactions() async throws {
        let server = try TestRedis()
        defer { server.stop() }
        let redis = try RedisClient(url: server.url)
        #expect(await redis.ping())
        try await redis.run("SET", "k", "v")
        #expect(try await redis.run("GET", "k").string == "v")
        #expect(try await redis.run("GET", "missing") == .null)

        let body: [UInt8] = [0, 13, 10, 255, 46]
        let replies = try await redis.pipeline([["SET", "bin", .data(body)], ["GET", "bin"],
                                                ["INCR", "n"], ["INCR", "n"]])
        #expect(replies == [.status("OK"), .bulk(body), .integer(1), .integer(2)])

        let tx = try await redis.transaction([["INCR", "n"], ["GET", "k"]])
        #expect(tx == [.integer(3), .bulk(Array("v".utf8))])

        await #expect(throws: RedisError.self) { try await redis.run("INCR", "k") }
    }

    @Test func streamsWithConsumerGroups() async throws {
        let server = try TestRedis()
        defer { server.stop() }
        let redis = try RedisClient(url: server.url)

        try await redis.ensureGroup(stream: "s", group: "g")
        try await redis.ensureGroup(stream: "s", group: "g")   // existing group is fine
        _ = try await redis.pipeline([xadd("s", [("id", "m1")]), xadd("s", [("id", "m2")])])

        let first = try await redis.readGroup(stream: "s", group: "g", consumer: "c1", count: 1,
                                              block: .milliseconds(100))
        #expect(first.map { $0["id"] } == ["m1"])
        // Not acknowledged: re-read as pending by the same consumer after a "restart".
        let pending = try await redis.readGroup(stream: "s", group: "g", consumer: "c1",
                                                count: 10, block: nil, pending: true)
        #expect(pending.map { $0["id"] } == ["m1"])
        // Another consumer takes it over once it is idle long enough.
        try await Task.sleep(for: .milliseconds(1100))
        let claimed = try await redis.claimStale(stream: "s", group: "g", consumer: "c2",
                                                 minIdle: .seconds(1), count: 10)
        #expect(claimed.map { $0.id } == [first[0].id])

        let empty = try await redis.readGroup(stream: "s", group: "g", consumer: "c1", count: 5,
                                              block: .milliseconds(50))
        #expect(empty.map { $0["id"] } == ["m2"])
    }
}

@Suite(.serialized) struct StreamTrimTests {
    @Test func onlyWhatEveryGroupAcknowledgedIsTrimmed() async throws {
        let server = try TestRedis()
        defer { server.stop() }
        let redis = try RedisClient(url: server.url)
        for group in ["a", "b"] { try await redis.ensureGroup(stream: "s", group: group) }
        var ids: [String] = []
        for i in 0..<3 { ids.append(try await redis.run("XADD", "s", "*", "n", "\(i)").string!) }

        let a = try await redis.readGroup(stream: "s", group: "a", consumer: "x", count: 10,
                                          block: nil)
        try await redis.run(["XACK", "s", "a"] + a.map(\.id))
        // Group b has read nothing: nothing goes.
        #expect(try await redis.trimAcknowledged(stream: "s") == 0)
        #expect(try await redis.run("XLEN", "s").int == 3)

        _ = try await redis.readGroup(stream: "s", group: "b", consumer: "y", count: 2,
                                      block: nil)
        try await redis.run("XACK", "s", "b", ids[0])
        // b holds the second entry pending: only the first goes.
        #expect(try await redis.trimAcknowledged(stream: "s") == 1)
        #expect(try await redis.run("XRANGE", "s", "-", "+").array?.first?.array?[0].string
                == ids[1])
        try await redis.run("XACK", "s", "b", ids[1])
        _ = try await redis.readGroup(stream: "s", group: "b", consumer: "y", count: 2,
                                      block: nil)
        try await redis.run("XACK", "s", "b", ids[2])
        #expect(try await redis.trimAcknowledged(stream: "s") == 2)
        #expect(try await redis.run("XLEN", "s").int == 0)
    }
}
