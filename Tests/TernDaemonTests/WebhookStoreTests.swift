// The webhook queues in a real Redis, driven step by step: which event may be posted when,
// and what each outcome leaves behind. This is where order per message is decided.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernAPI

@Suite(.serialized) struct WebhookStoreTests {
    let server: TestRedis
    let store: WebhookStore
    let stream: String

    init() async throws {
        server = try TestRedis()
        let keys = Keys(prefix: "t:")
        store = WebhookStore(redis: try RedisClient(url: server.url), keys: keys)
        stream = keys.stream(.events)
        try await store.ensureGroup()
    }

    /// Appends a message event and returns its entry.
    func append(_ message: String, _ type: String) async throws -> StreamEntry {
        let fields = ["id": message, "event": type,
                      "json": #"{"event":"\#(type)","id":"\#(message)","org":"acme"}"#]
        let id = try await store.redis.run(["XADD", stream, "*"]
            + fields.flatMap { [$0.key, $0.value] }).string ?? ""
        return StreamEntry(id: id, fields: fields)
    }

    /// Reads `count` new entries as `consumer` (they are pending until fanned out).
    func read(_ consumer: String, _ count: Int) async throws -> [StreamEntry] {
        try await store.redis.readGroup(stream: stream, group: "webhooks", consumer: consumer,
                                        count: count, block: nil)
    }

    func fanOut(_ entry: StreamEntry) async throws {
        try await store.fanOut(entryID: entry.id, event: WebhookEvent(entry: entry),
                               endpoints: ["e"], nowMs: 1000)
    }

    func claim(at now: Int64 = 1000) async throws -> [String] {
        try await store.claim("e", limit: 10, nowMs: now, leaseUntilMs: now + 60_000).claims
            .map(\.eventID).sorted()
    }

    @Test func nothingOvertakesAnEntryStillPendingInTheGroup() async throws {
        defer { server.stop() }
        let a1 = try await append("a", "accepted")
        let a2 = try await append("a", "delivered")
        let b1 = try await append("b", "accepted")
        // One process read a1 and died; another read and fanned out the rest.
        #expect(try await read("dead", 1).map(\.id) == [a1.id])
        #expect(try await read("live", 10).map(\.id) == [a2.id, b1.id])
        try await fanOut(a2)
        try await fanOut(b1)
        #expect(try await claim().isEmpty)

        // a1 is taken over and fanned out: it goes first for a, b goes beside it.
        try await fanOut(a1)
        let claims = try await store.claim("e", limit: 10, nowMs: 2000,
                                           leaseUntilMs: 62_000).claims
        #expect(claims.map(\.eventID).sorted() == [a1.id, b1.id].sorted())
        // Leased: not handed out again until the lease ends.
        #expect(try await claim(at: 3000).isEmpty)

        let first = try #require(claims.first { $0.eventID == a1.id })
        #expect(try await store.delivered("e", first, nowMs: 4000))
        #expect(try await claim(at: 4000) == [a2.id])
        // A late outcome for an event already gone changes nothing.
        #expect(try await store.delivered("e", first, nowMs: 4001) == false)
    }

    @Test func aFailedEventHoldsItsMessageUntilItGoesOrIsGivenUp() async throws {
        defer { server.stop() }
        let a1 = try await append("a", "accepted")
        let a2 = try await append("a", "deferred")
        for entry in try await read("live", 10) { try await fanOut(entry) }
        var claim = try #require(try await store.claim("e", limit: 10, nowMs: 1000,
                                                       leaseUntilMs: 61_000).claims.first)
        #expect(claim.eventID == a1.id && claim.failures == 0)
        try await store.failed("e", claim, error: "HTTP 500", failures: 1, firstFailureMs: 1000,
                               retryAtMs: 5000, nowMs: 1000)
        #expect(try await self.claim(at: 4999).isEmpty)
        claim = try #require(try await store.claim("e", limit: 10, nowMs: 5000,
                                                   leaseUntilMs: 65_000).claims.first)
        #expect(claim.eventID == a1.id && claim.failures == 1 && claim.firstFailureMs == 1000)

        try await store.gaveUp("e", claim, error: "HTTP 500", failures: 2, nowMs: 6000, keep: 10)
        #expect(try await self.claim(at: 6000) == [a2.id])
        let failed = try await store.failedList("e", limit: 10)
        #expect(failed.map { WebhookEvent.streamID(sortable: $0.0) } == [a1.id])
        #expect(failed.first?.1["error"] as? String == "HTTP 500")
        let status = try #require(try await store.status(["e"])["e"])
        #expect(status.pending == 1 && status.failedKept == 1 && status.stats["failed"] == "1")

        // An operator's retry puts it back, due at once, in its own place.
        let ids = try await store.failedIDs("e", limit: 10)
        #expect(try await store.retryFailed("e", ids: ids, nowMs: 7000) == 1)
        #expect(try await store.retryFailed("e", ids: ids, nowMs: 7000) == 0)
        #expect(try await store.failedList("e", limit: 10).isEmpty)
    }

    @Test func onlyTheNewestGivenUpDeliveriesAreKept() async throws {
        defer { server.stop() }
        for n in 0..<3 { _ = try await append("m\(n)", "accepted") }
        for entry in try await read("live", 10) { try await fanOut(entry) }
        let claims = try await store.claim("e", limit: 10, nowMs: 1000,
                                           leaseUntilMs: 61_000).claims
        #expect(claims.count == 3)
        for claim in claims.sorted(by: { $0.sortable < $1.sortable }) {
            try await store.gaveUp("e", claim, error: "refused", failures: 1, nowMs: 2000,
                                   keep: 2)
        }
        #expect(try await store.failedIDs("e", limit: 10)
                == claims.map(\.sortable).sorted().suffix(2))
        #expect(try await store.status(["e"])["e"]?.stats["failed"] == "3")
    }
}
