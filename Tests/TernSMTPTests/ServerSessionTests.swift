// The server state machine as dialogue tables: each row is a line the client sends and the
// reply code it must get (nil: message text, no reply), run against a fresh session.

import Testing
import TernCore
import TernMail
@testable import TernSMTP

/// Drives a session the way the I/O shell does, with a synchronous policy and handler.
struct Dialogue {
    var session: SMTPServerSession
    var policy: (String) -> RecipientDecision = { _ in .accept }
    var handlerReply = SMTPReply(250, "2.0.0", "queued")
    var delivered: [(SMTPEnvelope, [UInt8])] = []
    var asked: [String] = []
    var lastReply: SMTPReply?
    var closed = false
    /// Set by a `.startTLS` action: the shell would now make the handshake.
    var tlsRequested = false

    init(_ config: SMTPServerConfig = Dialogue.config(), greet: Bool = true) {
        session = SMTPServerSession(config: config)
        if greet { _ = follow(session.greet()) }
    }

    static func config(_ change: (inout SMTPServerConfig) -> Void = { _ in }) -> SMTPServerConfig {
        var c = SMTPServerConfig(hostname: "mx.test.example", maxMessageSize: 1000,
                                 maxRecipients: 3, maxErrors: 50)
        change(&c)
        return c
    }

    /// Sends one line; the code of the reply it produced, nil when none.
    mutating func send(_ line: String) -> Int? { send(Array(line.utf8)) }

    mutating func send(_ line: [UInt8]) -> Int? { follow(session.receive(line)) }

    mutating func follow(_ first: SMTPServerAction) -> Int? {
        var action = first
        while true {
            switch action {
            case .reply(let r):
                lastReply = r
                return r.code
            case .close(let r):
                lastReply = r
                closed = true
                return r.code
            case .none:
                return nil
            case .checkRecipient(let rcpt, _):
                asked.append(rcpt)
                action = session.recipientDecided(policy(rcpt))
            case .deliver(let envelope, let message):
                delivered.append((envelope, message))
                action = session.messageHandled(handlerReply)
            case .startTLS(let r):
                lastReply = r
                tlsRequested = true
                return r.code
            }
        }
    }

    /// Runs a table; every mismatch is reported with its row.
    mutating func run(_ rows: [(String, Int?)], sourceLocation: SourceLocation = #_sourceLocation) {
        for (line, expected) in rows {
            let got = send(line)
            #expect(got == expected, "\(line) -> \(lastReply.map(\.description) ?? "none")",
                    sourceLocation: sourceLocation)
        }
    }
}

@Suite struct ServerSessionTests {
    @Test func greetingAndEHLO() {
        var d = Dialogue(greet: false)
        #expect(d.follow(d.session.greet()) == 220)
        #expect(d.lastReply?.lines == ["mx.test.example ESMTP Tern"])
        #expect(d.send("EHLO client.example") == 250)
        #expect(d.lastReply?.lines == ["mx.test.example hello client.example", "PIPELINING",
                                       "SIZE 1000", "8BITMIME", "SMTPUTF8",
                                       "ENHANCEDSTATUSCODES"])
        #expect(d.lastReply?.enhanced == nil)
        #expect(d.session.envelope.helo == "client.example")
        #expect(d.session.envelope.extended)
    }

    @Test func aBounceFromStartToEnd() throws {
        var d = Dialogue()
        d.run([
            ("EHLO mx1.inbox.example", 250),
            ("MAIL FROM:<>", 250),
            ("RCPT TO:<b.x.y@bounces.example>", 250),
            ("DATA", 354),
            ("Subject: bounce", nil),
            ("", nil),
            ("..a line that started with a dot", nil),
            ("text", nil),
            (".", 250),
            ("QUIT", 221),
        ])
        #expect(d.closed)
        #expect(d.asked == ["b.x.y@bounces.example"])
        try #require(d.delivered.count == 1)
        let (envelope, message) = d.delivered[0]
        #expect(envelope.mailFrom == "")
        #expect(envelope.recipients == ["b.x.y@bounces.example"])
        #expect(envelope.helo == "mx1.inbox.example")
        #expect(String(decoding: message, as: UTF8.self)
                == "Subject: bounce\r\n\r\n.a line that started with a dot\r\ntext\r\n")
    }

    /// SMTP smuggling: a dot line with a bare LF before or after it is message text, so the
    /// commands behind it stay text too; only CR LF "." CR LF ends the message.
    @Test func aDotLineWithABareLFDoesNotEndTheMessage() throws {
        var d = Dialogue()
        d.run([("EHLO c", 250), ("MAIL FROM:<>", 250), ("RCPT TO:<b.x.y@bounces.example>", 250),
               ("DATA", 354)])
        #expect(d.follow(d.session.receive(Array("text".utf8), endedBare: true)) == nil)
        #expect(d.send(".") == nil)
        #expect(d.follow(d.session.receive(Array(".".utf8), endedBare: true)) == nil)
        #expect(d.send("MAIL FROM:<>") == nil)
        #expect(d.send(".") == 250)
        try #require(d.delivered.count == 1)
        #expect(String(decoding: d.delivered[0].1, as: UTF8.self)
                == "text\r\n.\r\n.\r\nMAIL FROM:<>\r\n")
        #expect(d.session.phase == .ready)
    }

    @Test func theTransactionEndsAfterTheMessage() throws {
        var d = Dialogue()
        d.run([
            ("EHLO c", 250), ("MAIL FROM:<a@b.example> SIZE=10 BODY=8BITMIME", 250),
            ("RCPT TO:<x@y.example>", 250), ("DATA", 354), ("hi", nil), (".", 250),
            // A second transaction on the same session: the old recipients are gone.
            ("RCPT TO:<x@y.example>", 503), ("MAIL FROM:<a@b.example>", 250),
            ("RCPT TO:<z@y.example>", 250), ("DATA", 354), (".", 250),
        ])
        try #require(d.delivered.count == 2)
        #expect(d.delivered[0].0.declaredSize == 10)
        #expect(d.delivered[0].0.body == .eightBitMIME)
        #expect(d.delivered[1].0.recipients == ["z@y.example"])
        #expect(d.delivered[1].0.declaredSize == nil)
        #expect(d.delivered[1].1 == [])
    }

    @Test func commandsOutOfSequence() {
        var d = Dialogue()
        d.run([
            ("MAIL FROM:<>", 503), ("RCPT TO:<a@b.example>", 503), ("DATA", 503),
            ("HELO c", 250), ("RCPT TO:<a@b.example>", 503), ("DATA", 503),
            ("MAIL FROM:<>", 250), ("MAIL FROM:<>", 503),
            // MAIL accepted, no recipient: 554 rather than 503 (RFC 5321 §3.3).
            ("DATA", 554),
            ("RSET", 250), ("MAIL FROM:<>", 250), ("RCPT TO:<a@b.example>", 250),
            // EHLO in a transaction resets it (§4.1.4).
            ("EHLO c", 250), ("RCPT TO:<a@b.example>", 503), ("DATA", 503),
        ])
        #expect(d.lastReply?.code == 503)
        #expect(d.lastReply?.enhanced?.description == "5.5.1")
    }

    @Test func syntaxErrors() {
        var d = Dialogue()
        d.run([
            ("", 500), ("FOO", 500), ("GET / HTTP/1.1", 500), ("EHLO", 501), ("HELO", 501),
            ("ehlo c", 250), ("MAIL", 501), ("MAIL TO:<a@b.example>", 501),
            ("MAIL FROM:a@b.example", 501), ("MAIL FROM:<a@b.example", 501),
            ("MAIL FROM:<not an address>", 501), ("MAIL FROM:<a@b.example>x", 501),
            ("MAIL FROM:<a@b.example> SIZE=abc", 501), ("MAIL FROM:<a@b.example> SIZE", 501),
            ("MAIL FROM:<a@b.example> BODY=BINARYMIME", 501),
            ("MAIL FROM:<a@b.example> SMTPUTF8=yes", 501),
            ("MAIL FROM:<a@b.example> SIZE=1 SIZE=2", 501),
            ("MAIL FROM:<a@b.example> =x", 501),
            ("MAIL FROM:<a@b.example> AUTH=<>", 555),
            ("DATA now", 501), ("RSET all", 501), ("QUIT now", 501), ("VRFY", 501),
            ("VRFY someone", 252), ("EXPN list", 502), ("HELP", 214), ("HELP MAIL", 214),
            ("NOOP", 250), ("NOOP anything at all", 250),
            ("mail from: <a@b.example>", 250), ("RCPT TO:<>", 501), ("RCPT TO:x@y.example", 501),
            ("RCPT TO:<x@y.example> NOTIFY=NEVER", 555), ("RCPT TO:<x@@y.example>", 501),
            ("rcpt to:<x@y.example>  ", 250),
        ])
        #expect(d.asked == ["x@y.example"])
    }

    @Test func enhancedStatusCodesOfRefusals() {
        var d = Dialogue()
        func status(_ line: String) -> String? {
            _ = d.send(line)
            return d.lastReply?.enhanced?.description
        }
        #expect(status("FOO") == "5.5.1")
        #expect(status("MAIL FROM:<>") == "5.5.1")
        #expect(status("EHLO") == "5.5.4")
        #expect(status("EHLO c") == nil)
        #expect(status("MAIL FROM:<x") == "5.5.2")
        #expect(status("MAIL FROM:<bad@>") == "5.1.7")
        #expect(status("MAIL FROM:<a@b.example> X=1") == "5.5.4")
        #expect(status("MAIL FROM:<> SIZE=1001") == "5.3.4")
        #expect(d.lastReply?.code == 552)
        #expect(status("MAIL FROM:<> SIZE=1000") == "2.1.0")
        #expect(status("RCPT TO:<a b@c.example>") == "5.1.3")
        #expect(status("RCPT TO:<a@c.example>") == "2.1.5")
    }

    @Test func parametersNeedEHLO() {
        var d = Dialogue()
        d.run([("HELO c", 250), ("MAIL FROM:<> SIZE=10", 555), ("MAIL FROM:<>", 250)])
        #expect(d.session.envelope.extended == false)
    }

    @Test func sizeDeclaredOverTheLimit() {
        var d = Dialogue()
        d.run([("EHLO c", 250), ("MAIL FROM:<> SIZE=1001", 552),
               ("MAIL FROM:<> SIZE=99999999999999999999999999", 552),
               ("MAIL FROM:<> SIZE=0", 250)])
        #expect(d.session.envelope.declaredSize == 0)
    }

    @Test func oversizedMessageWithoutSIZE() {
        var d = Dialogue()
        d.run([("EHLO c", 250), ("MAIL FROM:<>", 250), ("RCPT TO:<a@b.example>", 250),
               ("DATA", 354)])
        // 20 lines of 60 octets plus CR LF: 1240 octets against a limit of 1000. All of it
        // is read, so the dot is still recognised, then refused.
        for _ in 0..<20 { #expect(d.send(String(repeating: "x", count: 60)) == nil) }
        #expect(d.send(".") == 552)
        #expect(d.lastReply?.enhanced?.description == "5.3.4")
        #expect(d.delivered.isEmpty)
        // The session goes on with a new transaction.
        d.run([("MAIL FROM:<>", 250), ("RCPT TO:<a@b.example>", 250), ("DATA", 354),
               ("small", nil), (".", 250)])
        #expect(d.delivered.count == 1)
    }

    @Test func messageExactlyAtTheLimitIsTaken() {
        var d = Dialogue(Dialogue.config { $0.maxMessageSize = 12 })
        d.run([("EHLO c", 250), ("MAIL FROM:<>", 250), ("RCPT TO:<a@b.example>", 250),
               ("DATA", 354), ("1234567890", nil), (".", 250)])
        #expect(d.delivered.map(\.1) == [Array("1234567890\r\n".utf8)])
        d.run([("MAIL FROM:<>", 250), ("RCPT TO:<a@b.example>", 250),
               ("DATA", 354), ("12345678901", nil), (".", 552)])
    }

    @Test func textLineTooLong() {
        var d = Dialogue(Dialogue.config { $0.maxMessageSize = 100_000 })
        d.run([("EHLO c", 250), ("MAIL FROM:<>", 250), ("RCPT TO:<a@b.example>", 250),
               ("DATA", 354), (String(repeating: "y", count: 998), nil), (".", 250),
               ("MAIL FROM:<>", 250), ("RCPT TO:<a@b.example>", 250), ("DATA", 354),
               (String(repeating: "y", count: 999), nil), ("after", nil), (".", 554)])
        // The content is refused, not a command: no 500.
        #expect(d.lastReply?.enhanced?.description == "5.6.0")
        #expect(d.delivered.count == 1)
    }

    /// A receiver may take text lines past RFC 5321's 1000 octets (real bounces quote long
    /// ones); past its own limit the message is refused as content, 554 5.6.0.
    @Test func longerTextLinesWhenConfigured() {
        var d = Dialogue(Dialogue.config {
            $0.maxMessageSize = 100_000
            $0.maxTextLine = 5000
        })
        let long = String(repeating: "z", count: 5000)
        d.run([("EHLO c", 250), ("MAIL FROM:<>", 250), ("RCPT TO:<a@b.example>", 250),
               ("DATA", 354), (long, nil), (".", 250),
               ("MAIL FROM:<>", 250), ("RCPT TO:<a@b.example>", 250), ("DATA", 354),
               (long + "z", nil), (".", 554), ("NOOP", 250)])
        #expect(d.lastReply?.code == 250)
        #expect(d.delivered.count == 1)
        #expect(d.delivered.first?.1 == Array((long + "\r\n").utf8))
        #expect(!d.closed)
    }

    /// A line past the buffer cap ends the session; in message text that is 554, not 500.
    @Test func lineOverflowInTextIsAMediaError() {
        var d = Dialogue()
        d.run([("EHLO c", 250), ("MAIL FROM:<>", 250), ("RCPT TO:<a@b.example>", 250),
               ("DATA", 354)])
        #expect(d.follow(d.session.lineOverflow()) == 554)
        #expect(d.lastReply?.enhanced?.description == "5.6.0")
        #expect(d.closed)
        var c = Dialogue()
        #expect(c.follow(c.session.lineOverflow()) == 500)
    }

    @Test func commandLineTooLong() {
        var d = Dialogue()
        // 1022 octets plus CR LF is the default limit (RFC 5321's 512 with slack).
        let longest = "NOOP " + String(repeating: "a", count: 1017)
        d.run([("EHLO c", 250), (longest, 250), (longest + "a", 500), ("NOOP", 250)])
        _ = d.send(longest + "a")
        #expect(d.lastReply?.enhanced?.description == "5.5.6")
        #expect(!d.closed)
    }

    @Test func tooManyRecipients() {
        var d = Dialogue()
        d.run([("EHLO c", 250), ("MAIL FROM:<>", 250), ("RCPT TO:<a@b.example>", 250),
               ("RCPT TO:<b@b.example>", 250), ("RCPT TO:<c@b.example>", 250),
               ("RCPT TO:<d@b.example>", 452), ("DATA", 354), (".", 250)])
        #expect(d.delivered.first?.0.recipients == ["a@b.example", "b@b.example",
                                                    "c@b.example"])
        #expect(d.session.errors == 0)
    }

    @Test func refusedRecipientsCountAsErrors() {
        var d = Dialogue(Dialogue.config { $0.maxErrors = 2 })
        d.policy = { rcpt in
            rcpt.hasPrefix("ok") ? .accept : .refuse(SMTPReply(550, "5.7.1", "not here"))
        }
        d.run([("EHLO c", 250), ("MAIL FROM:<>", 250), ("RCPT TO:<no@b.example>", 550),
               ("DATA", 554)])
        #expect(d.lastReply?.text == "5.5.1 no valid recipients")
        // The third refusal is past maxErrors: 421 and the session ends.
        #expect(d.send("RCPT TO:<no@b.example>") == 421)
        #expect(d.closed)
        #expect(d.session.phase == .closed)
    }

    @Test func policyMayEndTheSession() {
        var d = Dialogue()
        d.policy = { _ in .refuse(SMTPReply(421, "4.3.0", "try later")) }
        d.run([("EHLO c", 250), ("MAIL FROM:<>", 250), ("RCPT TO:<a@b.example>", 421)])
        #expect(d.closed)
    }

    @Test func handlerReplyIsPassedOn() {
        var d = Dialogue()
        d.handlerReply = SMTPReply(451, "4.3.0", "storage unavailable")
        d.run([("EHLO c", 250), ("MAIL FROM:<>", 250), ("RCPT TO:<a@b.example>", 250),
               ("DATA", 354), ("x", nil), (".", 451), ("MAIL FROM:<>", 250)])
        #expect(d.lastReply?.code == 250)
        d.handlerReply = SMTPReply(421, "4.3.0", "bye")
        d.run([("RCPT TO:<a@b.example>", 250), ("DATA", 354), (".", 421)])
        #expect(d.closed)
    }

    @Test func tooManyErrors() {
        var d = Dialogue(Dialogue.config { $0.maxErrors = 3 })
        d.run([("FOO", 500), ("BAR", 500), ("MAIL FROM:<>", 503), ("EHLO c", 250),
               ("BAZ", 421)])
        #expect(d.closed)
        #expect(d.lastReply?.enhanced?.description == "4.7.0")
    }

    @Test func tooManyCommands() {
        var d = Dialogue(Dialogue.config { $0.maxCommands = 3 })
        d.run([("EHLO c", 250), ("NOOP", 250), ("NOOP", 250), ("NOOP", 421)])
        #expect(d.closed)
    }

    @Test func earlyTalkerTimeoutAndOverload() {
        var early = Dialogue(greet: false)
        #expect(early.send("EHLO quick") == 554)
        #expect(early.closed)

        var idle = Dialogue()
        #expect(idle.follow(idle.session.timedOut()) == 421)
        #expect(idle.lastReply?.enhanced?.description == "4.4.2")

        var busy = Dialogue(greet: false)
        #expect(busy.follow(busy.session.greet(accepting: false)) == 421)
        #expect(busy.lastReply?.enhanced?.description == "4.3.2")
        #expect(busy.closed)
    }

    @Test func smtputf8Addresses() {
        var d = Dialogue()
        d.run([("EHLO c", 250), ("MAIL FROM:<dörte@bücher.example>", 553),
               ("MAIL FROM:<dörte@bücher.example> SMTPUTF8", 250),
               ("RCPT TO:<jürgen@example.de>", 250)])
        #expect(d.asked == ["jürgen@example.de"])
        var ascii = Dialogue()
        ascii.run([("EHLO c", 250), ("MAIL FROM:<>", 250), ("RCPT TO:<jürgen@example.de>", 553)])
        #expect(ascii.lastReply?.enhanced?.description == "5.6.7")
    }

    @Test func pathForms() {
        var d = Dialogue()
        d.run([("EHLO c", 250), ("MAIL FROM:<@relay.example:a@b.example>", 250),
               ("RCPT TO:<@one.example,@two.example:u@c.example>", 250),
               ("RCPT TO:<Postmaster>", 250), (#"RCPT TO:<"a>b"@c.example>"#, 250)])
        #expect(d.session.envelope.mailFrom == "a@b.example")
        #expect(d.asked == ["u@c.example", "Postmaster", #""a>b"@c.example"#])
    }

    @Test func badBytesInCommands() {
        var d = Dialogue()
        #expect(d.send([0x45, 0x48, 0x4C, 0x4F, 0x20, 0xFF, 0xFE]) == 500)
        #expect(d.send([0x4E, 0x4F, 0x4F, 0x50, 0x00]) == 500)
        #expect(d.send("NOOP\tx") == 500)
        #expect(d.send("NOOP") == 250)
    }

    /// Pseudo-random lines in every phase: the machine must answer each with a real reply
    /// code or take it as text, and never trap.
    @Test func garbageNeverCrashes() {
        var seed: UInt64 = 0x5EED
        func next() -> UInt64 {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return seed >> 33
        }
        let words = ["EHLO x", "HELO", "MAIL FROM:<>", "MAIL FROM:<a@b.example> SIZE=5",
                     "RCPT TO:<a@b.example>", "DATA", ".", "RSET", "NOOP", "VRFY", "QUIT",
                     "MAIL FROM:<\"", "RCPT TO:<@", "RCPT TO:<a@b.example> =", "SIZE="]
        var replies = 0
        for round in 0..<200 {
            var d = Dialogue(Dialogue.config { $0.maxErrors = 1000; $0.maxCommands = 1000 })
            d.policy = { $0.count % 2 == 0 ? .accept : .refuse(SMTPReply(550, "5.1.1", "no")) }
            for _ in 0..<30 where !d.closed {
                var line: [UInt8]
                if next() % 3 == 0 {
                    line = (0..<Int(next() % 40)).map { _ in UInt8(truncatingIfNeeded: next()) }
                } else {
                    line = Array(words[Int(next()) % words.count].utf8)
                    if next() % 4 == 0 { line.append(UInt8(truncatingIfNeeded: next())) }
                }
                if let code = d.send(line) {
                    #expect((200...599).contains(code), "round \(round)")
                    replies += 1
                }
            }
        }
        #expect(replies > 1000)
    }

    @Test func pathParser() {
        let ok = PathParser.parse("FROM:<a@b.example> SIZE=12 SMTPUTF8", prefix: "FROM:")
        #expect(ok == .success(PathArgument(mailbox: "a@b.example", parameters: [
            SMTPParameter(keyword: "SIZE", value: "12"),
            SMTPParameter(keyword: "SMTPUTF8", value: nil)])))
        #expect(PathParser.parse("from:<>", prefix: "FROM:")
                == .success(PathArgument(mailbox: "", parameters: [])))
        #expect(PathParser.parse("TO:", prefix: "TO:") == .failure(.missingBrackets))
        #expect(PathParser.parse("T", prefix: "TO:") == .failure(.missingPrefix))
        #expect(PathParser.parse("TO:<a@b.example>x", prefix: "TO:")
                == .failure(.badParameter("x")))
        #expect(PathParser.parse(#"TO:<"a\">"@b.example>"#, prefix: "TO:")
                == .success(PathArgument(mailbox: #""a\">"@b.example"#, parameters: [])))
    }
}
