// Idempotency-Key against the running API and a real Redis: a retry gets the first answer
// and sends nothing more, another body under the same key is refused, racing duplicates send
// once, and each API key has keys of its own.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernAPI

extension APIDaemonTests {
    func submitted(_ h: Harness) async throws -> Int {
        try await h.redis.run("XLEN", h.keys.stream(.submit)).int ?? -1
    }

    @Test func aRetriedSendGetsTheFirstAnswerAndSendsOnce() async throws {
        let h = try await Harness()
        let body = Self.json(Self.valid())
        let first = try await h.post(body, headers: [("Idempotency-Key", "order-17")])
        #expect(first.status == 202)
        #expect(first.headers["Idempotent-Replayed"] == nil)
        let again = try await h.post(body, headers: [("Idempotency-Key", "order-17")])
        #expect(again.status == 202)
        #expect(again.body == first.body)
        #expect(again.headers["Content-Type"] == first.headers["Content-Type"])
        #expect(again.headers["Idempotent-Replayed"] == "true")
        #expect(try await submitted(h) == 1)

        // The same key for another body, or on the batch endpoint, is a client error.
        let other = try await h.post(Self.json(Self.valid(["subject": "other"])),
                                     headers: [("Idempotency-Key", "order-17")])
        #expect(other.status == 422 && other.errorField == "Idempotency-Key")
        let batch = try await postBatch(h, Self.batch([Self.valid()]),
                                        headers: [("Idempotency-Key", "order-17")])
        #expect(batch.status == 422 && batch.errorField == "Idempotency-Key")
        // Another API key has its own keys; without a key every request sends.
        let acme = try await h.post(body, key: APIDaemonTests.acmeKey,
                                    headers: [("Idempotency-Key", "order-17")])
        #expect(acme.status == 202 && acme.json["id"] as? String != first.json["id"] as? String)
        #expect(try await h.post(body).status == 202)
        #expect(try await submitted(h) == 3)

        // The answer is kept for a day.
        let stored = try await h.redis.run("KEYS", "tern:idem:*").array ?? []
        #expect(stored.count == 2)
        let ttl = try await h.redis.run("TTL", stored[0].string ?? "").int ?? 0
        #expect(ttl > 86000 && ttl <= 86400)
        await h.stop()
    }

    @Test func aRefusalIsReplayedAndABadKeyIsRefused() async throws {
        let h = try await Harness()
        let bad = Self.json(Self.valid(["to": "alice@localhost"]))
        let first = try await h.post(bad, headers: [("Idempotency-Key", "k1")])
        #expect(first.status == 422)
        let again = try await h.post(bad, headers: [("Idempotency-Key", "k1")])
        #expect(again.status == 422 && again.body == first.body)
        #expect(again.headers["Idempotent-Replayed"] == "true")

        for headers in [[("Idempotency-Key", String(repeating: "k", count: 256))],
                        [("Idempotency-Key", "a"), ("Idempotency-Key", "b")]] {
            let reply = try await h.post(Self.json(Self.valid()), headers: headers)
            #expect(reply.status == 400 && reply.errorField == "Idempotency-Key")
        }
        #expect(try await submitted(h) == 0)
        await h.stop()
    }

    @Test func aKeyInUseIsAConflictUntilItsAnswerIsIn() async throws {
        let h = try await Harness()
        let body = Self.json(Self.valid())
        // A claim as a request in progress leaves it.
        let hex = { (b: [UInt8]) in b.map { String(format: "%02x", $0) }.joined() }
        let keyID = hex(Array(Crypto.sha256(Array(APIDaemonTests.key.utf8)).prefix(8)))
        let redisKey = h.keys.idempotency(keyID, hex(Crypto.sha256(Array("busy".utf8))))
        let fingerprint = hex(Crypto.sha256(Array("/v1/send\n".utf8) + body))
        try await h.redis.run("SET", redisKey, "claim " + fingerprint, "PX", "60000")
        let busy = try await h.post(body, headers: [("Idempotency-Key", "busy")])
        #expect(busy.status == 409 && busy.errorField == "Idempotency-Key")
        #expect(busy.headers["Retry-After"] == "1")
        let otherBody = try await h.post(Self.json(Self.valid(["text": "x"])),
                                         headers: [("Idempotency-Key", "busy")])
        #expect(otherBody.status == 422)
        #expect(try await submitted(h) == 0)
        await h.stop()
    }

    @Test func racingDuplicatesSendOnce() async throws {
        let h = try await Harness()
        let body = Self.json(Self.valid())
        let batchBody = Self.batch([Self.valid(), Self.valid(["to": "b@inbox.example"])])
        let address = h.address
        let replies = try await withThrowingTaskGroup(of: RawReply.self) { group in
            for i in 0..<16 {
                group.addTask {
                    let batch = i % 2 == 1
                    return try await httpRequest(
                        address, "POST", batch ? "/v1/send/batch" : "/v1/send",
                        headers: [("Authorization", "Bearer \(APIDaemonTests.key)"),
                                  ("Content-Type", "application/json"),
                                  ("Idempotency-Key", batch ? "race-batch" : "race-one")],
                        body: batch ? batchBody : body)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        // Each racer is answered either with the first answer or with a conflict.
        let ones = replies.filter { $0.status == 202 }.compactMap { $0.json["id"] as? String }
        let batches = replies.filter { $0.status == 200 }.map(\.body)
        #expect(replies.allSatisfy { [200, 202, 409].contains($0.status) })
        #expect(Set(ones).count == 1 && Set(batches).count == 1)
        #expect(try await submitted(h) == 3)

        let replay = try await postBatch(h, batchBody, headers: [("Idempotency-Key", "race-batch")])
        #expect(replay.status == 200 && replay.body == batches.first)
        #expect(try await submitted(h) == 3)
        await h.stop()
    }
}
