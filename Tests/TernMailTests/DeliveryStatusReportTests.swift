// Reading delivery status notifications (RFC 3464) out of multipart/report bounces.

import Foundation
import Testing
import TernMail

@Suite struct DeliveryStatusReportTests {
    static let boundary = "ABC123.1741082707/mx.example.net"

    /// A bounce in the shape Postfix sends: CRLF lines, quoted boundary, folded fields.
    static let sample = """
        Return-Path: <>\r
        From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r
        To: b.01jnh3v0m8a2b4c6d8e0f2g4h6.abcdefghjkmnpqrs@bounces.example.com\r
        Subject: Undelivered Mail Returned to Sender\r
        MIME-Version: 1.0\r
        Content-Type: multipart/report; report-type=delivery-status;\r
        \tboundary="\(boundary)"\r
        \r
        This is a MIME-encapsulated message.\r
        \r
        --\(boundary)\r
        Content-Description: Notification\r
        Content-Type: text/plain; charset=us-ascii\r
        \r
        I'm sorry to have to inform you that your message could not\r
        be delivered to one or more recipients.\r
        \r
        --\(boundary)\r
        Content-Description: Delivery report\r
        Content-Type: message/delivery-status\r
        \r
        Reporting-MTA: dns; mx.example.net\r
        X-Postfix-Queue-ID: 4F2A81234\r
        Arrival-Date: Tue,  4 Mar 2025 10:05:07 +0000 (UTC)\r
        \r
        Final-Recipient: rfc822; nobody@example.net\r
        Original-Recipient: rfc822;Nobody@example.net\r
        Action: failed\r
        Status: 5.1.1\r
        Remote-MTA: dns; inbound.example.net\r
        Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.net>: Recipient address\r
            rejected: User unknown in local recipient table\r
        \r
        --\(boundary)\r
        Content-Description: Undelivered Message Headers\r
        Content-Type: text/rfc822-headers\r
        \r
        From: news@example.com\r
        To: nobody@example.net\r
        \r
        --\(boundary)--\r

        """

    @Test func postfixStyleBounce() throws {
        let report = try DeliveryStatusReport.parse(Array(Self.sample.utf8))
        #expect(report.reportingMTA == "mx.example.net")
        #expect(report.recipients == [RecipientStatus(
            recipient: "nobody@example.net", originalRecipient: "Nobody@example.net",
            action: "failed", status: "5.1.1",
            diagnostic: "550 5.1.1 <nobody@example.net>: Recipient address rejected: User "
                + "unknown in local recipient table",
            remoteMTA: "inbound.example.net")])
        #expect(report.recipients[0].enhanced == EnhancedStatus(statusClass: 5, subject: 1,
                                                                detail: 1))
    }

    @Test func severalRecipientsUnquotedBoundaryAndBareLF() throws {
        let message = """
            From: postmaster@example.org
            Content-Type: Multipart/Report; Report-Type=delivery-status; Boundary=sep42

            --sep42
            Content-Type: text/plain

            Delayed and failed.
            --sep42
            Content-Type: Message/Delivery-Status

            Reporting-MTA: dns;relay.example.org
            Original-Envelope-Id: env-7

            Final-Recipient: RFC822; <first@example.net>
            Action: Delayed
            Status: 4.4.1 (no answer from host)
            Will-Retry-Until: Wed, 5 Mar 2025 10:00:00 +0000

            Final-Recipient: rfc822;second@example.net
            Action: failed
            Status: 5.2.2
            Diagnostic-Code: smtp; 552 5.2.2 Mailbox full
            --sep42--
            """
        let report = try DeliveryStatusReport.parse(Array(message.utf8))
        #expect(report.reportingMTA == "relay.example.org")
        #expect(report.originalEnvelopeID == "env-7")
        #expect(report.recipients.map(\.recipient) == ["first@example.net", "second@example.net"])
        #expect(report.recipients.map(\.action) == ["delayed", "failed"])
        #expect(report.recipients.map(\.status) == ["4.4.1", "5.2.2"])
        #expect(report.recipients.map(\.diagnostic) == [nil, "552 5.2.2 Mailbox full"])
        #expect(report.recipients[0].remoteMTA == nil)
    }

    @Test func nestedInsideAForward() throws {
        let inner = Self.sample.replacingOccurrences(of: "Return-Path: <>\r\n", with: "")
        let message = "From: someone@example.org\r\n"
            + "Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n"
            + "--outer\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
            + "--outer\r\nContent-Type: message/rfc822\r\n\r\nSubject: unrelated\r\n\r\nx\r\n"
            + "--outer\r\n" + inner + "\r\n--outer--\r\n"
        let report = try DeliveryStatusReport.parse(Array(message.utf8))
        #expect(report.recipients.first?.recipient == "nobody@example.net")
    }

    @Test func base64DeliveryStatus() throws {
        let fields = "Reporting-MTA: dns; gw.example.com\r\n\r\n"
            + "Final-Recipient: rfc822; x@example.net\r\nAction: failed\r\nStatus: 5.0.0\r\n"
        let encoded = Data(fields.utf8).base64EncodedString(options: .lineLength76Characters)
        let message = "Content-Type: multipart/report; boundary=b\r\n\r\n--b\r\n"
            + "Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n"
            + "\r\n" + encoded + "\r\n--b--\r\n"
        let report = try DeliveryStatusReport.parse(Array(message.utf8))
        #expect(report.reportingMTA == "gw.example.com")
        #expect(report.recipients.first?.status == "5.0.0")
    }

    @Test func missingClosingBoundaryStillReads() throws {
        let truncated = Self.sample.components(separatedBy: "--\(Self.boundary)\r\n"
            + "Content-Description: Undelivered")[0]
        let cut = String(truncated.dropLast(2))  // ends inside the delivery-status part
        let report = try DeliveryStatusReport.parse(Array(cut.utf8))
        #expect(report.recipients.first?.status == "5.1.1")
    }

    static let failures: [(String, String, DeliveryStatusError)] = [
        ("empty", "", .notMultipart),
        ("plain text", "Subject: hi\r\n\r\nhello\r\n", .notMultipart),
        ("not a header section", "hello there\r\nworld\r\n", .notMultipart),
        ("no boundary", "Content-Type: multipart/report\r\n\r\n--x\r\n\r\n--x--\r\n",
         .noDeliveryStatus),
        ("no status part", "Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\n"
            + "Content-Type: text/plain\r\n\r\nsorry\r\n--x--\r\n", .noDeliveryStatus),
        ("no recipients", "Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\n"
            + "Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; a\r\n--x--\r\n",
         .noRecipients),
        ("empty status part", "Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\n"
            + "Content-Type: message/delivery-status\r\n\r\n--x--\r\n", .noRecipients),
    ]

    @Test(arguments: failures) func malformed(_ name: String, _ message: String,
                                              _ expected: DeliveryStatusError)
    {
        #expect(throws: expected) { try DeliveryStatusReport.parse(Array(message.utf8)) }
    }

    @Test func deepNestingStops() {
        var message = "Content-Type: message/delivery-status\r\n\r\n"
            + "Final-Recipient: rfc822; a@b\r\n"
        for level in 0..<40 {
            message = "Content-Type: multipart/mixed; boundary=l\(level)\r\n\r\n--l\(level)\r\n"
                + message + "\r\n--l\(level)--\r\n"
        }
        #expect(throws: DeliveryStatusError.noDeliveryStatus) {
            try DeliveryStatusReport.parse(Array(message.utf8))
        }
    }

    @Test func everyTruncationAndRandomBytesAreHandled() {
        // Input from the Internet: no prefix of a real bounce and no noise may crash the
        // parser. Each outcome is either a report or one of the errors.
        let sample = Array(Self.sample.utf8)
        var reports = 0
        for length in 0...sample.count {
            if (try? DeliveryStatusReport.parse(Array(sample.prefix(length)))) != nil {
                reports += 1
            }
        }
        // Prefixes that reach the Status line parse; shorter ones cannot.
        #expect(reports > 0 && reports < sample.count)
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let noise = (0..<Int.random(in: 0..<600, using: &generator)).map { _ in
                "\r\n-:;=\" abcContent-Type/multipart".utf8.randomElement(using: &generator)!
            }
            _ = try? DeliveryStatusReport.parse(noise)
        }
    }
}
