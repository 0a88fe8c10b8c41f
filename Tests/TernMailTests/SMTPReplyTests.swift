// SMTP reply parsing (RFC 5321 §4.2), enhanced status codes (RFC 3463, RFC 2034) and rendering.

import Testing
import TernMail
import TernTestSupport

@Suite struct SMTPReplyTests {
    /// Feeds lines until a reply completes; every line before the last must return nil.
    func parse(_ lines: [String]) throws -> SMTPReply? {
        var parser = SMTPReplyParser()
        for (i, line) in lines.enumerated() {
            let reply = try parser.feed(line)
            if i < lines.count - 1 {
                #expect(reply == nil, "reply completed early at \(line)")
                #expect(parser.isPending)
            } else {
                #expect(!parser.isPending)
                return reply
            }
        }
        return nil
    }

    struct Case: Sendable, CustomTestStringConvertible {
        let lines: [String]
        let code: Int
        let enhanced: String?
        let text: String
        var testDescription: String { lines.joined(separator: " | ") }
    }

    static let cases: [Case] = [
        Case(lines: ["250 OK"], code: 250, enhanced: nil, text: "OK"),
        Case(lines: ["250 2.1.0 Sender OK"], code: 250, enhanced: "2.1.0",
             text: "2.1.0 Sender OK"),
        Case(lines: ["550 5.1.1 <nobody@example.com>: Recipient address rejected"], code: 550,
             enhanced: "5.1.1", text: "5.1.1 <nobody@example.com>: Recipient address rejected"),
        Case(lines: ["250-mx.example.com Hello", "250-PIPELINING", "250-SIZE 35882577",
                     "250 SMTPUTF8"],
             code: 250, enhanced: nil,
             text: "mx.example.com Hello\nPIPELINING\nSIZE 35882577\nSMTPUTF8"),
        Case(lines: ["451-4.7.1 Greylisted, try again", "451 4.7.1 in 5 minutes"], code: 451,
             enhanced: "4.7.1", text: "4.7.1 Greylisted, try again\n4.7.1 in 5 minutes"),
        Case(lines: ["250"], code: 250, enhanced: nil, text: ""),
        Case(lines: ["250-first", "250"], code: 250, enhanced: nil, text: "first\n"),
        Case(lines: ["220 mx.example.com ESMTP"], code: 220, enhanced: nil,
             text: "mx.example.com ESMTP"),
        Case(lines: ["354 End data with <CR><LF>.<CR><LF>"], code: 354, enhanced: nil,
             text: "End data with <CR><LF>.<CR><LF>"),
        // Not enhanced codes: class 3 does not exist, 4-digit subject, missing detail.
        Case(lines: ["550 3.1.1 nope"], code: 550, enhanced: nil, text: "3.1.1 nope"),
        Case(lines: ["550 5.1234.1 nope"], code: 550, enhanced: nil, text: "5.1234.1 nope"),
        Case(lines: ["550 5.1 nope"], code: 550, enhanced: nil, text: "5.1 nope"),
        Case(lines: ["550 5.7.26 Unauthenticated email"], code: 550, enhanced: "5.7.26",
             text: "5.7.26 Unauthenticated email"),
    ]

    @Test(arguments: cases) func parses(_ c: Case) throws {
        let reply = try #require(try parse(c.lines))
        #expect(reply.code == c.code)
        #expect(reply.enhanced?.description == c.enhanced)
        #expect(reply.text == c.text)
        #expect(reply.lines.count == c.lines.count)
    }

    static let malformed: [([String], SMTPReplyError)] = [
        (["25"], .badCode(line: "25")),
        ([""], .badCode(line: "")),
        (["abc hello"], .badCode(line: "abc hello")),
        (["2x0 hello"], .badCode(line: "2x0 hello")),
        (["250_hello"], .badSeparator(line: "250_hello")),
        (["2500 hello"], .badSeparator(line: "2500 hello")),
        (["199 too low"], .codeOutOfRange(199)),
        (["600 too high"], .codeOutOfRange(600)),
        (["000"], .codeOutOfRange(0)),
        (["250-first", "251 second"], .codeMismatch(expected: 250, got: 251)),
        (["250-first", "garbage"], .badCode(line: "garbage")),
    ]

    @Test(arguments: malformed) func rejects(_ lines: [String], _ expected: SMTPReplyError)
        throws
    {
        var parser = SMTPReplyParser()
        for line in lines.dropLast() { #expect(try parser.feed(line) == nil) }
        #expect(throws: expected) { try parser.feed(lines.last!) }
        // The parser starts afresh after an error.
        #expect(!parser.isPending)
        #expect(try parser.feed("250 OK")?.code == 250)
    }

    @Test func classes() throws {
        var parser = SMTPReplyParser()
        let ok = try #require(try parser.feed("250 OK"))
        let later = try #require(try parser.feed("421 4.3.2 shutting down"))
        let never = try #require(try parser.feed("554 5.7.1 rejected"))
        let go = try #require(try parser.feed("354 go ahead"))
        #expect(ok.isPositive && !ok.isTransient && !ok.isPermanent)
        #expect(!later.isPositive && later.isTransient && !later.isPermanent)
        #expect(!never.isPositive && !never.isTransient && never.isPermanent)
        #expect(!go.isPositive && !go.isTransient && !go.isPermanent)
        #expect(later.enhanced == EnhancedStatus(statusClass: 4, subject: 3, detail: 2))
    }

    @Test func bytesWithInvalidUTF8AreRead() throws {
        var parser = SMTPReplyParser()
        let reply = try #require(try parser.feed(Array("550 caf".utf8) + [0xE9]))
        #expect(reply.code == 550)
        #expect(reply.text == "caf\u{FFFD}")
    }

    @Test func controlsInTheTextAreEscaped() throws {
        var parser = SMTPReplyParser()
        #expect(try parser.feed(Array("250-a\0b\u{1b}[2J".utf8)) == nil)
        let last = Array("250 c\td\u{7f}".utf8) + [0xC2, 0x85, 0x0D]
        let reply = try #require(try parser.feed(last))
        #expect(reply.lines == ["a\\x00b\\x1b[2J", "c\td\\x7f\\x85\\x0d"])
        #expect(try parser.feed("250 plain")?.text == "plain")
    }

    @Test func render() {
        #expect(SMTPReply(code: 250, lines: ["OK"]).render() == "250 OK\r\n")
        #expect(SMTPReply(code: 250, lines: ["mx Hello", "PIPELINING", "SMTPUTF8"]).render()
                == "250-mx Hello\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n")
        #expect(SMTPReply(code: 250, lines: []).render() == "250\r\n")
        #expect(SMTPReply(code: 250, lines: ["a", ""]).render() == "250-a\r\n250\r\n")
        let status = EnhancedStatus(statusClass: 5, subject: 1, detail: 1)
        let reply = SMTPReply(code: 550, enhanced: status, text: "No such user\nTry later")
        #expect(reply.render() == "550-5.1.1 No such user\r\n550 5.1.1 Try later\r\n")
        #expect(reply.enhanced == status)
    }

    @Test func renderThenParseRoundTrips() throws {
        let original = SMTPReply(code: 452, lines: ["4.5.3 Too many", "4.5.3 recipients"])
        var parser = SMTPReplyParser()
        var parsed: SMTPReply?
        for line in original.render().split(separator: "\r\n") {
            parsed = try parser.feed(String(line))
        }
        #expect(parsed == original)
    }

    @Test(arguments: [("2.0.0", true), ("5.7.26", true), ("4.999.999", true), ("3.0.0", false),
                      ("5.0", false), ("5..0", false), ("50.1.1", false), ("5.1.1.1", false),
                      ("5.a.1", false), ("", false)])
    func enhancedStatus(_ text: String, _ valid: Bool) {
        #expect((EnhancedStatus(text) != nil) == valid)
        if valid { #expect(EnhancedStatus(text)?.description == text) }
    }

    /// RFC 3463 §2 read as plainly as it is written, against the octet-wise reader.
    static func referenceStatus(_ text: String) -> EnhancedStatus? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].count == 1,
              parts.allSatisfy({ (1...3).contains($0.count)
                                 && $0.allSatisfy { ("0"..."9").contains($0) } }),
              let c = Int(parts[0]), [2, 4, 5].contains(c),
              let s = Int(parts[1]), let d = Int(parts[2])
        else { return nil }
        return EnhancedStatus(statusClass: c, subject: s, detail: d)
    }

    @Test func enhancedStatusesReadAsTheRFCWritesThem() {
        var rng = SeededGenerator(state: 3463)
        let pieces = ["2", "4", "5", "3", "0", "1", "12", "123", "1234", ".", ".", "a", " ",
                      "٣", "５", "-", ""]
        for _ in 0..<20_000 {
            let text = (0..<Int.random(in: 0...7, using: &rng))
                .map { _ in pieces.randomElement(using: &rng)! }.joined()
            #expect(EnhancedStatus(text) == Self.referenceStatus(text), "\(text)")
        }
    }
}
