// DKIM signatures made by Tern and checked by dkimpy, an independent verifier: RSA-SHA256
// and Ed25519-SHA256, several keys per domain, 8-bit bodies, long folded fields, trailing
// empty lines, multipart messages; tampering must make them fail. Also the field's shape
// (h=, t=, no l=, folding) and the choice of keys by From domain.

import Foundation
import Testing
import TernCore
@testable import TernMail

@Suite struct DKIMSignerTests {
    let now = Date(timeIntervalSince1970: 1_764_806_400)

    func built(_ json: String) throws -> [UInt8] {
        MessageBuilder.build(try SendRequest.decode(Array(json.utf8)),
                             id: "01kbx4f1vqd7k8n3p2w9c6t5ya", now: now,
                             hostname: "mta.example.com")
    }

    func raw(_ text: String) -> [UInt8] { Array(text.utf8) }

    /// Signs with an RSA and an Ed25519 key for example.com; returns the message and records.
    func signBoth(_ message: [UInt8]) async throws -> ([UInt8], [String: String]) {
        let rsa = try await TestKeys.shared.pair("rsa")
        let ed = try await TestKeys.shared.pair("ed25519")
        let signer = DKIMSigner(keys: try keyTable([
            ("example.com", "rsa1", .rsaSHA256, rsa), ("example.com", "ed1", .ed25519SHA256, ed),
        ]))
        let (signed, outcome) = signer.sign(message, at: now)
        #expect(outcome == .signed(domain: "example.com", selectors: ["rsa1", "ed1"]))
        return (signed, ["rsa1._domainkey.example.com": rsa.record,
                         "ed1._domainkey.example.com": ed.record])
    }

    @Test func builtMultipartMessageVerifiesWithBothAlgorithms() async throws {
        let message = try built(#"""
            {"from":"news@example.com","to":"reader@example.net","reply_to":"r@example.com",
             "subject":"Grüße — a subject long enough that the builder folds it over lines",
             "text":"Hällo\nsecond line\n\n\n","html":"<p>Hällo</p>",
             "headers":{"List-Unsubscribe":"<https://example.com/u/1>",
                        "List-Unsubscribe-Post":"List-Unsubscribe=One-Click",
                        "Feedback-ID":"c1:acme:tern","X-Tag":"unsigned"}}
            """#)
        let (signed, records) = try await signBoth(message)
        #expect(try await dkimpyVerify(signed, records: records) == ["pass", "pass"])
        #expect(Array(signed.suffix(message.count)) == message)

        let fields = signatureFields(signed)
        #expect(fields.count == 2)
        #expect(tag("a", in: fields[0]) == "rsa-sha256")
        #expect(tag("a", in: fields[1]) == "ed25519-sha256")
        for field in fields {
            #expect(tag("h", in: field) == "from:from:to:subject:date:message-id:reply-to:"
                    + "mime-version:content-type:list-unsubscribe:list-unsubscribe-post:"
                    + "feedback-id")
            #expect(tag("c", in: field) == "relaxed/relaxed")
            #expect(tag("d", in: field) == "example.com")
            #expect(tag("t", in: field) == "1764806400")
            #expect(tag("l", in: field) == nil)
            #expect(tag("v", in: field) == "1")
        }
        // One body hash for both; RSA-2048 signs 256 octets, Ed25519 64.
        #expect(tag("bh", in: fields[0]) == tag("bh", in: fields[1]))
        #expect(tag("b", in: fields[0]).flatMap { Data(base64Encoded: $0) }?.count == 256)
        #expect(tag("b", in: fields[1]).flatMap { Data(base64Encoded: $0) }?.count == 64)
    }

    @Test func signatureFieldIsFoldedWithinLineLimits() async throws {
        let (signed, _) = try await signBoth(try built(
            #"{"from":"a@example.com","to":"b@example.net","subject":"s","text":"t"}"#))
        let head = String(decoding: signed, as: UTF8.self).components(separatedBy: "\r\n\r\n")[0]
        var inSignature = false
        var signatureLines = 0
        for line in head.components(separatedBy: "\r\n") {
            if line.hasPrefix("DKIM-Signature:") { inSignature = true }
            else if !(line.hasPrefix(" ") || line.hasPrefix("\t")) { inSignature = false }
            guard inSignature else { continue }
            signatureLines += 1
            #expect(line.utf8.count <= 78, "\(line)")
            #expect(line.trimmingCharacters(in: .whitespaces) != "", "an empty folded line")
        }
        // RSA: 344 characters of b= alone need five lines or more.
        #expect(signatureLines >= 9)
    }

    @Test func eightBitBodyAndFields() async throws {
        let message = raw("From: Zoë <zoe@example.com>\r\nTo: Jürgen <j@example.net>\r\n"
            + "Subject: Grüße aus Köln\r\nMIME-Version: 1.0\r\n"
            + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
            + "\r\nHällo Jürgen,\r\n  ünïcödé   with\t\truns  \r\n→ ✓ 日本語\r\n")
        let (signed, records) = try await signBoth(message)
        #expect(try await dkimpyVerify(signed, records: records) == ["pass", "pass"])
    }

    @Test func longFoldedFieldsAndRepeatedFields() async throws {
        let pad = String(repeating: "x", count: 20)
        let references = (1...40).map { "<ref\($0).\(pad)@a.example>" }
        let message = raw("Received: from a by b; Thu, 4 Dec 2025 00:00:00 +0000\r\n"
            + "From: news@example.com\r\nTo: one@example.net\r\nTo: two@example.net\r\n"
            + "Cc: c@example.net\r\nIn-Reply-To: <ref40.x@a.example>\r\n"
            + "References: " + references.joined(separator: "\r\n\t") + "\r\n"
            + "Subject: " + String(repeating: "long ", count: 150) + "\r\n"
            + "Date: Thu, 4 Dec 2025 00:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n"
            + "List-Id: News <news.example.com>\r\n\r\nBody\r\n")
        let (signed, records) = try await signBoth(message)
        #expect(try await dkimpyVerify(signed, records: records) == ["pass", "pass"])
        let h = tag("h", in: signatureFields(signed)[0])
        #expect(h == "from:from:to:to:cc:subject:date:message-id:list-id:in-reply-to:references")
    }

    @Test func bodiesWithTrailingEmptyLinesOrNoFinalCRLF() async throws {
        for body in ["Hi\r\n\r\n\r\n\r\n", "Hi\r\n \r\n\t\r\n", "Hi", "", "\r\n\r\n"] {
            let message = raw("From: a@example.com\r\nTo: b@example.net\r\n\r\n" + body)
            let (signed, records) = try await signBoth(message)
            #expect(try await dkimpyVerify(signed, records: records) == ["pass", "pass"],
                    "\(body.debugDescription)")
        }
    }

    @Test func headerSectionOnlyMessage() async throws {
        let (signed, records) = try await signBoth(raw("From: a@example.com\r\nSubject: x\r\n"))
        #expect(try await dkimpyVerify(signed, records: records) == ["pass", "pass"])
    }

    @Test func tamperingBreaksTheSignatures() async throws {
        let message = try built(
            #"{"from":"a@example.com","to":"b@example.net","subject":"Pay","text":"100 EUR"}"#)
        let (signed, records) = try await signBoth(message)
        let text = String(decoding: signed, as: UTF8.self)

        let body = text.replacingOccurrences(of: "100 EUR", with: "900 EUR")
        #expect(body != text)
        #expect(try await dkimpyVerify(Array(body.utf8), records: records) == ["fail", "fail"])
        let subject = text.replacingOccurrences(of: "Subject: Pay", with: "Subject: Paid")
        #expect(try await dkimpyVerify(Array(subject.utf8), records: records)
                == ["fail", "fail"])
        // From is signed once more than it occurs: a second From breaks the signature.
        let secondFrom = text.replacingOccurrences(of: "\r\n\r\n",
                                                   with: "\r\nFrom: evil@example.org\r\n\r\n")
        #expect(try await dkimpyVerify(Array(secondFrom.utf8), records: records)
                == ["fail", "fail"])
        // Whitespace changes are what relaxed canonicalisation forgives.
        let spaced = text.replacingOccurrences(of: "Subject: Pay", with: "Subject:   Pay  ")
        #expect(try await dkimpyVerify(Array(spaced.utf8), records: records)
                == ["pass", "pass"])
    }

    @Test func domainWithoutKeyIsSentUnsigned() async throws {
        let rsa = try await TestKeys.shared.pair("rsa")
        let signer = DKIMSigner(keys: try keyTable([("example.com", "s", .rsaSHA256, rsa)]))
        let message = raw("From: a@sub.example.com\r\n\r\nHi\r\n")
        let (out, outcome) = signer.sign(message, at: now)
        #expect(outcome == .unsigned(fromDomain: "sub.example.com"))
        #expect(out == message)
        let (noFrom, none) = signer.sign(raw("To: a@example.com\r\n\r\nHi"), at: now)
        #expect(none == .unsigned(fromDomain: nil))
        #expect(noFrom == raw("To: a@example.com\r\n\r\nHi\r\n"))
        #expect(DKIMSigner(keys: .empty).sign(message, at: now).1
                == .unsigned(fromDomain: "sub.example.com"))
    }

    @Test func wildcardLineSignsSubdomainsAsTheParent() async throws {
        let ed = try await TestKeys.shared.pair("ed25519")
        let rsa = try await TestKeys.shared.pair("rsa")
        let signer = DKIMSigner(keys: try keyTable([
            ("*.example.org", "w", .ed25519SHA256, ed), ("mail.example.org", "m", .rsaSHA256, rsa),
        ]))
        let (signed, outcome) = signer.sign(raw("From: a@news.eu.example.org\r\n\r\nHi\r\n"),
                                            at: now)
        #expect(outcome == .signed(domain: "example.org", selectors: ["w"]))
        #expect(try await dkimpyVerify(signed, records: ["w._domainkey.example.org": ed.record])
                == ["pass"])
        // An exact line wins over the wildcard; the parent itself is not a subdomain.
        #expect(signer.sign(raw("From: a@mail.example.org\r\n\r\n"), at: now).1
                == .signed(domain: "mail.example.org", selectors: ["m"]))
        #expect(signer.sign(raw("From: a@example.org\r\n\r\n"), at: now).1
                == .unsigned(fromDomain: "example.org"))
    }

    @Test(arguments: [
        ("From: a@Example.COM", "example.com"),
        ("From: \"Doe, John\" <John.Doe@Example.com>", "example.com"),
        ("From: =?UTF-8?B?Wm/Dqw==?= <zoe@example.com>", "example.com"),
        ("From:\r\n  news@example.com (the news)", "example.com"),
        ("From: <x@bücher.example>", "xn--bcher-kva.example"),
        ("From: a@one.example, b@two.example", "one.example"),
        // A "<" inside a quoted display name is text, not the address: signing must not
        // take another domain's keys for it.
        (#"From: "x <a@other.example> \" <" <me@example.com>"#, "example.com"),
    ])
    func fromDomain(_ field: String, _ domain: String) {
        #expect(DKIMSigner.fromDomain(field) == domain)
    }

    @Test func fromWithoutAddress() {
        #expect(DKIMSigner.fromDomain("From: undisclosed") == nil)
        #expect(DKIMSigner.fromDomain("From: ") == nil)
    }

    @Test func dnsRecordMatchesOpenSSL() async throws {
        for kind in ["rsa", "ed25519"] {
            let pair = try await TestKeys.shared.pair(kind)
            let table = try keyTable([("example.com", "s", kind == "rsa" ? .rsaSHA256
                                       : .ed25519SHA256, pair)])
            let key = try #require(table.keys(for: "example.com").first)
            #expect(key.dnsRecord == pair.record)
            #expect(key.dnsName == "s._domainkey.example.com")
        }
    }
}
