// The API daemon against a real Redis, over a real socket: an accepted message leaves its
// record, history, submit entry and event; every refused request leaves nothing at all;
// message lookup, keys bound to orgs, health, routing, settings and logging.

import Foundation
import Synchronization
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernAPI

@Suite(.serialized) struct APIDaemonTests {
    static let key = "sekrit-key-0123456789"
    static let acmeKey = "acme-only-key"
    static let opsKey = "operators-only-key"

    final class Harness: Sendable {
        let server: TestRedis
        let redis: RedisClient
        let keys = Keys()
        let shutdown = Shutdown()
        let task: Task<Void, any Error>
        let address: SocketAddress
        let logs = MemoryLogSink()

        init(env: [String: String] = [:], redisURL: String? = nil) async throws {
            server = try TestRedis()
            redis = try RedisClient(url: server.url)
            address = SocketAddress(host: "127.0.0.1", port: UInt16(freePort()))!
            var values = ["TERN_REDIS_URL": redisURL ?? server.url, "TERN_INSTANCE": "t",
                          "TERN_API_LISTEN": address.description,
                          "TERN_API_KEYS": "\(APIDaemonTests.key), \(APIDaemonTests.acmeKey):acme, "
                              + "\(APIDaemonTests.opsKey):@ops",
                          "TERN_API_MAX_BODY": "20000", "TERN_HOSTNAME": "api.tern.test",
                          "TERN_MAX_AGE": "1h", "TERN_RECORD_TTL": "1d"]
            values.merge(env) { _, b in b }
            let environment = Environment(values)
            let settings = try APISettings(environment,
                                           common: CommonSettings(environment, role: "api"))
            let daemon = try APIDaemon(
                settings: settings, logger: Logger(label: "api", level: .debug, sink: logs))
            let shutdown = self.shutdown
            let ready = Gate()
            task = Task { try await daemon.run(shutdown: shutdown) { _ in ready.open() } }
            await ready.wait()
        }

        func stop() async {
            shutdown.request()
            _ = try? await task.value
            server.stop()
        }

        func post(_ json: [String: Any], key: String? = APIDaemonTests.key,
                  headers: [(String, String)] = []) async throws -> RawReply {
            try await post(Array(try JSONSerialization.data(withJSONObject: json)), key: key,
                           headers: headers)
        }

        func post(_ body: [UInt8], key: String? = APIDaemonTests.key,
                  headers: [(String, String)] = []) async throws -> RawReply {
            var h = headers
            if !h.contains(where: { $0.0 == "Content-Type" }) {
                h.append(("Content-Type", "application/json"))
            }
            if let key { h.append(("Authorization", "Bearer \(key)")) }
            return try await httpRequest(address, "POST", "/v1/send", headers: h, body: body)
        }

        func get(_ path: String, key: String? = APIDaemonTests.key) async throws -> RawReply {
            try await httpRequest(address, "GET", path,
                                  headers: key.map { [("Authorization", "Bearer \($0)")] } ?? [])
        }

        /// Every key under the prefix: what a request left behind.
        func storedKeys() async throws -> [String] {
            try await redis.run("KEYS", "tern:*").array?.compactMap(\.string).sorted() ?? []
        }
    }

    static func valid(_ changes: [String: Any] = [:]) -> [String: Any] {
        var body: [String: Any] = ["from": "sender@tern.example", "to": "Alice@Inbox.Example",
                                   "subject": "hello", "text": "Hi Alice\n"]
        for (k, v) in changes { body[k] = v }
        return body
    }

    /// U+FEFF in a client's text is kept, written raw or escaped (JSONSerialization alone
    /// would drop it): in the stored metadata, in the message, and in what the API shows.
    @Test func aZeroWidthNoBreakSpaceIsKept() async throws {
        let h = try await Harness()
        // The subject's U+FEFF raw, the text's and the metadata's escaped.
        let body = #"{"from":"sender@tern.example","to":"a@inbox.example","#
            + "\"subject\":\"\u{FEFF}hi\","
            + #""text":"x\uFEFFy\n","metadata":{"k":"a\ufeffb"}}"#
        let reply = try await h.post(Array(body.utf8))
        #expect(reply.status == 202, "\(reply.text)")
        let id = try #require(reply.json["id"] as? String)
        let record = try await h.redis.run("HGETALL", h.keys.message(id)).fieldMap
        #expect(record["metadata"] == "{\"k\":\"a\u{FEFF}b\"}")
        // The text is 8-bit now, so it goes quoted-printable: U+FEFF is =EF=BB=BF there.
        let message = record["body"] ?? ""
        #expect(message.contains("x=EF=BB=BFy"), "\(message)")
        // And the subject base64 in an encoded word: EF BB BF "hi".
        #expect(message.contains("Subject: =?UTF-8?B?77u/aGk=?="), "\(message)")
        let auth = [("Authorization", "Bearer \(APIDaemonTests.key)")]
        let shown = try await httpRequest(h.address, "GET", "/v1/messages/\(id)",
                                          headers: auth)
        #expect((shown.json["metadata"] as? [String: Any])?["k"] as? String == "a\u{FEFF}b")
        await h.stop()
    }

    @Test func acceptedMessageIsRecordedAndSubmittedInOneGo() async throws {
        let h = try await Harness()
        let before = nowMs()
        let reply = try await h.post(APIDaemonTests.valid([
            "org": "acme", "pool": "bulk", "metadata": ["user": "42", "n": 7],
            "headers": ["X-Campaign": "spring"],
        ]))
        #expect(reply.status == 202)
        let id = try #require(reply.json["id"] as? String)
        #expect(MessageID.isValid(id))

        let record = try await h.redis.run("HGETALL", h.keys.message(id)).fieldMap
        #expect(record["id"] == id)
        #expect(record["org"] == "acme")
        #expect(record["pool"] == "bulk")
        #expect(record["from"] == "sender@tern.example")
        #expect(record["rcpt"] == "Alice@inbox.example")
        #expect(record["domain"] == "inbox.example")
        #expect(record["state"] == "queued")
        #expect(record["attempts"] == "0")
        #expect(record["metadata"] == #"{"n":7,"user":"42"}"#)
        let created = try #require(Int64(record["created_ms"] ?? ""))
        let expires = try #require(Int64(record["expires_ms"] ?? ""))
        #expect(created >= before && created <= nowMs())
        #expect(expires - created == 3_600_000)
        let body = record["body"] ?? ""
        #expect(body.contains("Message-ID: <\(id)@api.tern.test>\r\n"))
        #expect(body.contains("Subject: hello\r\n"))
        #expect(body.contains("X-Campaign: spring\r\n"))
        #expect(body.contains("Hi Alice\r\n"))
        // The backstop expiry: max age plus record TTL.
        let ttl = try await h.redis.run("TTL", h.keys.message(id)).int ?? -1
        #expect(ttl > 3600 && ttl <= 3600 + 86400)

        let history = try await h.redis.run("LRANGE", h.keys.history(id), "0", "-1")
        let entries = history.array?.compactMap(\.string) ?? []
        #expect(entries.count == 1)
        let first = APIDaemon.jsonObject(entries.first) ?? [:]
        #expect(first["event"] as? String == "accepted")
        #expect(first["at"] as? String == timestamp(ms: created))

        let submit = try await h.redis.run("XRANGE", h.keys.stream(.submit), "-", "+")
        let submitted = submit.array?.compactMap { $0.array?[1].fieldMap } ?? []
        #expect(submitted == [["id": id]])

        let events = try await h.redis.run("XRANGE", h.keys.stream(.events), "-", "+")
        let event = try #require(events.array?.first?.array?[1].fieldMap)
        #expect(event["id"] == id && event["event"] == "accepted")
        let json = APIDaemon.jsonObject(event["json"]) ?? [:]
        #expect(json["to"] as? String == "Alice@inbox.example")
        #expect((json["metadata"] as? [String: Any])?["user"] as? String == "42")

        // One info line per accepted message, with the id; the key is in no record.
        let accepted = h.logs.records.filter { $0.message == "accepted" }
        #expect(accepted.count == 1)
        #expect(accepted.first?.level == .info)
        #expect(accepted.first?.fields["message_id"] == id)
        for r in h.logs.records {
            #expect(!r.message.contains(APIDaemonTests.key))
            #expect(!r.fields.values.contains { $0.contains(APIDaemonTests.key) })
        }
        await h.stop()
    }

    // name, body, key, status, field the error names (nil: none required)
    static let refusals: [(String, [UInt8], String?, Int, String?)] = [
        ("malformed JSON", Array(#"{"from": "sender@tern.example", "to": "#.utf8), key, 400,
         "body"),
        ("JSON array", Array("[1,2]".utf8), key, 400, "body"),
        ("JSON string", Array(#""x""#.utf8), key, 400, "body"),
        ("JSON string, bound key", Array(#""x""#.utf8), acmeKey, 400, "body"),
        ("address literal", json(valid(["to": "alice@[127.0.0.1]"])), key, 422, "to"),
        ("IPv6 address literal", json(valid(["to": "alice@[IPv6:::1]"])), key, 422, "to"),
        ("localhost", json(valid(["to": "alice@localhost"])), key, 422, "to"),
        ("a .localhost name", json(valid(["to": "alice@box.localhost"])), key, 422, "to"),
        ("Bcc header", json(valid(["headers": ["Bcc": "e@x.example"]])), key, 422,
         "headers.Bcc"),
        ("emoji domain", json(valid(["to": "alice@i❤.example"])), key, 422, "to"),
        ("bad A-label", json(valid(["from": "news@xn--zz.example"])), key, 422, "from"),
        ("missing to", json(valid(["to": NSNull()])), key, 422, "to"),
        ("missing from", json(valid().filter { $0.key != "from" }), key, 422, "from"),
        ("to without domain", json(valid(["to": "alice@"])), key, 422, "to"),
        ("to without at", json(valid(["to": "alice.inbox.example"])), key, 422, "to"),
        ("CR LF in to", json(valid(["to": "a@inbox.example\r\nBcc: e@x.example"])), key, 422,
         "to"),
        ("CR LF in a header value", json(valid(["headers": ["X-Test": "a\r\nBcc: e@x.example"]])),
         key, 422, "headers.X-Test"),
        ("LF in the subject", json(valid(["subject": "hi\nBcc: e@x.example"])), key, 422,
         "subject"),
        ("unknown field", json(valid(["cc": "b@inbox.example"])), key, 422, "cc"),
        ("no body part", json(valid().filter { $0.key != "text" }), key, 422, "text"),
        ("oversized body", json(valid(["text": String(repeating: "x", count: 30000)])), key,
         413, nil),
        ("missing key", json(valid()), nil, 401, nil),
        ("wrong key", json(valid()), "not-the-key", 403, nil),
        ("key for another org", json(valid(["org": "globex"])), acmeKey, 403, "org"),
    ]

    static func json(_ object: [String: Any]) -> [UInt8] {
        Array(try! JSONSerialization.data(withJSONObject: object))
    }

    @Test func refusedRequestsAnswer4xxAndWriteNothing() async throws {
        let h = try await Harness()
        for (name, body, key, status, field) in APIDaemonTests.refusals {
            let reply = try await h.post(body, key: key)
            #expect(reply.status == status, "\(name): \(reply.text)")
            // RFC 9457: a problem document, its status that of the answer.
            #expect(reply.headers["Content-Type"] == "application/problem+json", "\(name)")
            #expect(reply.error["status"] as? Int == status, "\(name)")
            #expect(reply.error["type"] as? String == "about:blank", "\(name)")
            #expect(reply.error["title"] as? String == HTTPResponse.reason(status), "\(name)")
            #expect((reply.error["detail"] as? String)?.isEmpty == false, "\(name)")
            if let field { #expect(reply.errorField == field, "\(name): \(reply.text)") }
        }
        for body in [#""x""#, "[1]"] {
            let reply = try await h.post(Array(body.utf8))
            #expect(reply.error["detail"] as? String == "must be a JSON object", "\(body)")
        }
        let unframed = try await httpRequest(
            h.address, "POST", "/v1/send",
            headers: [("Authorization", "Bearer \(APIDaemonTests.key)"),
                      ("Content-Type", "application/json")])
        #expect(unframed.status == 411)
        #expect(unframed.errorField == "Content-Length")
        let empty = try await httpRequest(
            h.address, "POST", "/v1/send",
            headers: [("Authorization", "Bearer \(APIDaemonTests.key)"),
                      ("Content-Type", "application/json"), ("Content-Length", "0")])
        #expect(empty.status == 400)
        #expect(empty.error["detail"] as? String == "is not valid JSON")
        let wrongType = try await h.post(Self.json(Self.valid()),
                                         headers: [("Content-Type", "text/plain")])
        #expect(wrongType.status == 415)
        let missing = try await h.post(Self.json(Self.valid()), key: nil)
        #expect(missing.headers["WWW-Authenticate"] == #"Bearer realm="tern""#)
        let basic = try await h.post(Self.json(Self.valid()), key: nil,
                                     headers: [("Authorization", "Basic dXNlcjpwdw==")])
        #expect(basic.status == 401)
        // Two keys: which one is meant is a guess, whichever of them is good.
        let twoKeys = try await h.post(Self.json(Self.valid()), key: nil, headers: [
            ("Authorization", "Bearer \(APIDaemonTests.key)"),
            ("Authorization", "Bearer \(APIDaemonTests.acmeKey)")])
        #expect(twoKeys.status == 400 && twoKeys.errorField == "Authorization")
        // Nothing at all reached Redis: no record, no history, no stream entry.
        #expect(try await h.storedKeys() == [])
        await h.stop()
    }

    @Test func aKeyBoundToAnOrgSendsForThatOrg() async throws {
        let h = try await Harness()
        let reply = try await h.post(APIDaemonTests.valid(), key: "  \(APIDaemonTests.acmeKey)")
        #expect(reply.status == 202)
        let id = try #require(reply.json["id"] as? String)
        #expect(try await h.redis.run("HGET", h.keys.message(id), "org").string == "acme")
        let explicit = try await h.post(APIDaemonTests.valid(["org": "acme"]),
                                        key: APIDaemonTests.acmeKey)
        #expect(explicit.status == 202)
        // Lowercase scheme is the same scheme (RFC 9110 §11.1).
        let lower = try await httpRequest(
            h.address, "POST", "/v1/send",
            headers: [("Authorization", "bearer \(APIDaemonTests.key)"),
                      ("Content-Type", "application/json")],
            body: APIDaemonTests.json(APIDaemonTests.valid()))
        #expect(lower.status == 202)
        #expect(try await h.redis.run("XLEN", h.keys.stream(.submit)).int == 3)
        await h.stop()
    }

    @Test func messageLookupShowsRecordAttemptsAndHistory() async throws {
        let h = try await Harness()
        let sent = try await h.post(APIDaemonTests.valid(["metadata": ["k": "v"]]))
        let id = try #require(sent.json["id"] as? String)
        // Play the scheduler: one attempt and a delivered event.
        let attempt = AttemptRecord(
            at: timestamp(ms: nowMs()), attempt: 1, outcome: .delivered, code: 250,
            enhanced: "2.0.0", reply: "2.0.0 ok\nqueued as 12", stage: "dot",
            mx: "mx1.inbox.example", addr: "127.0.0.11", ip: "127.0.0.2", tls: "", ms: 12)
        let attemptJSON = String(decoding: try JSONEncoder().encode(attempt), as: UTF8.self)
        try await h.redis.run("RPUSH", h.keys.attempts(id), attemptJSON)
        try await h.redis.run("RPUSH", h.keys.history(id), #"{"at":"x","event":"delivered"}"#)
        try await h.redis.run("RPUSH", h.keys.history(id), "not json")
        try await h.redis.run("HSET", h.keys.message(id), "state", "delivered")

        let reply = try await h.get("/v1/messages/\(id)")
        #expect(reply.status == 200)
        let j = reply.json
        #expect(j["id"] as? String == id)
        #expect(j["state"] as? String == "delivered")
        #expect(j["org"] as? String == "default")
        #expect(j["pool"] as? String == "default")
        #expect(j["from"] as? String == "sender@tern.example")
        #expect(j["to"] as? String == "Alice@inbox.example")
        #expect((j["metadata"] as? [String: Any])?["k"] as? String == "v")
        #expect((j["created"] as? String)?.hasSuffix("Z") == true)
        let attempts = j["attempts"] as? [[String: Any]] ?? []
        #expect(attempts.count == 1)
        #expect(attempts.first?["code"] as? Int == 250)
        #expect(attempts.first?["reply"] as? String == "2.0.0 ok\nqueued as 12")
        #expect(attempts.first?["ip"] as? String == "127.0.0.2")
        let history = (j["history"] as? [[String: Any]] ?? []).map { $0["event"] as? String }
        #expect(history == ["accepted", "delivered"])
        #expect(j["body"] == nil)

        let auth = [("Authorization", "Bearer \(APIDaemonTests.key)")]
        let head = try await httpRequest(h.address, "HEAD", "/v1/messages/\(id)", headers: auth)
        #expect(head.status == 200 && head.body.isEmpty)

        // Another org's key does not see it; unknown and malformed ids; no key.
        #expect(try await h.get("/v1/messages/\(id)", key: APIDaemonTests.acmeKey).status == 404)
        let unknown = try await h.get("/v1/messages/\(MessageID.generate())")
        #expect(unknown.status == 404)
        let bad = try await h.get("/v1/messages/NOT-AN-ID")
        #expect(bad.status == 400 && bad.errorField == "id")
        #expect(try await h.get("/v1/messages/\(id)", key: nil).status == 401)
        #expect(try await h.get("/v1/messages/\(id)", key: "nope").status == 403)
        await h.stop()
    }

    @Test func routesAnswer404And405WithAllow() async throws {
        let h = try await Harness()
        #expect(try await h.get("/nowhere").status == 404)
        #expect(try await h.get("/v1/messages/").status == 404)
        #expect(try await h.get("/v1/send/").status == 404)
        let getSend = try await h.get("/v1/send")
        #expect(getSend.status == 405 && getSend.headers["Allow"] == "POST")
        let postHealth = try await httpRequest(h.address, "POST", "/health")
        #expect(postHealth.status == 405 && postHealth.headers["Allow"] == "GET, HEAD")
        await h.stop()
    }

    @Test func healthReportsRedis() async throws {
        let h = try await Harness()
        let ok = try await h.get("/health", key: nil)
        #expect(ok.status == 200)
        #expect(ok.json["redis"] as? String == "ok")
        await h.stop()
    }

    @Test func withWebhooksHealthNeedsTheirConsumerGroup() async throws {
        let hooks = #"[{"name": "crm", "url": "http://127.0.0.1:9/hooks", "secret": "a-secret-of-24-octets..."}]"#
        let h = try await Harness(env: ["TERN_WEBHOOKS": hooks])
        let stream = h.keys.stream(.events)
        func groupPresent() async throws -> Bool {
            let groups = try await h.redis.run("XINFO", "GROUPS", stream).array ?? []
            return groups.contains { $0.fieldMap["name"] == "webhooks" }
        }
        // The API creates the group as it starts; until then health may say it is missing.
        for _ in 0..<100 where try await !groupPresent() {
            try await Task.sleep(for: .milliseconds(50))
        }
        let ok = try await h.get("/health", key: nil)
        #expect(ok.status == 200)
        #expect(ok.json["redis"] as? String == "ok")
        #expect(ok.json["webhooks"] as? String == "ok")

        try await h.redis.run("XGROUP", "DESTROY", stream, "webhooks")
        let missing = try await h.get("/health", key: nil)
        #expect(missing.status == 503)
        #expect(missing.json["redis"] as? String == "ok")
        #expect((missing.json["webhooks"] as? String)?.contains("webhooks") == true)
        await h.stop()
    }

    @Test func withoutRedisHealthIsDownAndSendsAre503() async throws {
        // A port nothing listens on stands for a Redis that is down.
        let h = try await Harness(redisURL: "redis://127.0.0.1:\(freePort())")
        let health = try await h.get("/health", key: nil)
        #expect(health.status == 503)
        #expect(health.json["redis"] as? String == "down")
        let send = try await h.post(APIDaemonTests.valid())
        #expect(send.status == 503)
        #expect((send.error["detail"] as? String)?.isEmpty == false)
        #expect(send.headers["Retry-After"] == "5")
        let lookup = try await h.get("/v1/messages/\(MessageID.generate())")
        #expect(lookup.status == 503)
        await h.stop()
    }

    @Test func settingsHaveDefaultsAndRefuseBadValues() throws {
        let env = Environment(["TERN_API_KEYS": "k"])
        let s = try APISettings(env, common: CommonSettings(env, role: "api"))
        #expect(s.listen.description == "127.0.0.1:8025")
        #expect(s.maxBody == 10_485_760)
        #expect(s.lifetime.maxAge == .seconds(5 * 86400))
        #expect(s.keys.count == 1)

        for bad in [[:], ["TERN_API_KEYS": " , "], ["TERN_API_KEYS": "k:Bad Org"],
                    ["TERN_API_KEYS": "a:b:c"], ["TERN_API_KEYS": "k,k"],
                    ["TERN_API_KEYS": "k:@root"], ["TERN_API_KEYS": "k:"],
                    ["TERN_API_KEYS": "k", "TERN_API_MAX_BODY": "12x"],
                    ["TERN_API_KEYS": "k", "TERN_API_LISTEN": "localhost:80"]] {
            let e = Environment(bad)
            #expect(throws: ConfigError.self, "\(bad)") {
                _ = try APISettings(e, common: CommonSettings(e, role: "api"))
            }
        }
    }

    @Test func poolsOfTernPoolsAreTheOnlyOnesAccepted() async throws {
        let h = try await Harness(env: ["TERN_POOLS": " default=127.0.0.2/a.example,"
                                            + "127.0.0.3/b.example; bulk =*/c.example"])
        for pool in ["default", "bulk"] {
            let reply = try await h.post(APIDaemonTests.valid(["pool": pool]))
            #expect(reply.status == 202, "\(pool): \(reply.text)")
        }
        let unknown = try await h.post(APIDaemonTests.valid(["pool": "transactional"]))
        #expect(unknown.status == 422)
        #expect(unknown.errorField == "pool")
        #expect(unknown.error["detail"] as? String
                == "there is no pool named transactional; the pools are bulk, default")
        #expect(try await h.redis.run("XLEN", h.keys.stream(.submit)).int == 2)
        await h.stop()

        // Without TERN_POOLS the API cannot know the scheduler's pools and takes any name.
        let open = try await Harness()
        let any = try await open.post(APIDaemonTests.valid(["pool": "transactional"]))
        #expect(any.status == 202)
        await open.stop()
    }

    @Test func ternPoolsIsReadForItsNamesAndRefusedWhenNameless() throws {
        #expect(try APISettings.poolNames("a=1.2.3.4/x;b=*/y") == ["a", "b"])
        #expect(try APISettings.poolNames("a=anything the scheduler checks") == ["a"])
        for bad in ["=1.2.3.4/x", "nameonly", ";", "a=*/x;=*/y"] {
            #expect(throws: ConfigError.self, "\(bad)") { _ = try APISettings.poolNames(bad) }
        }
    }

    @Test func keysAreCheckedWholeAndByScheme() throws {
        let keys = try APIKeys("alpha, beta:acme, gamma:@ops, delta:@all", variable: "K")
        let id = { (key: String) in
            Crypto.sha256(Array(key.utf8)).prefix(8).map { String(format: "%02x", $0) }.joined()
        }
        #expect(keys.check("Bearer alpha") == .allowed(.init(scope: .all, keyID: id("alpha"))))
        #expect(keys.check("BEARER   beta ")
                == .allowed(.init(scope: .org("acme"), keyID: id("beta"))))
        #expect(keys.check("Bearer gamma") == .allowed(.init(scope: .ops, keyID: id("gamma"))))
        #expect(keys.check("Bearer delta") == .allowed(.init(scope: .all, keyID: id("delta"))))
        // A key given by its digest only.
        let hex = Crypto.sha256(Array("epsilon".utf8)).map { String(format: "%02x", $0) }
            .joined()
        let hashed = try APIKeys("sha256=\(hex):acme", variable: "K")
        #expect(hashed.check("Bearer epsilon")
                == .allowed(.init(scope: .org("acme"), keyID: id("epsilon"))))
        #expect(hashed.check("Bearer sha256=\(hex)") == .wrong)
        // A mistyped digest is a configuration error, never a plain key that anyone who
        // reads the file could present; signs are no hex digits.
        let head = String(hex.dropLast()), tail = String(hex.dropFirst())
        let mistyped: [String] = [head, hex + "0", "", "+" + tail, "-" + tail,
                                  String(hex.dropLast(2)) + "+f", head + "g"]
        for entry in mistyped.map({ "sha256=" + $0 }) {
            #expect(throws: ConfigError.self, "\(entry)") {
                _ = try APIKeys(entry + ":acme", variable: "K")
            }
        }
        let upper = try APIKeys("sha256=\(hex.uppercased())", variable: "K")
        #expect(upper.check("Bearer epsilon")
                == .allowed(.init(scope: .all, keyID: id("epsilon"))))
        #expect(keys.check("Bearer alph") == .wrong)
        #expect(keys.check("Bearer alphaa") == .wrong)
        #expect(keys.check("Bearer beta:acme") == .wrong)
        #expect(keys.check("Bearer ") == .missing)
        #expect(keys.check("alpha") == .missing)
        #expect(keys.check("Token alpha") == .missing)
        #expect(keys.check(nil) == .missing)
    }
}

/// The /v1/send fields beyond text: attachments, tags and send_at reach the record, the
/// status and the events; a message over TERN_API_MAX_MESSAGE is refused naming its field.
@Suite(.serialized) struct APISendContentTests {
    typealias Harness = APIDaemonTests.Harness

    @Test func tagsAndSendAtAreStoredAndShown() async throws {
        let h = try await Harness()
        let sendAt = Date().addingTimeInterval(3600)
        let sendAtText = timestamp(ms: Int64(sendAt.timeIntervalSince1970 * 1000))
        let reply = try await h.post(APIDaemonTests.valid([
            "tags": ["welcome", "ünï"], "send_at": sendAtText,
            "attachments": [["filename": "a.txt", "content_type": "text/plain",
                             "content": Data("hello".utf8).base64EncodedString()]],
        ]))
        #expect(reply.status == 202, "\(reply.text)")
        let id = try #require(reply.json["id"] as? String)
        let record = try await h.redis.run("HGETALL", h.keys.message(id)).fieldMap
        #expect(record["tags"] == #"["welcome","ünï"]"#)
        let sendAtMs = try #require(Int64(record["send_at_ms"] ?? ""))
        #expect(timestamp(ms: sendAtMs) == sendAtText)
        // The message's age counts from its send time: TERN_MAX_AGE (1h) after it.
        #expect(Int64(record["expires_ms"] ?? "") == sendAtMs + 3_600_000)
        #expect(record["body"]?.contains("Content-Disposition: attachment; filename=a.txt")
                == true)

        let status = try await h.get("/v1/messages/\(id)")
        #expect(status.json["tags"] as? [String] == ["welcome", "ünï"])
        #expect(status.json["send_at"] as? String == sendAtText)
        let history = status.json["history"] as? [[String: Any]] ?? []
        #expect(history.first?["send_at"] as? String == sendAtText)

        let events = try await h.redis.run("XRANGE", h.keys.stream(.events), "-", "+")
        let event = try #require(events.array?.first?.array?[1].fieldMap)
        let json = APIDaemon.jsonObject(event["json"]) ?? [:]
        #expect(json["tags"] as? [String] == ["welcome", "ünï"])

        // Without either: an empty tag list, no send_at.
        let plain = try await h.post(APIDaemonTests.valid())
        let plainID = try #require(plain.json["id"] as? String)
        let plainStatus = try await h.get("/v1/messages/\(plainID)")
        #expect((plainStatus.json["tags"] as? [Any])?.isEmpty == true)
        #expect(plainStatus.json["send_at"] == nil)
        await h.stop()
    }

    @Test func refusalsNameTheAttachmentField() async throws {
        let h = try await Harness(env: ["TERN_API_MAX_MESSAGE": "4096"])
        let good = ["filename": "a.bin", "content": "AAAA"]
        let bad = try await h.post(APIDaemonTests.valid([
            "attachments": [good, good, ["filename": "c.bin", "content": "not base64!"]],
        ]))
        #expect(bad.status == 422)
        #expect(bad.errorField == "attachments[2].content")

        // 4000 bytes become 5,400 of base64: over the 4096-octet limit once built.
        let big = Data(repeating: 7, count: 4000).base64EncodedString()
        let large = try await h.post(APIDaemonTests.valid([
            "attachments": [good, ["filename": "big.bin", "content": big]],
        ]))
        #expect(large.status == 413)
        #expect(large.errorField == "attachments[1].content")
        // Neither left anything behind.
        #expect(try await h.storedKeys().isEmpty)
        await h.stop()
    }
}
