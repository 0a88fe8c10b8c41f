// The operators' controls against the running API and a real Redis: cancel, pauses and the
// state of groups, providers and pools, with the scope of organisation-bound keys.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernAPI

extension APIDaemonTests {
    func request(_ h: Harness, _ method: String, _ path: String, json: String? = nil,
                 key: String = APIDaemonTests.key) async throws -> RawReply {
        var headers = [("Authorization", "Bearer \(key)")]
        if json != nil { headers.append(("Content-Type", "application/json")) }
        return try await httpRequest(h.address, method, path, headers: headers,
                                     body: Array((json ?? "").utf8))
    }

    @Test func cancelEndsAWaitingMessageAndRefusesOneBeingSent() async throws {
        let h = try await Harness()
        let sent = try await h.post(APIDaemonTests.valid(["org": "acme"]))
        let id = try #require(sent.json["id"] as? String)

        // Another organisation's key cannot even see it.
        let globex = try await h.post(APIDaemonTests.valid(["org": "globex"]))
        let foreign = try #require(globex.json["id"] as? String)
        try await h.redis.run("HSET", h.keys.message(id), "held", "pause")
        #expect(try await h.get("/v1/messages/\(id)").json["held"] as? String == "pause")
        let hidden = try await request(h, "POST", "/v1/messages/\(foreign)/cancel",
                                       key: APIDaemonTests.acmeKey)
        #expect(hidden.status == 404 && hidden.errorField == "id")

        let done = try await request(h, "POST", "/v1/messages/\(id)/cancel",
                                     key: APIDaemonTests.acmeKey)
        #expect(done.status == 200)
        #expect(done.json["state"] as? String == "cancelled")
        #expect(try await h.redis.run("HGET", h.keys.message(id), "state").string == "cancelled")
        let events = try await h.redis.run("XRANGE", h.keys.stream(.events), "-", "+").array ?? []
        let mine = events.compactMap { $0.array?[1].fieldMap }.filter { $0["id"] == id }
        #expect(mine.map { $0["event"] } == ["accepted", "cancelled"])
        let event = try #require(mine.last?["json"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(event.utf8))
                                  as? [String: Any])
        #expect(object["org"] as? String == "acme")
        #expect(object["to"] as? String == "Alice@inbox.example")
        #expect(object["reason"] as? String == "cancelled by organisation acme")
        let lookup = try await h.get("/v1/messages/\(id)")
        let history = lookup.json["history"] as? [[String: Any]] ?? []
        #expect(history.map { $0["event"] as? String } == ["accepted", "cancelled"])

        let again = try await request(h, "POST", "/v1/messages/\(id)/cancel")
        #expect(again.status == 409)
        // RFC 9110 §15.5.10: the problem's title is the status's reason phrase.
        #expect(again.error["title"] as? String == "Conflict")
        #expect((again.error["detail"] as? String)?.hasPrefix("the message is cancelled") == true)

        try await h.redis.run("HSET", h.keys.message(foreign), "state", "sending")
        let busy = try await request(h, "POST", "/v1/messages/\(foreign)/cancel")
        #expect(busy.status == 409 && busy.errorField == "state")
        #expect((busy.error["detail"] as? String)?.contains("in a sender's hands") == true)
        #expect(try await h.redis.run("HGET", h.keys.message(foreign), "state").string
                == "sending")

        #expect(try await request(h, "POST", "/v1/messages/nope/cancel").status == 400)
        #expect(try await request(h, "POST", "/v1/messages/\(MessageID.generate())/cancel")
                .status == 404)
        #expect(try await request(h, "GET", "/v1/messages/\(id)/cancel").status == 405)
        #expect(try await httpRequest(h.address, "POST", "/v1/messages/\(id)/cancel").status
                == 401)
        await h.stop()
    }

    @Test func pausesAreSetListedAndLiftedWithinTheKeysScope() async throws {
        let h = try await Harness()
        let path = "/v1/pauses/group/default:inbox.example"
        let made = try await request(h, "PUT", path, json: #"{"reason": "MX migration"}"#)
        #expect(made.status == 201)
        #expect(made.json["kind"] as? String == "group")
        #expect(made.json["name"] as? String == "default:inbox.example")
        #expect(made.json["reason"] as? String == "MX migration")
        #expect(try await request(h, "PUT", path).status == 200)
        #expect(try await request(h, "PUT", "/v1/pauses/provider/gmail").status == 201)
        let list = try await request(h, "GET", "/v1/pauses")
        #expect((list.json["pauses"] as? [[String: Any]])?.map { $0["name"] as? String }
                == ["default:inbox.example", "gmail"])
        // The pause is in Redis, where the scheduler's release step reads it.
        #expect(try await h.redis.run("HEXISTS", h.keys.pauses, "group:default:inbox.example")
                .int == 1)

        // An organisation's key pauses its own organisation only, and sees only that.
        let acme = APIDaemonTests.acmeKey
        #expect(try await request(h, "PUT", "/v1/pauses/org/acme", key: acme).status == 201)
        #expect(try await request(h, "PUT", "/v1/pauses/org/globex", key: acme).status == 403)
        #expect(try await request(h, "PUT", "/v1/pauses/pool/default", key: acme).status == 403)
        let own = try await request(h, "GET", "/v1/pauses", key: acme)
        #expect((own.json["pauses"] as? [[String: Any]])?.map { $0["name"] as? String }
                == ["acme"])

        #expect(try await request(h, "PUT", "/v1/pauses/planet/x").status == 404)
        let noColon = try await request(h, "PUT", "/v1/pauses/group/inbox.example")
        #expect(noColon.status == 400 && noColon.errorField == "name")
        let extra = try await request(h, "PUT", path, json: #"{"why": "x"}"#)
        #expect(extra.status == 400 && extra.errorField == "why")
        #expect(try await request(h, "POST", path).status == 405)

        #expect(try await request(h, "DELETE", path).status == 200)
        #expect(try await request(h, "DELETE", path).status == 404)
        #expect(try await request(h, "DELETE", "/v1/pauses/org/acme", key: acme).status == 200)
        #expect(try await h.redis.run("HKEYS", h.keys.pauses).array?.compactMap(\.string)
                == ["provider:gmail"])
        await h.stop()
    }

    @Test func groupsProvidersAndPoolsShowQueuesRatesAndPauses() async throws {
        let h = try await Harness(env: ["TERN_POOLS": "default=127.0.0.2/out1.example,"
                                        + "127.0.0.3/out2.example;bulk=127.0.0.4/bulk.example"])
        let now = nowMs()
        try await h.redis.run("ZADD", h.keys.dueGroups, String(now - 1000), "default:gmail.com",
                              String(now + 60_000), "bulk:inbox.example")
        try await h.redis.run("ZADD", h.keys.groupQueue("default:gmail.com"), String(now - 1000),
                              "m1", String(now + 5000), "m2")
        try await h.redis.run("ZADD", h.keys.groupQueue("bulk:inbox.example"),
                              String(now + 60_000), "m3")
        try await h.redis.run("HSET", h.keys.throttles, "127.0.0.2|gmail",
                              #"{"ceiling":100,"rate":50,"state":"backing_off","#
                              + #""holdUntilMs":0,"successes":0,"slowDownsInARow":1,"#
                              + #""reason":"slow down: 421 4.7.28","changedMs":1700000000000}"#)
        try await h.redis.run("SET", h.keys.poolActive("default"), "127.0.0.3")
        try await h.redis.run("HSET", h.keys.ipState("127.0.0.2"), "status", "listed",
                              "reason", "listed on zen")
        _ = try await request(h, "PUT", "/v1/pauses/pool/bulk")
        // Connection leases (scored by expiry): two live from 127.0.0.2 and one from
        // 127.0.0.3 to gmail, one lapsed, and one from the bulk pool's IP, not default's.
        let live = String(now + 60_000), lapsed = String(now - 1000)
        try await h.redis.run("ZADD", h.keys.groupLeases("127.0.0.2|gmail"), live, "a.1",
                              live, "a.2", lapsed, "dead.1")
        try await h.redis.run("ZADD", h.keys.groupLeases("127.0.0.3|gmail"), live, "b.1")
        try await h.redis.run("ZADD", h.keys.groupLeases("127.0.0.4|gmail"), live, "c.1")

        let groups = try await request(h, "GET", "/v1/groups")
        #expect(groups.status == 200)
        let list = try #require(groups.json["groups"] as? [[String: Any]])
        #expect(list.map { $0["group"] as? String } == ["default:gmail.com", "bulk:inbox.example"])
        #expect(list[0]["provider"] as? String == "gmail")
        #expect(list[0]["queued"] as? Int == 2 && list[0]["due_now"] as? Int == 1)
        #expect(list[0]["connections"] as? Int == 3)
        #expect(list[1]["provider"] as? String == "default")
        #expect(list[1]["connections"] is NSNull)
        #expect(list[1]["paused"] as? [String] == ["pool:bulk"])

        let providers = try await request(h, "GET", "/v1/providers")
        let all = try #require(providers.json["providers"] as? [[String: Any]])
        let gmail = try #require(all.first { $0["provider"] as? String == "gmail" })
        #expect(gmail["queued"] as? Int == 2 && gmail["groups"] as? Int == 1)
        let rate = try #require((gmail["throttles"] as? [[String: Any]])?.first)
        #expect(rate["ip"] as? String == "127.0.0.2" && rate["rate"] as? Double == 50)
        #expect(rate["state"] as? String == "backing_off")
        #expect(rate["reason"] as? String == "slow down: 421 4.7.28")
        #expect(rate["changed"] as? String == "2023-11-14T22:13:20.000Z")

        let pools = try await request(h, "GET", "/v1/pools")
        let byName = Dictionary(uniqueKeysWithValues: (pools.json["pools"] as? [[String: Any]]
            ?? []).map { ($0["pool"] as? String ?? "", $0) })
        #expect(byName["default"]?["active"] as? Int == 1)
        #expect(byName["default"]?["listed"] as? Int == 1)
        #expect(byName["default"]?["queued"] as? Int == 2)
        #expect(byName["bulk"]?["paused"] as? Bool == true)
        #expect(byName["bulk"]?["active"] as? Int == 1)
        let ips = byName["default"]?["ips"] as? [[String: Any]] ?? []
        #expect(ips.map { $0["active"] as? Bool } == [false, true])
        #expect(ips.first?["reason"] as? String == "listed on zen")

        for path in ["/v1/groups", "/v1/providers", "/v1/pools"] {
            #expect(try await request(h, "GET", path, key: APIDaemonTests.acmeKey).status == 403)
            #expect(try await request(h, "POST", path).status == 405)
        }
        await h.stop()
    }
}

extension APIDaemonTests {
    @Test func anOrganisationsKeyLiftsOnlyThePausesItsOrganisationSet() async throws {
        let h = try await Harness()
        let (acme, ops) = (APIDaemonTests.acmeKey, APIDaemonTests.opsKey)
        let set = try await request(h, "PUT", "/v1/pauses/org/acme", key: ops)
        #expect(set.status == 201)
        let by = try #require(set.json["by"] as? String)
        #expect(by.hasPrefix("ops:") && by.count == "ops:".count + 16)

        // acme's key can neither lift nor take over the operator's pause.
        let lift = try await request(h, "DELETE", "/v1/pauses/org/acme", key: acme)
        #expect(lift.status == 403 && lift.errorField == "name")
        #expect((lift.error["detail"] as? String)?.contains("org acme was set by ops:") == true)
        let takeOver = try await request(h, "PUT", "/v1/pauses/org/acme", key: acme)
        #expect(takeOver.status == 403)
        #expect(try await h.redis.run("HEXISTS", h.keys.pauses, "org:acme").int == 1)
        let listed = try await request(h, "GET", "/v1/pauses", key: acme)
        #expect((listed.json["pauses"] as? [[String: Any]])?.first?["by"] as? String == by)

        // Its own pause it lifts; an operator lifts anyone's.
        #expect(try await request(h, "DELETE", "/v1/pauses/org/acme", key: ops).status == 200)
        let own = try await request(h, "PUT", "/v1/pauses/org/acme", key: acme)
        #expect(own.status == 201)
        #expect((own.json["by"] as? String)?.hasPrefix("org:acme:") == true)
        #expect(try await request(h, "PUT", "/v1/pauses/org/acme", key: acme).status == 200)
        #expect(try await request(h, "DELETE", "/v1/pauses/org/acme", key: acme).status == 200)
        let all = try await request(h, "PUT", "/v1/pauses/org/acme")
        #expect((all.json["by"] as? String)?.hasPrefix("all:") == true)
        await h.stop()
    }

    @Test func aPauseReasonHoldsNoControlCharacters() async throws {
        let h = try await Harness()
        let path = "/v1/pauses/org/acme"
        for reason in ["a\rb", "a\nb", "a\u{0}b", "\u{1B}[2J", "a\u{7F}", "a\u{85}b",
                       "a\u{202E}b", String(repeating: "x", count: 501)] {
            let body = String(decoding: try JSONSerialization.data(
                withJSONObject: ["reason": reason]), as: UTF8.self)
            for key in [APIDaemonTests.key, APIDaemonTests.acmeKey] {
                let reply = try await request(h, "PUT", path, json: body, key: key)
                #expect(reply.status == 422 && reply.errorField == "reason",
                        "\(reason.debugDescription)")
            }
        }
        #expect(try await h.redis.run("HLEN", h.keys.pauses).int == 0)
        let fine = try await request(h, "PUT", path, json: #"{"reason": "Ünïcode, 500 max"}"#)
        #expect(fine.status == 201)
        await h.stop()
    }

    @Test func pauseNamesAreNormalisedAndMustNameWhatExists() async throws {
        let h = try await Harness(env: ["TERN_POOLS": "default=*/a.example;bulk=*/b.example"])
        func put(_ name: String) async throws -> RawReply {
            try await request(h, "PUT", "/v1/pauses/" + name)
        }
        let known = [("provider/GMAIL", "gmail"), ("provider/default", "default"),
                     ("pool/bulk", "bulk"), ("group/default:GMAIL.COM", "default:gmail.com"),
                     ("group/bulk:gmail.com.", "bulk:gmail.com"),
                     ("group/default:B%C3%BCcher.example", "default:xn--bcher-kva.example")]
        for (path, name) in known {
            let reply = try await put(path)
            #expect(reply.status == 201, "\(path)")
            #expect(reply.json["name"] as? String == name, "\(path)")
        }
        let unknown = ["provider/nosuchprovider", "pool/nosuchpool", "pool/Default",
                       "group/a:b:c", "group/nosuchpool:gmail.com"]
        for path in unknown {
            let reply = try await put(path)
            #expect(reply.status == 404 && reply.errorField == "name", "\(path)")
        }
        for path in ["group/default:b:c", "group/default:", "group/default:a..b",
                     "group/default:[192.0.2.1]", "provider/a:b"] {
            let reply = try await put(path)
            #expect(reply.status == 400 && reply.errorField == "name", "\(path)")
        }
        let empty = try await put("org/")
        #expect(empty.error["detail"] as? String
                == "must be 1 to 64 characters of a-z, 0-9, _ and -")
        #expect(try await h.redis.run("HKEYS", h.keys.pauses).array?.compactMap(\.string)
                .sorted() == known.map { String($0.0.prefix { $0 != "/" }) + ":" + $0.1 }.sorted())
        // A resume finds the pause by the same name.
        #expect(try await request(h, "DELETE", "/v1/pauses/provider/Gmail").status == 200)
        await h.stop()
    }

    @Test func everyJSONBodyMustSayItIsJSON() async throws {
        let h = try await Harness(env: ["TERN_POOLS": "default=127.0.0.2/a.example"])
        let auth = ("Authorization", "Bearer \(APIDaemonTests.key)")
        let cases: [(String, String, String)] = [
            ("POST", "/v1/send",
             String(decoding: APIDaemonTests.json(APIDaemonTests.valid()), as: UTF8.self)),
            ("POST", "/v1/send/batch", #"{"messages": []}"#),
            ("PUT", "/v1/pauses/org/acme", #"{"reason": "x"}"#),
            ("PUT", "/v1/engagement/acme", #"{"a@b.example": 5}"#),
            ("POST", "/v1/ips/127.0.0.2/warmup", #"{"action": "start"}"#),
        ]
        for (method, path, body) in cases {
            for headers in [[auth], [auth, ("Content-Type", "text/plain")]] {
                let reply = try await httpRequest(h.address, method, path, headers: headers,
                                                  body: Array(body.utf8))
                #expect(reply.status == 415 && reply.errorField == "Content-Type", "\(path)")
            }
        }
        #expect(try await h.redis.run("HLEN", h.keys.pauses).int == 0)
        // A pause without a body needs no type.
        #expect(try await httpRequest(h.address, "PUT", "/v1/pauses/org/acme",
                                      headers: [auth]).status == 201)
        await h.stop()
    }
}
