// Trimming acknowledged stream entries while consumers read, claim from each other, restart
// (re-reading their own pending entries from id 0), die without acknowledging, and trim at
// the same moment, against a real redis-server. A trim that removed an entry a group had not
// been given, or one still pending, would lose it: XREADGROUP 0 returns it without fields and
// XAUTOCLAIM drops it from the pending list, so it would never be acknowledged. The test
// checks that every entry reaches every group with its fields, and that nothing acknowledged
// is left behind once all is done. RESP encoding of awkward arguments is checked too.

import Synchronization
import Testing
@testable import TernCore
import TernTestSupport

@Suite(.serialized) struct StreamTrimRaceTests {
    /// What the consumers of one group have acknowledged (`n` of each entry) and any entry
    /// they were given without its fields.
    final class Ledger: Sendable {
        let acked = Mutex<Set<Int>>([])
        let broken = Mutex<[String]>([])
        var count: Int { acked.withLock { $0.count } }
    }

    static let total = 600

    @Test func trimsUnderConcurrentReadsClaimsRestartsAndTrimsLoseNothing() async throws {
        let server = try TestRedis()
        defer { server.stop() }
        let redis = try RedisClient(url: server.url)
        let stream = "race"
        for group in ["g", "h"] { try await redis.ensureGroup(stream: stream, group: group) }
        let main = Ledger(), other = Ledger()
        let deadline = ContinuousClock.now + .seconds(20)

        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                for n in 0..<Self.total {
                    try await redis.run("XADD", stream, "*", "n", String(n))
                    if n % 7 == 0 { await Task.yield() }
                }
            }
            for c in 0..<3 {
                tasks.addTask {
                    try await Self.consume(redis, stream, "g", "c\(c)", seed: UInt64(c + 1),
                                           ledger: main, deadline: deadline)
                }
            }
            tasks.addTask {
                try await Self.consume(redis, stream, "h", "slow", seed: 99, ledger: other,
                                       deadline: deadline)
            }
            try await tasks.waitForAll()
        }
        #expect(main.broken.withLock { Array($0.prefix(3)) } == [])
        #expect(other.broken.withLock { Array($0.prefix(3)) } == [])
        let all = Set(0..<Self.total)
        #expect(all.subtracting(main.acked.withLock { $0 }).sorted().prefix(10) == [])
        #expect(all.subtracting(other.acked.withLock { $0 }).sorted().prefix(10) == [])
        // Every group has everything: one more trim leaves nothing.
        try await redis.trimAcknowledged(stream: stream)
        #expect(try await redis.run("XLEN", stream).int == 0)
    }

    /// Entries acknowledged after the last trim of an earlier run (a batch applied as
    /// shutdown came, deliveries finishing in the grace period) go at the next start, not
    /// only once new entries arrive, which on a quiet system may be never.
    @Test func aRestartedConsumerTrimsWhatItsPredecessorLeft() async throws {
        let server = try TestRedis()
        defer { server.stop() }
        let redis = try RedisClient(url: server.url)
        try await redis.ensureGroup(stream: "s", group: "g")
        for n in 0..<3 { try await redis.run("XADD", "s", "*", "n", String(n)) }
        let earlier = try await redis.readGroup(stream: "s", group: "g", consumer: "old",
                                                count: 10, block: nil)
        try await redis.run(["XACK", "s", "g"] + earlier.map(\.id))
        #expect(try await redis.run("XLEN", "s").int == 3)

        var consumer = StreamConsumer(redis: redis, stream: "s", group: "g", consumer: "new",
                                      logger: Logger(label: "test", sink: MemoryLogSink()))
        consumer.trimAcknowledged = true
        let shutdown = Shutdown()
        let run = Task {
            await consumer.run(shutdown: shutdown, apply: { entry in
                try await redis.run("XACK", "s", "g", entry.id)
            }, drop: { _ in })
        }
        var length = 3
        for _ in 0..<100 where length != 0 {
            try await Task.sleep(for: .milliseconds(50))
            length = try await redis.run("XLEN", "s").int ?? -1
        }
        #expect(length == 0)
        shutdown.request()
        await run.value
    }

    /// One consumer: reads new entries, now and then takes over whatever is pending on others
    /// (idle 0), "dies" forgetting what it holds and restarts from its own pending entries,
    /// acknowledges part of what it holds, and trims after nearly every step.
    static func consume(_ redis: RedisClient, _ stream: String, _ group: String,
                        _ name: String, seed: UInt64, ledger: Ledger,
                        deadline: ContinuousClock.Instant) async throws {
        var rng = SeededGenerator(state: seed)
        var held: [(id: String, n: Int)] = []
        var restarting = true
        while ledger.count < total && ContinuousClock.now < deadline {
            var got: [RedisValue] = []
            if restarting {
                got = try await raw(redis, ["XREADGROUP", "GROUP", group, name, "COUNT", "50",
                                            "STREAMS", stream, "0"])
                restarting = false
            } else if group == "g" && rng.next() % 4 == 0 {
                let reply = try await redis.run("XAUTOCLAIM", stream, group, name, "0", "0-0",
                                                "COUNT", "5")
                got = reply.array?[1].array ?? []
                if let deleted = reply.array?.dropFirst(2).first?.array, !deleted.isEmpty {
                    ledger.broken.withLock { $0.append("claimed deleted \(deleted)") }
                }
            } else {
                got = try await raw(redis, ["XREADGROUP", "GROUP", group, name, "COUNT",
                                            String(1 + rng.next() % 8), "STREAMS", stream, ">"])
            }
            for value in got {
                guard let pair = value.array, pair.count == 2, let id = pair[0].string else {
                    continue
                }
                guard let n = pair[1].fieldMap["n"].flatMap({ Int($0) }) else {
                    ledger.broken.withLock { $0.append("entry \(id) without its fields") }
                    continue
                }
                if !held.contains(where: { $0.id == id }) { held.append((id, n)) }
            }
            switch rng.next() % 10 {
            case 0 where group == "g":
                // kill -9: what it held stays pending, unacknowledged.
                held = []
                restarting = true
            case 1, 2:
                break   // keeps holding: the floor must stay below these
            default:
                let done = held.filter { _ in rng.next() % 3 != 0 }
                if !done.isEmpty {
                    try await redis.run(["XACK", stream, group] + done.map(\.id))
                    ledger.acked.withLock { set in for d in done { set.insert(d.n) } }
                    held.removeAll { h in done.contains { $0.id == h.id } }
                }
            }
            if rng.next() % 5 != 0 { try await redis.trimAcknowledged(stream: stream) }
            if got.isEmpty { try await Task.sleep(for: .milliseconds(2)) }
        }
    }

    /// The entries of an XREADGROUP reply, with a null field list kept as it came.
    static func raw(_ redis: RedisClient, _ args: [String]) async throws -> [RedisValue] {
        let reply = try await redis.run(args)
        return reply.array?.first?.array?[1].array ?? []
    }

    /// RESP written straight from the arguments: counts in bytes, not characters; empty,
    /// binary (CR, LF, NUL), non-ASCII and large arguments survive a round trip.
    @Test func commandsAreEncodedByteExactly() async throws {
        var out: [UInt8] = []
        RedisConnection.encode(["SET", .text("é😀"), .text(""), .data([0, 13, 10])], into: &out)
        let expected = "*4\r\n$3\r\nSET\r\n$6\r\né😀\r\n$0\r\n\r\n$3\r\n\u{0}\r\n\r\n"
        #expect(out == Array(expected.utf8))
        out = []
        RedisConnection.encode(Array(repeating: "x", count: 12), into: &out)
        #expect(out == Array(("*12\r\n" + String(repeating: "$1\r\nx\r\n", count: 12)).utf8))

        let server = try TestRedis()
        defer { server.stop() }
        let redis = try RedisClient(url: server.url)
        let big = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let text = String(repeating: "Grüße 日本 \r\n\u{0}", count: 10_000)
        let replies = try await redis.pipeline([
            ["SET", "empty", .text("")], ["GET", "empty"], ["STRLEN", "empty"],
            ["SET", "big", .data(big)], ["GET", "big"],
            ["SET", .text("ключ"), .text(text)], ["GET", .text("ключ")],
            ["SET", "bin", .data([13, 10, 0, 36, 42, 13])], ["GET", "bin"],
        ])
        #expect(replies[1] == .bulk([]) && replies[2] == .integer(0))
        #expect(replies[4] == .bulk(big))
        #expect(replies[6] == .bulk(Array(text.utf8)))
        #expect(replies[8] == .bulk([13, 10, 0, 36, 42, 13]))
        #expect(try await redis.run("GET", "ключ").string == text)
    }
}
