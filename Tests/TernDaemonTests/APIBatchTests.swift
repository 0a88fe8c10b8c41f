// POST /v1/send/batch against the running API and a real Redis: each message is judged on
// its own, refusals name their index and field, the accepted ones are written as /v1/send
// writes them, and nothing is written when nothing is accepted.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernAPI

extension APIDaemonTests {
    static func batch(_ messages: [Any]) -> [UInt8] {
        Array(try! JSONSerialization.data(withJSONObject: ["messages": messages]))
    }

    func postBatch(_ h: Harness, _ body: [UInt8], key: String = APIDaemonTests.key,
                   headers: [(String, String)] = []) async throws -> RawReply {
        var all = [("Authorization", "Bearer \(key)")] + headers
        if !headers.contains(where: { $0.0 == "Content-Type" }) {
            all.append(("Content-Type", "application/json"))
        }
        return try await httpRequest(h.address, "POST", "/v1/send/batch", headers: all,
                                     body: body)
    }

    @Test func aBatchAcceptsEachValidMessageAndNamesEachRefusal() async throws {
        let h = try await Harness()
        let reply = try await postBatch(h, Self.batch([
            Self.valid(["metadata": ["n": 0]]),
            Self.valid(["to": "alice@localhost"]),
            Self.valid(["to": "bob@inbox.example", "metadata": ["n": 2]]),
            "not an object",
            Self.valid(["headers": ["X-Test": "a\r\nBcc: e@x.example"]]),
            Self.valid(["org": "acme", "pool": "bulk", "metadata": ["n": 5]]),
            // A field name the answer must escape to stay JSON.
            Self.valid(["we\"ird\n\u{1}key": 1]),
        ]))
        #expect(reply.status == 200, "\(reply.text)")
        #expect(reply.json["accepted"] as? Int == 3)
        #expect(reply.json["refused"] as? Int == 4)
        let results = try #require(reply.json["results"] as? [[String: Any]])
        #expect(results.map { $0["index"] as? Int } == [0, 1, 2, 3, 4, 5, 6])
        #expect(results.map { $0["status"] as? Int } == [202, 422, 202, 422, 422, 202, 422])
        #expect(results.map { $0["field"] as? String }
                == [nil, "messages[1].to", nil, "messages[3]", "messages[4].headers.X-Test", nil,
                    "messages[6].we\"ird\n\u{1}key"])
        #expect((results[1]["detail"] as? String)?.contains("localhost") == true)
        #expect(results[3]["detail"] as? String == "must be a JSON object")
        let ids = [0, 2, 5].compactMap { results[$0]["id"] as? String }
        #expect(ids.count == 3 && Set(ids).count == 3 && ids.allSatisfy(MessageID.isValid))

        // Each accepted message is written as /v1/send writes it, in the batch's order.
        let submit = try await h.redis.run("XRANGE", h.keys.stream(.submit), "-", "+")
        #expect(submit.array?.compactMap { $0.array?[1].fieldMap["id"] } == ids)
        let events = try await h.redis.run("XRANGE", h.keys.stream(.events), "-", "+")
        #expect(events.array?.compactMap { $0.array?[1].fieldMap["event"] }
                == ["accepted", "accepted", "accepted"])
        for (id, n) in zip(ids, [0, 2, 5]) {
            let record = try await h.redis.run("HGETALL", h.keys.message(id)).fieldMap
            #expect(record["state"] == "queued")
            #expect(record["metadata"] == #"{"n":\#(n)}"#)
            #expect(record["body"]?.contains("Message-ID: <\(id)@api.tern.test>") == true)
            #expect(try await h.redis.run("LLEN", h.keys.history(id)).int == 1)
            #expect(try await h.redis.run("TTL", h.keys.message(id)).int ?? -1 > 3600)
        }
        let last = try await h.redis.run("HMGET", h.keys.message(ids[2]), "org", "pool")
        #expect(last.array?.compactMap(\.string) == ["acme", "bulk"])
        #expect(try await h.redis.run("HGET", h.keys.counters, "dkim.unsigned").string == "3")
        #expect(h.logs.records.filter { $0.message == "accepted" }.count == 3)

        // The metrics count messages, not requests.
        let scrape = try await APIMetricsScrape.text(h)
        #expect(scrape.contains("tern_api_messages_accepted_total 3"))
        #expect(scrape.contains(#"tern_api_messages_refused_total{reason="invalid"} 4"#))
        await h.stop()
    }

    @Test func aBatchWithNothingAcceptableIsA422ThatListsEveryError() async throws {
        let h = try await Harness()
        let reply = try await postBatch(h, Self.batch([
            Self.valid(["to": "alice@[127.0.0.1]"]), Self.valid(["cc": "b@inbox.example"]),
        ]))
        #expect(reply.status == 422)
        #expect(reply.errorField == "messages")
        let errors = try #require(reply.json["errors"] as? [[String: Any]])
        #expect(errors.map { $0["field"] as? String } == ["messages[0].to", "messages[1].cc"])
        #expect(errors.map { $0["status"] as? Int } == [422, 422])
        #expect(try await h.storedKeys() == [])
        await h.stop()
    }

    @Test func aBatchThatCannotBeReadIsRefusedWhole() async throws {
        let h = try await Harness(env: ["TERN_API_MAX_BATCH": "3"])
        // body, status, field
        let cases: [(String, Int, String)] = [
            (#"{"messages": ["#, 400, "body"),
            ("[]", 400, "body"),
            ("{}", 422, "messages"),
            (#"{"messages": {}}"#, 422, "messages"),
            (#"{"messages": []}"#, 422, "messages"),
            (#"{"messages": [{}, {}, {}, {}]}"#, 422, "messages"),
            (#"{"messages": [], "org": "acme"}"#, 422, "org"),
        ]
        for (body, status, field) in cases {
            let reply = try await postBatch(h, Array(body.utf8))
            #expect(reply.status == status, "\(body): \(reply.text)")
            #expect(reply.errorField == field, "\(body): \(reply.text)")
        }
        #expect(try await postBatch(h, Self.batch([Self.valid()]), key: "nope").status == 403)
        let wrongType = try await postBatch(h, Self.batch([Self.valid()]),
                                            headers: [("Content-Type", "text/plain")])
        #expect(wrongType.status == 415)
        #expect(try await h.get("/v1/send/batch").headers["Allow"] == "POST")
        #expect(try await h.storedKeys() == [])
        await h.stop()
    }

    @Test func aBoundKeysBatchSendsForItsOrgOnly() async throws {
        let h = try await Harness()
        let reply = try await postBatch(h, Self.batch([
            Self.valid(), Self.valid(["org": "globex"]), Self.valid(["org": "acme"]),
        ]), key: APIDaemonTests.acmeKey)
        #expect(reply.status == 200)
        let results = try #require(reply.json["results"] as? [[String: Any]])
        #expect(results.map { $0["status"] as? Int } == [202, 403, 202])
        #expect(results[1]["field"] as? String == "messages[1].org")
        for id in [0, 2].compactMap({ results[$0]["id"] as? String }) {
            #expect(try await h.redis.run("HGET", h.keys.message(id), "org").string == "acme")
        }
        await h.stop()
    }

    @Test func aBatchIsWrittenWholeOrNotAtAll() async throws {
        let h = try await Harness(redisURL: "redis://127.0.0.1:\(freePort())")
        let reply = try await postBatch(h, Self.batch([Self.valid(), Self.valid()]))
        #expect(reply.status == 503)
        #expect(reply.headers["Retry-After"] == "5")
        await h.stop()
    }
}

/// The API's /metrics as text.
enum APIMetricsScrape {
    static func text(_ h: APIDaemonTests.Harness) async throws -> String {
        try await httpRequest(h.address, "GET", "/metrics").text
    }
}
