// The operators' endpoints against the running API and a real Redis: throttles, breakers and
// suppressions, with the scope of organisation-bound keys.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernAPI

extension APIDaemonTests {
    func call(_ h: Harness, _ method: String, _ path: String,
              key: String = APIDaemonTests.key) async throws -> RawReply {
        try await httpRequest(h.address, method, path,
                              headers: [("Authorization", "Bearer \(key)")])
    }

    @Test func suppressionsCanBeAddedListedAndRemovedWithinTheKeysScope() async throws {
        let h = try await Harness()
        let added = try await call(h, "PUT", "/v1/suppressions/acme/Someone%2Btag@Inbox.example")
        #expect(added.status == 201)
        #expect(added.json["address"] as? String == "someone+tag@inbox.example")
        #expect(try await call(h, "PUT", "/v1/suppressions/acme/someone+tag@inbox.example")
                .status == 200)
        let list = try await call(h, "GET", "/v1/suppressions/acme", key: APIDaemonTests.acmeKey)
        #expect(list.status == 200)
        #expect(list.json["addresses"] as? [String] == ["someone+tag@inbox.example"])
        let csv = try await call(h, "GET", "/v1/suppressions/acme?format=csv")
        #expect(csv.status == 200)
        #expect(csv.headers["Content-Type"] == "text/csv; charset=utf-8")
        #expect(csv.text == "address\r\nsomeone+tag@inbox.example\r\n")
        let xml = try await call(h, "GET", "/v1/suppressions/acme?format=xml")
        #expect(xml.status == 400 && xml.errorField == "format")
        #expect(try await call(h, "GET", "/v1/suppressions/acme?format=json").json["org"]
                as? String == "acme")
        #expect(try await h.redis.run("SMEMBERS", h.keys.suppressions("acme"))
                .array?.compactMap(\.string) == ["someone+tag@inbox.example"])

        // An acme key cannot see or change another organisation's list.
        let foreign = try await call(h, "GET", "/v1/suppressions/globex",
                                     key: APIDaemonTests.acmeKey)
        #expect(foreign.status == 404)
        #expect(try await call(h, "PUT", "/v1/suppressions/globex/a@b.example",
                               key: APIDaemonTests.acmeKey).status == 404)
        let bad = try await call(h, "PUT", "/v1/suppressions/acme/not-an-address")
        #expect(bad.status == 400 && bad.errorField == "address")
        let badOrg = try await call(h, "GET", "/v1/suppressions/ACME!")
        #expect(badOrg.status == 400 && badOrg.errorField == "org")
        #expect(try await call(h, "POST", "/v1/suppressions/acme").status == 405)

        #expect(try await call(h, "DELETE", "/v1/suppressions/acme/someone+tag@inbox.example")
                .status == 200)
        #expect(try await call(h, "DELETE", "/v1/suppressions/acme/someone+tag@inbox.example")
                .status == 404)
        #expect(try await h.redis.run("SCARD", h.keys.suppressions("acme")).int == 0)

        // Either form of an internationalised domain is one address; removing one also
        // removes the form lists held before (the address lowercased as given).
        let idn = try await call(h, "PUT", "/v1/suppressions/acme/Dan@B%C3%9CCHER.example")
        #expect(idn.status == 201 && idn.json["address"] as? String == "dan@xn--bcher-kva.example")
        #expect(try await call(h, "PUT", "/v1/suppressions/acme/dan@xn--bcher-kva.example")
                .status == 200)
        try await h.redis.run("SADD", h.keys.suppressions("acme"), "dan@bücher.example")
        #expect(try await call(h, "DELETE", "/v1/suppressions/acme/DAN@b%C3%BCcher.example")
                .status == 200)
        #expect(try await h.redis.run("SCARD", h.keys.suppressions("acme")).int == 0)
        await h.stop()
    }

    @Test func engagementIsSetInBulkAndReadWithinTheKeysScope() async throws {
        let h = try await Harness()
        func put(_ org: String, _ body: String, key: String = APIDaemonTests.key) async throws
            -> RawReply
        {
            try await httpRequest(h.address, "PUT", "/v1/engagement/\(org)",
                                  headers: [("Authorization", "Bearer \(key)"),
                                            ("Content-Type", "application/json")],
                                  body: Array(body.utf8))
        }
        let set = try await put("acme", #"{"Alice@Inbox.example": 92, "bob@inbox.example": 10,"#
                                + #" "ÉLODIE@BÜCHER.example": 40}"#)
        #expect(set.status == 200 && set.json["set"] as? Int == 3)
        // Keyed as the record keys its recipient: lowercased, the domain in A-labels.
        let elodie = "élodie@xn--bcher-kva.example"
        #expect(try await h.redis.run("HGETALL", h.keys.engagement("acme")).fieldMap
                == ["alice@inbox.example": "92", "bob@inbox.example": "10", elodie: "40"])
        let sentToElodie = try await h.post(APIDaemonTests.valid(["org": "acme",
                                                                  "to": "Élodie@bücher.example"]))
        let elodieID = try #require(sentToElodie.json["id"] as? String)
        #expect(try await h.redis.run("HGET", h.keys.message(elodieID), "rcpt_key").string
                == elodie)
        let asked = try await call(h, "GET", "/v1/engagement/acme/ELODIE@xn--bcher-kva.example")
        #expect(asked.json["engagement"] is NSNull)   // É is not E
        let found = try await call(h, "GET", "/v1/engagement/acme/%C3%A9lodie@B%C3%9CCHER.example")
        #expect(found.json["engagement"] as? Int == 40)
        #expect(try await h.redis.run("HDEL", h.keys.engagement("acme"), elodie).int == 1)
        let one = try await call(h, "GET", "/v1/engagement/acme/alice@inbox.example",
                                 key: APIDaemonTests.acmeKey)
        #expect(one.status == 200 && one.json["engagement"] as? Int == 92)
        // null removes; a bad score or address changes nothing.
        #expect(try await put("acme", #"{"bob@inbox.example": null}"#).json["removed"] as? Int
                == 1)
        // A score that is not there is not counted as removed.
        #expect(try await put("acme", #"{"bob@inbox.example": null}"#).json["removed"] as? Int
                == 0)
        let gone = try await call(h, "GET", "/v1/engagement/acme/bob@inbox.example")
        #expect(gone.status == 200 && gone.json["engagement"] is NSNull)
        let bad = try await put("acme", #"{"carol@inbox.example": 101}"#)
        #expect(bad.status == 422 && bad.errorField == "carol@inbox.example")
        #expect(try await put("acme", #"{"not-an-address": 5}"#).status == 422)
        #expect(try await put("acme", "[1]").status == 400)
        #expect(try await h.redis.run("HLEN", h.keys.engagement("acme")).int == 1)
        // Another organisation's store is not an acme key's.
        #expect(try await put("globex", #"{"a@b.example": 1}"#, key: APIDaemonTests.acmeKey)
                .status == 404)
        #expect(try await call(h, "POST", "/v1/engagement/acme").status == 405)

        // A send with a score of its own keeps it, with its source, on the record.
        let sent = try await h.post(APIDaemonTests.valid(["org": "acme", "engagement": 75]))
        let id = try #require(sent.json["id"] as? String)
        let record = try await h.redis.run("HGETALL", h.keys.message(id)).fieldMap
        #expect(record["engagement"] == "75" && record["engagement_source"] == "api")
        await h.stop()
    }

    @Test func throttlesAndBreakersShowWhatTheSchedulerSaved() async throws {
        let h = try await Harness()
        try await h.redis.run("HSET", h.keys.throttles, "127.0.0.2|gmail",
                              #"{"ceiling":100,"rate":50,"state":"backing_off","#
                              + #""holdUntilMs":1700000060000,"successes":0,"slowDownsInARow":1,"#
                              + #""reason":"slow down: 421 4.7.0","changedMs":1700000000000}"#)
        try await h.redis.run("HSET", h.keys.breakers, "acme",
                              #"{"state":"open","openedMs":1700000000000,"reason":"bounce"}"#,
                              "globex", #"{"state":"closed","openedMs":0,"reason":""}"#)
        let throttles = try await call(h, "GET", "/v1/throttles")
        #expect(throttles.status == 200)
        let first = try #require((throttles.json["throttles"] as? [[String: Any]])?.first)
        #expect(first["ip"] as? String == "127.0.0.2")
        #expect(first["provider"] as? String == "gmail")
        #expect(first["rate"] as? Double == 50)
        #expect(first["state"] as? String == "backing_off")
        #expect(first["hold_until"] as? String == "2023-11-14T22:14:20.000Z")
        #expect(first["reason"] as? String == "slow down: 421 4.7.0")
        // The throttles are the whole system's: not for a key bound to one organisation.
        #expect(try await call(h, "GET", "/v1/throttles", key: APIDaemonTests.acmeKey)
                .status == 403)

        let all = try await call(h, "GET", "/v1/breakers")
        #expect((all.json["breakers"] as? [[String: Any]])?.map { $0["org"] as? String }
                == ["acme", "globex"])
        let own = try await call(h, "GET", "/v1/breakers", key: APIDaemonTests.acmeKey)
        let mine = try #require((own.json["breakers"] as? [[String: Any]])?.first)
        #expect((own.json["breakers"] as? [Any])?.count == 1)
        #expect(mine["state"] as? String == "open")
        #expect(mine["opened"] as? String == "2023-11-14T22:13:20.000Z")
        await h.stop()
    }

    @Test func anOpsKeyOperatesAndReadsButNeverSends() async throws {
        let h = try await Harness()
        let ops = APIDaemonTests.opsKey
        let sent = try await h.post(APIDaemonTests.valid(["org": "acme"]))
        let id = try #require(sent.json["id"] as? String)
        for path in ["/v1/throttles", "/v1/breakers", "/v1/ips", "/v1/suppressions/acme",
                     "/v1/messages/\(id)"] {
            #expect(try await call(h, "GET", path, key: ops).status == 200, "\(path)")
        }
        #expect(try await call(h, "PUT", "/v1/suppressions/globex/a@b.example", key: ops)
                .status == 201)
        let send = try await h.post(APIDaemonTests.valid(), key: ops)
        #expect(send.status == 403)
        let batch = try await postBatch(h, Self.batch([Self.valid()]), key: ops)
        #expect(batch.status == 403)
        // An organisation's key gets 403 from every endpoint of the system's own state.
        for path in ["/v1/throttles", "/v1/ips"] {
            let reply = try await call(h, "GET", path, key: APIDaemonTests.acmeKey)
            #expect(reply.status == 403, "\(path)")
        }
        #expect(try await h.redis.run("XLEN", h.keys.stream(.submit)).int == 1)
        await h.stop()
    }
}

extension APIDaemonTests {
    /// RFC 4180 read back: records split at CRLF outside quotes, `""` inside quotes a quote.
    static func readCSV(_ text: String) -> [[String]] {
        var records: [[String]] = [], record: [String] = [], field = ""
        var quoted = false, pendingQuote = false
        for c in text {
            if pendingQuote {
                pendingQuote = false
                if c == "\"" { field.append(c); continue }
                quoted = false
            }
            if quoted {
                if c == "\"" { pendingQuote = true } else { field.append(c) }
                continue
            }
            switch c {
            case "\"": quoted = true
            case ",": record.append(field); field = ""
            case "\r\n": record.append(field); records.append(record); (record, field) = ([], "")
            default: field.append(c)
            }
        }
        return records
    }

    @Test func theSuppressionExportQuotesWhatRFC4180Quotes() async throws {
        let h = try await Harness()
        let odd = #""a,b"@inbox.example"#, quote = #""say \"hi\""@inbox.example"#
        for address in [odd, quote, "plain@inbox.example"] {
            let path = "/v1/suppressions/acme/" + address.addingPercentEncoding(
                withAllowedCharacters: .alphanumerics)!
            #expect(try await call(h, "PUT", path).status == 201, "\(address)")
        }
        let csv = try await call(h, "GET", "/v1/suppressions/acme?format=csv")
        #expect(csv.text.contains("\"\"\"a,b\"\"@inbox.example\""))
        let stored = try await call(h, "GET", "/v1/suppressions/acme").json["addresses"]
            as? [String] ?? []
        #expect(stored.count == 3)
        #expect(Self.readCSV(csv.text) == [["address"]] + stored.map { [$0] })
        await h.stop()
    }
}
