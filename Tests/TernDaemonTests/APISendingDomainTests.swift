// Sending domains per organisation against the running API: a key bound to an organisation
// sends only from its domains and only with an aligned DKIM key, single and batch alike;
// TERN_ORG_UNSIGNED lets an organisation off the DKIM rule; keys bound to none are free.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernAPI

extension APIDaemonTests {
    /// A keys file with an Ed25519 key for acme.example and one for everything under it.
    static func acmeKeysFile() async throws -> String {
        let dir = NSTemporaryDirectory() + "tern-api-domains-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let status = try await APIDKIMTests.run(["openssl", "genpkey", "-algorithm", "ED25519",
                                                 "-out", dir + "/ed.pem"])
        #expect(status == 0)
        try Data("""
            acme.example    e1  ed25519-sha256  ed.pem
            *.acme.example  e1  ed25519-sha256  ed.pem
            """.utf8).write(to: URL(fileURLWithPath: dir + "/keys"))
        return dir + "/keys"
    }

    static let raw = "From: News <news@%@>\r\nTo: alice@inbox.example\r\nSubject: hi\r\n\r\nhi\r\n"

    @Test func anOrgSendsOnlyFromItsDomainsAndOnlySigned() async throws {
        let keysFile = try await Self.acmeKeysFile()
        defer { try? FileManager.default.removeItem(
            atPath: (keysFile as NSString).deletingLastPathComponent) }
        let h = try await Harness(env: [
            "TERN_DKIM_KEYS": keysFile,
            "TERN_ORG_DOMAINS": "acme=acme.example, *.acme.example, plain.example;globex=g.example",
        ])
        let acme = APIDaemonTests.acmeKey
        // from, raw From domain (nil: no raw), status, field
        let cases: [(String, String?, Int, String?)] = [
            ("a@acme.example", nil, 202, nil),
            ("a@News.Acme.example", nil, 202, nil),
            ("a@g.example", nil, 403, "from"),
            ("a@evil-acme.example", nil, 403, "from"),
            ("a@plain.example", nil, 422, "from"),
            ("a@acme.example", "acme.example", 202, nil),
            ("a@acme.example", "g.example", 403, "raw"),
            ("a@acme.example", "plain.example", 422, "raw"),
        ]
        for (from, rawDomain, status, field) in cases {
            var body = Self.valid(["from": from])
            if let rawDomain {
                body = ["from": from, "to": "alice@inbox.example",
                        "raw": String(format: Self.raw, rawDomain)]
            }
            let reply = try await h.post(body, key: acme)
            #expect(reply.status == status, "\(from) \(rawDomain ?? ""): \(reply.text)")
            #expect(reply.errorField == field, "\(from) \(rawDomain ?? "")")
            if let id = reply.json["id"] as? String {
                let stored = try await h.redis.run("HGET", h.keys.message(id), "body").string
                #expect(stored?.hasPrefix("DKIM-Signature:") == true)
            }
        }
        let refusal = try await h.post(Self.valid(["from": "a@g.example"]), key: acme)
        #expect(refusal.error["detail"] as? String == "org acme may not send from g.example; "
                + "its domains are acme.example, plain.example, *.acme.example")

        // A batch is judged message by message.
        let batch = try await postBatch(h, Self.batch([
            Self.valid(["from": "a@acme.example"]), Self.valid(["from": "a@g.example"]),
            Self.valid(["from": "a@plain.example"]),
        ]), key: acme)
        let results = try #require(batch.json["results"] as? [[String: Any]])
        #expect(results.map { $0["status"] as? Int } == [202, 403, 422])
        #expect(results.map { $0["field"] as? String } == [nil, "messages[1].from",
                                                          "messages[2].from"])
        // A key bound to no organisation is the operators' own: not checked.
        #expect(try await h.post(Self.valid(["from": "a@g.example", "org": "acme"])).status
                == 202)
        #expect(try await h.redis.run("XLEN", h.keys.stream(.submit)).int == 5)
        await h.stop()

        let lenient = try await Harness(env: [
            "TERN_DKIM_KEYS": keysFile, "TERN_ORG_DOMAINS": "acme=plain.example",
            "TERN_ORG_UNSIGNED": "acme",
        ])
        #expect(try await lenient.post(Self.valid(["from": "a@plain.example"]), key: acme)
                .status == 202)
        await lenient.stop()
    }

    /// A raw From the check could read one way and a reader (or DKIM) another is refused:
    /// two fields, two mailboxes, a continuation line hiding the real author, an open
    /// bracket. A Sender field, given or raw, must be the organisation's too.
    @Test func aRawFromOrSenderIsReadStrictlyAgainstTheOrgsDomains() async throws {
        let keysFile = try await Self.acmeKeysFile()
        defer { try? FileManager.default.removeItem(
            atPath: (keysFile as NSString).deletingLastPathComponent) }
        let h = try await Harness(env: [
            "TERN_DKIM_KEYS": keysFile,
            "TERN_ORG_DOMAINS": "acme=acme.example,*.acme.example",
        ])
        let acme = APIDaemonTests.acmeKey
        let tail = "To: alice@tls.example\r\n\r\nx\r\n"
        // raw header lines, status, field
        let cases: [(String, Int, String)] = [
            ("From: news@acme.example\r\nFrom: ceo@evil.example\r\n", 422, "raw"),
            ("From: \"x\" <news@acme.example>, ceo@evil.example\r\n", 422, "raw"),
            ("From: news@evil.example\r\n from: news@acme.example\r\n", 422, "raw"),
            ("From: news@evil.example\r\n (news@acme.example)\r\n", 403, "raw"),
            ("From: <news@acme.example\r\n", 422, "raw"),
            ("From: undisclosed:;\r\n", 422, "raw"),
            ("From: \"a <news@acme.example>\" <ceo@evil.example>\r\n", 403, "raw"),
            ("From: news@acme.example\r\nSender: ops@evil.example\r\n", 403, "raw"),
            ("From: news@acme.example\r\nSender: a@acme.example, b@acme.example\r\n",
             422, "raw"),
            ("From: news@acme.example\r\nSender: x@acme.example\r\nSender: y@acme.example"
             + "\r\n", 422, "raw"),
            ("From: \"News (team)\" <news@acme.example> (the list)\r\n"
             + "Sender: ops@mail.acme.example\r\n", 202, ""),
            ("From: News\r\n <news@acme.example>\r\n", 202, ""),
        ]
        for (header, status, field) in cases {
            let reply = try await h.post(["from": "news@acme.example", "to": "alice@tls.example",
                                          "raw": header + tail], key: acme)
            #expect(reply.status == status, "\(header): \(reply.text)")
            #expect(reply.errorField == (field.isEmpty ? nil : field), "\(header)")
            if let id = reply.json["id"] as? String {
                let stored = try await h.redis.run("HGET", h.keys.message(id), "body").string
                #expect(stored?.hasPrefix("DKIM-Signature: v=1; a=ed25519-sha256; "
                                          + "c=relaxed/relaxed; d=acme.example;") == true)
            }
        }
        for (sender, status) in [("ops@evil.example", 403), ("a@acme.example, b@acme.example",
                                  422), ("Ops <ops@x.acme.example>", 202)] {
            let reply = try await h.post(Self.valid(["from": "news@acme.example",
                                                     "headers": ["Sender": sender]]), key: acme)
            #expect(reply.status == status, "\(sender): \(reply.text)")
            #expect(reply.errorField == (status == 202 ? nil : "headers.Sender"))
        }
        // The operators' key is not held to the domains, but two From fields are refused all
        // the same (RFC 5322 §3.6).
        let two = try await h.post(["from": "news@acme.example", "to": "alice@tls.example",
                                    "raw": "From: a@x.example\r\nfrom: b@y.example\r\n" + tail])
        #expect(two.status == 422 && two.errorField == "raw", "\(two.text)")
        #expect(two.error["detail"] as? String == "has 2 From fields; RFC 5322 §3.6 allows one")
        await h.stop()
    }

    @Test func sendingDomainsAreParsedStrictly() throws {
        let d = try SendingDomains(domains: "acme = Acme.example,*.acme.example; b=b.example",
                                   unsigned: "b")
        #expect(d.allows(org: "acme", domain: "acme.example"))
        #expect(d.allows(org: "acme", domain: "x.y.acme.example"))
        #expect(!d.allows(org: "acme", domain: "b.example"))
        #expect(!d.allows(org: "other", domain: "acme.example"))
        #expect(d.requiresDKIM(org: "acme") && !d.requiresDKIM(org: "b"))
        #expect(!(try SendingDomains(domains: "a=a.example", unsigned: "*"))
            .requiresDKIM(org: "a"))
        for (domains, unsigned) in [("acme", ""), ("acme=", ""), ("Bad=x.example", ""),
                                    ("a=[127.0.0.1]", ""), ("a=localhost", ""),
                                    ("a=x.example", "Bad Org")] {
            #expect(throws: ConfigError.self, "\(domains)") {
                _ = try SendingDomains(domains: domains, unsigned: unsigned)
            }
        }
    }
}
