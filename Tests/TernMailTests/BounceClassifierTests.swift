// The classifier's parts one by one: MIME limits against hostile input, transfer and
// header decoding, the reason rules, and tying a report to a message by VERP.

import Foundation
import Testing
import TernMail

@Suite struct BounceClassifierTests {
    static let verp = VERP(secret: Array(repeating: 9, count: 16), domain: "bounces.tern.example")

    @Test func deepNestingStopsAtTheLimit() {
        var message = ""
        for level in 0..<5000 {
            message += "Content-Type: multipart/mixed; boundary=\"b\(level)\"\r\n\r\n"
                + "--b\(level)\r\n"
        }
        let root = MIMEEntity.parse(Array(message.utf8))
        #expect(root.all.count <= MIMEEntity.Limits().maxDepth + 1)
        let records = BounceClassifier().classify(Array(message.utf8))
        #expect(records.map(\.kind) == [.notAReport])
    }

    @Test func partCountIsBounded() {
        var message = "Content-Type: multipart/mixed; boundary=x\r\n\r\n"
        message += String(repeating: "--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n", count: 5000)
        #expect(MIMEEntity.parse(Array(message.utf8)).all.count <= MIMEEntity.Limits().maxParts)
    }

    @Test func recordsPerMessageAreCapped() {
        var text = "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n"
            + "\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n"
        for n in 0..<1000 {
            text += "\r\nFinal-Recipient: rfc822; u\(n)@x.example\r\nAction: failed\r\n"
                + "Status: 5.1.1\r\n"
        }
        let records = BounceClassifier().classify(Array((text + "\r\n--b--\r\n").utf8))
        #expect(records.count == BounceClassifier.maxRecords)
        #expect(records.first?.recipient == "u0@x.example")
    }

    @Test func messageIDLinesAreFoundInAnyCase() {
        let id = MessageID.generate()
        let message = "Subject: Re\r\n\r\nquoted text\r\nmessage-ID: <\(id)@api.example>\r\n"
        let record = BounceClassifier().classify(Array(message.utf8)).first
        #expect(record?.messageID == id)
        #expect(record?.idSource == "message-id")
    }

    @Test func inputIsCapped() {
        var limits = MIMEEntity.Limits()
        limits.maxInput = 1000
        let message = Array("Subject: x\r\n\r\n".utf8) + [UInt8](repeating: 0x41, count: 100_000)
        #expect(MIMEEntity.parse(message, limits: limits).rawBody.count < 1000)
    }

    @Test func randomBytesNeverCrash() {
        var generator = SystemRandomNumberGenerator()
        let classifier = BounceClassifier(verp: Self.verp)
        for _ in 0..<100 {
            let count = Int.random(in: 0..<3000, using: &generator)
            let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
            #expect(!classifier.classify(bytes).isEmpty)
        }
    }

    @Test func quotedPrintableAndBase64AreDecoded() {
        let qp = MIMEEntity.parse(Array("""
            Content-Transfer-Encoding: quoted-printable\r
            \r
            caf=C3=A9 soft=\r
            break =ZZ end=
            """.utf8))
        #expect(qp.text == "café softbreak =ZZ end")
        let b64 = MIMEEntity.parse(
            Array("Content-Transfer-Encoding: base64\r\n\r\naGVs\r\nbG8=\r\n".utf8))
        #expect(b64.text == "hello")
        let bad = MIMEEntity.parse(Array("Content-Transfer-Encoding: base64\r\n\r\n***\r\n".utf8))
        // Base64 that cannot be decoded is kept as it came.
        #expect(bad.decodedBody == Array("***\r\n".utf8))
    }

    @Test func encodedWords() {
        #expect(MIMEText.decodeWords("=?UTF-8?Q?Abwesenheitsnotiz:_Ihre?= =?UTF-8?B?UmVjaG51bmc=?=")
                == "Abwesenheitsnotiz: IhreRechnung")
        #expect(MIMEText.decodeWords("=?iso-8859-1?q?R=E9ponse?= automatique")
                == "Réponse automatique")
        #expect(MIMEText.decodeWords("plain =?bogus") == "plain =?bogus")
        #expect(MIMEText.decodeWords("=?UTF-8?X?abc?=") == "=?UTF-8?X?abc?=")
    }

    @Test(arguments: [
        ("5.1.1", "whatever", "user-unknown"),
        ("5.0.0", "550 Requested action not taken: mailbox unavailable", "user-unknown"),
        ("5.7.1", "blocked using zen.spamhaus.example", "blocked"),
        ("5.7.1", "message looks like spam", "spam-content"),
        ("5.7.1", "Relaying denied", "policy"),
        ("4.2.2", "", "mailbox-full"),
        ("5.2.2", "", "mailbox-full"),
        ("5.1.10", "Recipient not found by SMTP address lookup", "user-unknown"),
        ("5.1.10", "Domain has a null MX", "domain-not-found"),
        ("4.4.7", "Connection timed out", "expired"),
        ("4.7.0", "TLS is required", "security-tls"),
        ("5.5.0", "", "other"),
        ("4.4.1", "", "network-error"),
        ("4.3.0", "", "system-error"),
        ("5.7.26", "", "authentication"),
        ("5.3.4", "", "message-too-big"),
    ])
    func reasonRules(_ status: String, _ text: String, _ reason: String) {
        #expect(ReasonRules.reason(status: EnhancedStatus(status), text: text).rawValue == reason)
    }

    @Test func severityFollowsReasonAndPermanence() {
        func dsn(_ status: String, _ diagnostic: String) -> ReportRecord? {
            let text = """
                Content-Type: multipart/report; report-type=delivery-status; boundary=b\r
                \r
                --b\r
                Content-Type: message/delivery-status\r
                \r
                Reporting-MTA: dns; mx.example\r
                \r
                Final-Recipient: rfc822; a@inbox.example\r
                Action: failed\r
                Status: \(status)\r
                Diagnostic-Code: smtp; \(diagnostic)\r
                \r
                --b--\r

                """
            return BounceClassifier().classify(Array(text.utf8)).first
        }
        #expect(dsn("5.1.1", "550 5.1.1 unknown")?.severity == .hard)
        #expect(dsn("5.7.1", "550 5.7.1 blocked using a blocklist")?.severity == .soft)
        #expect(dsn("4.4.7", "expired")?.severity == .soft)
        #expect(dsn("5.9.9", "550 something odd")?.severity == .hard)
    }

    @Test func envelopeVERPWinsAndForgedOnesAreIgnored() {
        let id = MessageID.generate()
        let message = Array("Subject: Out of office\r\nAuto-Submitted: auto-replied\r\n\r\nAway\r\n"
            .utf8)
        let classifier = BounceClassifier(verp: Self.verp)
        let signed = classifier.classify(message, envelopeRecipients: [Self.verp.address(for: id)])
        #expect(signed.first?.messageID == id)
        #expect(signed.first?.idSource == "verp")
        #expect(signed.first?.kind == .autoReply)
        let other = VERP(secret: Array(repeating: 1, count: 16), domain: "bounces.tern.example")
        let forged = classifier.classify(message, envelopeRecipients: [other.address(for: id)])
        #expect(forged.first?.messageID == "")
        // Without a key, the id is read from the address's shape and marked as such.
        let offline = BounceClassifier().classify(
            Array("To: \(other.address(for: id))\r\n\r\nhi\r\n".utf8))
        #expect(offline.first?.messageID == id)
        #expect(offline.first?.idSource == "verp-unverified")
    }

    @Test func plainForwardIsAComplaintOnlyAtAFeedbackAddress() {
        let id = MessageID.generate()
        let message = Array("""
            From: abuse@isp.example\r
            Subject: Fwd: Sale\r
            Content-Type: multipart/mixed; boundary=f\r
            \r
            --f\r
            Content-Type: text/plain\r
            \r
            Spam from your customer.\r
            --f\r
            Content-Type: message/rfc822\r
            \r
            Return-Path: <\(Self.verp.address(for: id))>\r
            To: Pat <pat@isp.example>\r
            Subject: Sale\r
            \r
            Buy.\r
            --f--\r

            """.utf8)
        let classifier = BounceClassifier(verp: Self.verp)
        let atFBL = classifier.classify(message, toFeedbackAddress: true)
        #expect(atFBL.map(\.kind) == [.complaint])
        #expect(atFBL.first?.format == "forward")
        #expect(atFBL.first?.recipient == "pat@isp.example")
        #expect(atFBL.first?.messageID == id)
        #expect(classifier.classify(message).map(\.kind) == [.notAReport])
    }

    @Test func jsonHasEveryKeySorted() throws {
        let record = ReportRecord(kind: .bounce, severity: .hard, reason: .userUnknown)
        let json = record.json
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8))
            as? [String: String])
        #expect(object.count == 14)
        #expect(json.hasPrefix("{\"action\":\"\",\"feedback_type\""))
        #expect(object["reason"] == "user-unknown")
    }
}
