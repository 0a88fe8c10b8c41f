// DKIM verification (RFC 6376 §6): Tern's own signatures (relaxed/relaxed, RSA and Ed25519)
// pass and fail where they should; hand-made simple/simple signatures with l= and x= are
// judged the same way by Tern and by dkimpy, the independent verifier.

import Foundation
import Testing
import TernCore
@testable import TernMail

@Suite struct DKIMVerifierTests {
    static let message = Array("""
        From: Feedback <fbl@isp.example>\r
        To: fbl@tern.example\r
        Subject: complaint\r
        Date: Fri, 04 Dec 2026 16:00:00 +0000\r
        \r
        A report.\r
        \r

        """.utf8)

    /// A key lookup over a fixed set of records.
    static func lookup(_ records: [String: String]) -> @Sendable (String) async -> DKIMKeyAnswer {
        { name in records[name].map { .record($0) } ?? .none }
    }

    @Test func ternSignaturesPassAndTamperingFails() async throws {
        let rsa = try await TestKeys.shared.pair("rsa")
        let ed = try await TestKeys.shared.pair("ed25519")
        for (algorithm, pair) in [(DKIMKey.Algorithm.rsaSHA256, rsa), (.ed25519SHA256, ed)] {
            let signer = DKIMSigner(keys: try keyTable([("isp.example", "s1", algorithm, pair)]))
            let (signed, _) = signer.sign(Self.message, at: Date())
            let key = Self.lookup(["s1._domainkey.isp.example": pair.record])
            let verifier = DKIMVerifier()
            let pass = await verifier.verify(signed, now: Date(), key: key)
            #expect(pass == DKIMResult(.pass, domain: "isp.example"), "\(algorithm)")

            var body = signed
            body.replaceSubrange(body.count - 5..<body.count - 4, with: [UInt8(ascii: "X")])
            let badBody = await verifier.verify(body, now: Date(), key: key)
            #expect(badBody.verdict == .fail)
            #expect(badBody.reason == "body hash differs")

            let text = String(decoding: signed, as: UTF8.self)
                .replacingOccurrences(of: "Subject: complaint", with: "Subject: praise")
            let badHeader = await verifier.verify(Array(text.utf8), now: Date(), key: key)
            #expect(badHeader.verdict == .fail)
            #expect(badHeader.reason == "signature does not verify")

            let noKey = await verifier.verify(signed, now: Date(), key: Self.lookup([:]))
            #expect(noKey.verdict == .fail)
            let revoked = await verifier.verify(signed, now: Date(), key: Self.lookup([
                "s1._domainkey.isp.example": "v=DKIM1; p="]))
            #expect(revoked.verdict == .fail)
            let later = await verifier.verify(signed, now: Date()) { _ in .temporary("timeout") }
            #expect(later == DKIMResult(.temperror, domain: "isp.example", reason: "timeout"))
        }
        let none = await DKIMVerifier().verify(Self.message, now: Date(), key: Self.lookup([:]))
        #expect(none == DKIMResult(.none))
    }

    /// A simple/simple signature over From and Subject made by hand: `length` sets l=,
    /// `expiry` x=.
    static func handSigned(_ message: [UInt8], pair: TestKeyPair, ed25519: Bool,
                           length: Int?, expiry: Int64?) throws -> [UInt8] {
        let key = try SigningKey(pem: pair.pem)
        let (fields, bodyStart) = DKIMSigner.headerFields(message)
        var body = DKIMVerifier.simpleBody(message[bodyStart...])
        if let length { body = Array(body.prefix(length)) }
        var field = "DKIM-Signature: v=1; a=\(ed25519 ? "ed25519" : "rsa")-sha256; "
            + "c=simple/simple; d=isp.example; s=s1; t=1764000000; "
        if let expiry { field += "x=\(expiry); " }
        if let length { field += "l=\(length); " }
        field += "h=from:subject; bh=" + Data(Crypto.sha256(body)).base64EncodedString()
            + "; b="
        var data: [UInt8] = []
        for name in ["from", "subject"] {
            let found = try #require(fields.first { $0.name == name })
            data += message[found.range]
        }
        data += Array(field.utf8)
        let signature = key.sign(ed25519 ? Crypto.sha256(data) : data)
        return Array((field + Data(signature).base64EncodedString() + "\r\n").utf8) + message
    }

    @Test func simpleCanonicalizationLengthAndExpiryAgreeWithDkimpy() async throws {
        let rsa = try await TestKeys.shared.pair("rsa")
        let ed = try await TestKeys.shared.pair("ed25519")
        let future = Int64(Date().timeIntervalSince1970) + 3600
        // A day ago: dkimpy allows ten hours for clocks that are wrong.
        let past = Int64(Date().timeIntervalSince1970) - 86400
        for (pair, isEd) in [(rsa, false), (ed, true)] {
            let records = ["s1._domainkey.isp.example": pair.record]
            let key = Self.lookup(records)
            // l= covers "A report.\r\n": text appended later is not judged.
            let limited = try Self.handSigned(Self.message, pair: pair, ed25519: isEd,
                                              length: 11, expiry: future)
            let extended = limited + Array("Appended by a list.\r\n".utf8)
            for message in [limited, extended] {
                let ours = await DKIMVerifier().verify(message, now: Date(), key: key)
                #expect(ours.verdict == .pass, "\(ours.reason)")
                #expect(try await dkimpyVerify(message, records: records) == ["pass"])
            }
            let expired = try Self.handSigned(Self.message, pair: pair, ed25519: isEd,
                                              length: nil, expiry: past)
            let ours = await DKIMVerifier().verify(expired, now: Date(), key: key)
            #expect(ours == DKIMResult(.fail, domain: "isp.example", reason: "signature expired"))
            #expect(try await dkimpyVerify(expired, records: records) == ["fail"])
            // Simple header canonicalisation: refolding a signed field breaks it.
            let whole = try Self.handSigned(Self.message, pair: pair, ed25519: isEd,
                                            length: nil, expiry: nil)
            let refolded = String(decoding: whole, as: UTF8.self)
                .replacingOccurrences(of: "Subject: complaint", with: "Subject:  complaint")
            #expect(await DKIMVerifier().verify(whole, now: Date(), key: key).verdict == .pass)
            let broken = await DKIMVerifier().verify(Array(refolded.utf8), now: Date(), key: key)
            #expect(broken.verdict == .fail)
        }
    }

    @Test func blankingTheSignatureValue() {
        let field = Array("DKIM-Signature: v=1; b=abc\r\n def; bh=xyz\r\n".utf8)
        #expect(DKIMVerifier.withoutSignatureValue(field[...])
                == Array("DKIM-Signature: v=1; b=; bh=xyz\r\n".utf8))
        #expect(DKIMVerifier.simpleBody([][...]) == [0x0D, 0x0A])
        #expect(DKIMVerifier.simpleBody(Array("a\r\n\r\n\r\n".utf8)[...]) == Array("a\r\n".utf8))
    }
}
