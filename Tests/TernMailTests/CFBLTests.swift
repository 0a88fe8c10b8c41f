// RFC 9477 fields: what the builder writes, and how a returned CFBL-Feedback-ID is judged,
// alone and inside a feedback report the classifier reads.

import Foundation
import Testing
import TernCore
@testable import TernMail

@Suite struct CFBLTests {
    static let secret = Array("0123456789abcdef0123456789abcdef".utf8)
    let verp = VERP(secret: CFBLTests.secret, domain: "bounces.tern.example")
    let id = MessageID.make(timestampMs: 1_741_000_000_000, random: Array(1...10))
    var cfbl: CFBL { CFBL(address: "FBL@Tern.Example", verp: verp) }

    @Test func fieldsCarryTheAddressAndATaggedID() throws {
        let mac = Crypto.hmacSHA256(key: Self.secret, data: Array(id.utf8))
        let tag = Base32.encode(Array(mac.prefix(10)))
        #expect(cfbl.fields(for: id) == "CFBL-Address: fbl@tern.example; report=arf\r\n"
                + "CFBL-Feedback-ID: \(id):\(tag)\r\n")
        #expect(cfbl.domain == "tern.example")
    }

    @Test func checkingAReturnedID() {
        let value = cfbl.feedbackID(for: id)
        #expect(CFBL.check(value, verp: verp) == .message(id))
        #expect(CFBL.check(" " + value.uppercased() + " ", verp: verp) == .message(id))
        // One tag character changed inside the alphabet: forged.
        let tag = value.split(separator: ":")[1]
        let changed = (tag.first == "0" ? "1" : "0") + tag.dropFirst()
        #expect(CFBL.check("\(id):\(changed)", verp: verp) == .forged)
        // The tag of another message: forged.
        let other = MessageID.make(timestampMs: 1_741_000_000_001, random: Array(1...10))
        #expect(CFBL.check("\(id):\(verp.tag(for: other))", verp: verp) == .forged)
        // Signed with another key: forged.
        let stranger = VERP(secret: Array(repeating: 7, count: 32), domain: "x.example")
        #expect(CFBL.check("\(id):\(stranger.tag(for: id))", verp: verp) == .forged)
        for foreign in ["", "111:112:113", "campaign-7", "\(id)", "notanid:abc"] {
            #expect(CFBL.check(foreign, verp: verp) == .foreign, "\(foreign)")
        }
    }

    @Test func builderWritesTheFieldsBeforeTheBody() throws {
        let request = try SendRequest(json: ["from": "news@tern.example", "to": "a@inbox.example",
                                             "subject": "s", "text": "hi"])
        let built = String(decoding: MessageBuilder.build(
            request, id: id, now: Date(), hostname: "mta.tern.example", cfbl: cfbl), as: UTF8.self)
        let head = try #require(built.components(separatedBy: "\r\n\r\n").first)
        #expect(head.contains("\r\nCFBL-Address: fbl@tern.example; report=arf\r\n"))
        #expect(head.contains("\r\nCFBL-Feedback-ID: \(cfbl.feedbackID(for: id))"))
        let plain = String(decoding: MessageBuilder.build(
            request, id: id, now: Date(), hostname: "mta.tern.example"), as: UTF8.self)
        #expect(!plain.contains("CFBL"))
        // A raw message that sets its own keeps them alone.
        let raw = try SendRequest(json: ["from": "news@tern.example", "to": "a@inbox.example",
                                         "raw": "From: news@tern.example\r\n"
                                             + "CFBL-Address: x@tern.example\r\n\r\nhi\r\n"])
        let kept = String(decoding: MessageBuilder.build(
            raw, id: id, now: Date(), hostname: "h", cfbl: cfbl), as: UTF8.self)
        #expect(!kept.contains("CFBL-Feedback-ID"))
    }

    /// An ARF report whose returned original carries only the CFBL-Feedback-ID (no VERP
    /// Return-Path), as providers that redact the original do.
    static func complaint(feedbackID: String) -> [UInt8] {
        Array("""
            From: fbl@isp.example\r
            To: fbl@tern.example\r
            Subject: complaint\r
            MIME-Version: 1.0\r
            Content-Type: multipart/report; report-type=feedback-report; boundary="b"\r
            \r
            --b\r
            Content-Type: text/plain\r
            \r
            A complaint.\r
            --b\r
            Content-Type: message/feedback-report\r
            \r
            Feedback-Type: abuse\r
            User-Agent: ISP/1\r
            Version: 1\r
            \r
            --b\r
            Content-Type: text/rfc822-headers\r
            \r
            From: news@tern.example\r
            To: reader@isp.example\r
            CFBL-Address: fbl@tern.example; report=arf\r
            CFBL-Feedback-ID: \(feedbackID)\r
            \r
            --b--\r

            """.utf8)
    }

    @Test func classifierTrustsOnlyAVerifiedTag() {
        let classifier = BounceClassifier(verp: verp)
        let good = classifier.classify(Self.complaint(feedbackID: cfbl.feedbackID(for: id)),
                                       toFeedbackAddress: true)
        #expect(good.first?.kind == .complaint)
        #expect(good.first?.messageID == id)
        #expect(good.first?.idSource == "cfbl")
        #expect(good.first?.cfbl == "pass")
        let other = MessageID.make(timestampMs: 1_741_000_000_001, random: Array(1...10))
        let forged = classifier.classify(
            Self.complaint(feedbackID: "\(other):\(verp.tag(for: id))"), toFeedbackAddress: true)
        #expect(forged.first?.kind == .complaint)
        #expect(forged.first?.messageID == "")
        #expect(forged.first?.cfbl == "fail")
        #expect(forged.first?.json.contains("\"cfbl\":\"fail\"") == true)
        let foreign = classifier.classify(Self.complaint(feedbackID: "campaign:7"),
                                          toFeedbackAddress: true)
        #expect(foreign.first?.cfbl == "")
    }
}
