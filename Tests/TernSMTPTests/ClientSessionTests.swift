// The SMTP client state machine on its own: replies in, commands and results out, with no
// socket. Each test is a dialogue; the I/O shell is covered in ClientConnectionTests.

import Testing
import TernCore
import TernMail
@testable import TernSMTP

@Suite struct ClientSessionTests {
    static let message = OutboundMessage(
        returnPath: "b.id.sig@bounces.tern.example", recipient: "a@inbox.example",
        content: Array("Subject: hi\r\n\r\n.dot line\r\nbody\r\n".utf8))

    static func reply(_ code: Int, _ lines: String...) -> SMTPReply {
        SMTPReply(code: code, lines: lines.isEmpty ? [""] : lines)
    }

    static let ehloFull = reply(250, "mx.example greets out1", "SIZE 1000000", "8BITMIME",
                                "SMTPUTF8", "PIPELINING", "ENHANCEDSTATUSCODES", "STARTTLS",
                                "HELP")
    /// The same without PIPELINING: one command, one reply.
    static let ehloSerial = reply(250, "mx.example greets out1", "SIZE 1000000", "8BITMIME",
                                  "SMTPUTF8", "ENHANCEDSTATUSCODES", "STARTTLS", "HELP")

    /// The line a `.send` action carries, as text.
    static func line(_ action: SMTPClientAction) -> String? {
        guard case .send(let bytes, _, _) = action else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func result(_ action: SMTPClientAction) -> DeliveryResult? {
        switch action {
        case .finished(let r): return r
        case .close(let r): return r
        default: return nil
        }
    }

    /// A session that is through greeting and EHLO.
    static func openSession(ehlo: SMTPReply = ehloSerial) -> SMTPClientSession {
        var s = SMTPClientSession(helo: "out1.tern.example", mxHost: "mx.example",
                                  address: "127.0.0.11")
        _ = s.start()
        _ = s.receive(reply(220, "mx.example ESMTP"))
        #expect(s.receive(ehlo) == .ready)
        return s
    }

    @Test func aWholeDeliveryIssuesTheCommandsInOrder() {
        var s = SMTPClientSession(helo: "out1.tern.example", mxHost: "mx.example",
                                  address: "127.0.0.11")
        let timeouts = SMTPClientTimeouts()
        #expect(s.start() == .receive(timeout: timeouts.greeting))
        #expect(Self.line(s.receive(Self.reply(220, "mx.example ESMTP")))
                == "EHLO out1.tern.example\r\n")
        #expect(s.receive(Self.ehloSerial) == .ready)
        #expect(s.extensions.sizeLimit == 1_000_000)
        #expect(s.extensions.eightBitMIME && s.extensions.smtpUTF8 && !s.extensions.pipelining)
        #expect(s.extensions.startTLS && s.extensions.enhancedStatusCodes)
        #expect(!s.extensions.offers("CHUNKING"))
        #expect(ServiceExtensions(ehlo: Self.ehloFull).pipelining)

        let size = Self.message.content.count
        #expect(Self.line(s.send(Self.message))
                == "MAIL FROM:<b.id.sig@bounces.tern.example> SIZE=\(size)\r\n")
        #expect(Self.line(s.receive(Self.reply(250, "2.1.0 Ok")))
                == "RCPT TO:<a@inbox.example>\r\n")
        let data = s.receive(Self.reply(250, "2.1.5 Ok"))
        #expect(data == .send(Array("DATA\r\n".utf8), writeTimeout: timeouts.dataInitiation,
                              replyTimeout: timeouts.dataInitiation))
        let payload = s.receive(Self.reply(354, "go ahead"))
        #expect(payload == .send(Array("Subject: hi\r\n\r\n..dot line\r\nbody\r\n.\r\n".utf8),
                                 writeTimeout: timeouts.dataBlock,
                                 replyTimeout: timeouts.dataTermination))
        let done = s.receive(Self.reply(250, "2.0.0 Ok: queued as X"))
        let result = Self.result(done)
        #expect(result?.outcome == .delivered)
        #expect(result?.stage == .dot)
        #expect(result?.code == 250 && result?.enhanced == "2.0.0")
        #expect(result?.mxHost == "mx.example" && result?.address == "127.0.0.11")
        #expect(s.isReady)
        #expect(Self.line(s.quit()) == "QUIT\r\n")
        #expect(s.receive(Self.reply(221, "bye")) == .close(nil))
        #expect(s.phase == .closed)
    }

    @Test func heloFallbackWhenEHLOIsRefused() {
        var s = SMTPClientSession(helo: "out1.tern.example", mxHost: "m", address: "127.0.0.1")
        _ = s.start()
        _ = s.receive(Self.reply(220, "old server"))
        #expect(Self.line(s.receive(Self.reply(502, "5.5.1 what?")))
                == "HELO out1.tern.example\r\n")
        #expect(s.receive(Self.reply(250, "hello")) == .ready)
        #expect(s.extensions == ServiceExtensions())
        // No SIZE offered, so no SIZE parameter; no 8BITMIME for an 8-bit body either.
        var m = Self.message
        m.content += [0xC3, 0xA9]
        #expect(Self.line(s.send(m)) == "MAIL FROM:<b.id.sig@bounces.tern.example>\r\n")
    }

    @Test func heloRefusedToo() {
        var s = SMTPClientSession(helo: "h", mxHost: "m", address: "a")
        _ = s.start()
        _ = s.receive(Self.reply(220))
        _ = s.receive(Self.reply(500, "no"))
        let r = Self.result(s.receive(Self.reply(550, "5.7.1 go away")))
        #expect(r?.outcome == .deferred && r?.stage == .ehlo && r?.code == 550)
        #expect(Self.line(s.quit()) == "QUIT\r\n")
    }

    @Test func ehloTransientFailureDefers() {
        var s = SMTPClientSession(helo: "h", mxHost: "m", address: "a")
        _ = s.start()
        _ = s.receive(Self.reply(220))
        let action = s.receive(Self.reply(451, "4.7.1 later"))
        guard case .finished(let r) = action else {
            Issue.record("expected finished, got \(action)")
            return
        }
        #expect(r.outcome == .deferred && r.stage == .ehlo)
    }

    @Test func eightBitBodyAndUTF8AddressUseTheirParameters() {
        var s = Self.openSession()
        let m = OutboundMessage(returnPath: "b@x.example", recipient: "jörg@inbox.example",
                                content: Array("Subject: é\r\n\r\nü\r\n".utf8))
        #expect(Self.line(s.send(m))
                == "MAIL FROM:<b@x.example> SIZE=\(m.content.count) BODY=8BITMIME SMTPUTF8\r\n")
        #expect(Self.line(s.receive(Self.reply(250))) == "RCPT TO:<jörg@inbox.example>\r\n")
    }

    @Test func utf8AddressWithoutSMTPUTF8FailsWithoutSending() {
        var s = Self.openSession(ehlo: Self.reply(250, "mx", "SIZE"))
        let m = OutboundMessage(returnPath: "b@x.example", recipient: "jörg@inbox.example",
                                content: [0x41])
        let r = Self.result(s.send(m))
        #expect(r?.outcome == .failed && r?.stage == .mail && r?.enhanced == "5.6.7")
        #expect(s.isReady)
    }

    @Test func messageOverTheSizeLimitFailsWithoutSending() {
        var s = Self.openSession(ehlo: Self.reply(250, "mx", "SIZE 10"))
        let r = Self.result(s.send(Self.message))
        #expect(r?.outcome == .failed && r?.enhanced == "5.3.4" && r?.code == 0)
        #expect(r?.text.contains("exceeds") == true)
    }

    @Test func anAddressWithLineBreaksIsNeverWritten() {
        var s = Self.openSession()
        let m = OutboundMessage(returnPath: "b@x.example", recipient: "a@x.example>\r\nRSET",
                                content: [0x41])
        let r = Self.result(s.send(m))
        #expect(r?.outcome == .failed && r?.enhanced == "5.1.3")
    }

    /// Drives an open session to `stage` and answers it with `answer`.
    static func answer(at stage: DeliveryStage, with answer: SMTPReply) -> SMTPClientAction {
        var s = openSession()
        _ = s.send(message)
        let before: [DeliveryStage: Int] = [.mail: 0, .rcpt: 1, .data: 2, .dot: 3]
        for r in [reply(250), reply(250), reply(354)].prefix(before[stage]!) {
            _ = s.receive(r)
        }
        return s.receive(answer)
    }

    @Test(arguments: [DeliveryStage.mail, .rcpt, .data, .dot])
    func transientAndPermanentRepliesAtEachStage(stage: DeliveryStage) {
        let deferred = Self.answer(at: stage, with: Self.reply(451, "4.3.0 try later"))
        guard case .finished(let d) = deferred else {
            Issue.record("451 at \(stage): \(deferred)")
            return
        }
        #expect(d.outcome == .deferred && d.stage == stage && d.code == 451)
        #expect(d.enhanced == "4.3.0" && d.text == "4.3.0 try later")

        let failed = Self.answer(at: stage, with: Self.reply(550, "5.1.1 no such user",
                                                            "5.1.1 really"))
        guard case .finished(let f) = failed else {
            Issue.record("550 at \(stage): \(failed)")
            return
        }
        #expect(f.outcome == .failed && f.stage == stage && f.code == 550)
        #expect(f.text == "5.1.1 no such user\n5.1.1 really")

        // 421: the server is closing the channel (RFC 5321 §3.8); no QUIT, no reuse.
        let closing = Self.answer(at: stage, with: Self.reply(421, "4.4.2 bye"))
        guard case .close(let c?) = closing else {
            Issue.record("421 at \(stage): \(closing)")
            return
        }
        #expect(c.outcome == .deferred && c.stage == stage && c.code == 421)
    }

    @Test func greetingReplies() {
        func greet(_ r: SMTPReply) -> (SMTPClientAction, SMTPClientSession) {
            var s = SMTPClientSession(helo: "h", mxHost: "m", address: "a")
            _ = s.start()
            return (s.receive(r), s)
        }
        let (refused, s554) = greet(Self.reply(554, "5.7.1 no service for you"))
        let r = Self.result(refused)
        #expect(r?.outcome == .failed && r?.stage == .greeting && r?.fallback == .nextHost)
        if case .finished = refused {} else { Issue.record("554 should still allow QUIT") }
        var quitting = s554
        #expect(Self.line(quitting.quit()) == "QUIT\r\n")

        let (busy, _) = greet(Self.reply(421, "4.3.2 busy"))
        guard case .close(let b?) = busy else {
            Issue.record("421 greeting should close: \(busy)")
            return
        }
        #expect(b.outcome == .deferred && b.fallback == .none && b.code == 421)

        let (odd, _) = greet(Self.reply(450, "not now"))
        #expect(Self.result(odd)?.outcome == .deferred && Self.result(odd)?.stage == .greeting)
    }

    @Test func noGreetingMovesOnToTheNextAddress() {
        var s = SMTPClientSession(helo: "h", mxHost: "m", address: "a")
        _ = s.start()
        let r = Self.result(s.linkFailed(.timedOut))
        #expect(r?.outcome == .deferred && r?.stage == .greeting && r?.fallback == .nextAddress)
    }

    @Test func connectionLostWhileSendingTheTextDefersAtData() {
        var s = Self.openSession()
        _ = s.send(Self.message)
        _ = s.receive(Self.reply(250))
        _ = s.receive(Self.reply(250))
        _ = s.receive(Self.reply(354))
        let r = Self.result(s.linkFailed(.closed, whileWriting: true))
        #expect(r?.outcome == .deferred && r?.stage == .data && r?.code == 0)
        #expect(r?.enhanced == "4.4.2")
        #expect(s.phase == .closed)
    }

    @Test func connectionLostAfterTheDotIsAmbiguous() {
        var s = Self.openSession()
        _ = s.send(Self.message)
        _ = s.receive(Self.reply(250))
        _ = s.receive(Self.reply(250))
        _ = s.receive(Self.reply(354))
        let r = Self.result(s.linkFailed(.closed))
        #expect(r?.outcome == .ambiguous && r?.stage == .dot && r?.reply == nil)
        #expect(r?.text.contains("ambiguous") == true)
    }

    @Test func unexpectedPositiveReplyIsAProtocolError() {
        var s = Self.openSession()
        _ = s.send(Self.message)
        _ = s.receive(Self.reply(250))
        _ = s.receive(Self.reply(250))
        let action = s.receive(Self.reply(250, "DATA? sure"))
        guard case .close(let r?) = action else {
            Issue.record("expected close, got \(action)")
            return
        }
        #expect(r.outcome == .deferred && r.stage == .data)
    }

    /// After the final dot only 2yz, 4yz or 5yz decide (RFC 5321 §4.3.2); a 3yz leaves the
    /// outcome unknown, as a garbled reply does, and the session is out of step.
    @Test func aThreeHundredReplyToTheDotIsAmbiguous() {
        var s = Self.openSession()
        _ = s.send(Self.message)
        _ = s.receive(Self.reply(250))
        _ = s.receive(Self.reply(250))
        _ = s.receive(Self.reply(354, "go ahead"))
        let action = s.receive(Self.reply(354, "go ahead again"))
        guard case .close(let r?) = action else {
            Issue.record("expected close, got \(action)")
            return
        }
        #expect(r.outcome == .ambiguous && r.stage == .dot && r.reply == nil)
        #expect(r.enhanced == "4.5.0")
        #expect(r.text == "unexpected reply 354 to the final dot: the outcome is ambiguous, "
                + "the message may have been delivered")
        #expect(s.phase == .closed)
    }

    @Test func extensionsParsing() {
        let e = ServiceExtensions(ehlo: Self.reply(250, "mx", "size 0", "AUTH PLAIN LOGIN",
                                                   "  8bitmime", "X-ODD"))
        #expect(e.size && e.sizeLimit == nil)
        #expect(e.eightBitMIME)
        #expect(e.keywords["AUTH"] == "PLAIN LOGIN")
        #expect(e.offers("x-odd"))
        #expect(!e.offers("MX"))
    }

    // MARK: Several messages on one session (RFC 5321 §4.1.1.5) and PIPELINING (RFC 2920)

    /// Sends `message` and answers MAIL, RCPT, DATA, the text, one reply each.
    static func deliverSerially(_ s: inout SMTPClientSession) -> DeliveryResult? {
        _ = s.send(message)
        _ = s.receive(reply(250))
        _ = s.receive(reply(250))
        _ = s.receive(reply(354))
        return result(s.receive(reply(250, "2.0.0 queued")))
    }

    @Test func aSecondMessageFollowsOnTheSameSessionWithoutRSET() {
        var s = Self.openSession()
        #expect(Self.deliverSerially(&s)?.outcome == .delivered)
        #expect(Self.line(s.send(Self.message))?.hasPrefix("MAIL FROM:") == true)
        #expect(Self.line(s.receive(Self.reply(250))) == "RCPT TO:<a@inbox.example>\r\n")
    }

    @Test func aRefusedRCPTIsFollowedByRSETBeforeTheNextMAIL() {
        var s = Self.openSession()
        _ = s.send(Self.message)
        _ = s.receive(Self.reply(250))
        let r = Self.result(s.receive(Self.reply(550, "5.1.1 no such user")))
        #expect(r?.outcome == .failed && r?.stage == .rcpt && s.isReady && s.needsReset)

        #expect(Self.line(s.send(Self.message)) == "RSET\r\n")
        #expect(Self.line(s.receive(Self.reply(250, "2.0.0 flushed")))?.hasPrefix("MAIL FROM:")
                == true)
        #expect(!s.needsReset)
        #expect(Self.line(s.receive(Self.reply(250))) == "RCPT TO:<a@inbox.example>\r\n")
    }

    @Test func aRefusedRSETEndsTheSessionWithoutDecidingTheMessage() {
        var s = Self.openSession()
        _ = s.send(Self.message)
        _ = s.receive(Self.reply(250))
        _ = s.receive(Self.reply(451, "4.3.0 later"))
        _ = s.send(Self.message)
        guard case .close(let r?) = s.receive(Self.reply(500, "what")) else {
            Issue.record("a refused RSET should close")
            return
        }
        #expect(r.outcome == .deferred && r.stage == .mail && s.phase == .closed)
    }

    @Test func pipeliningSendsMAILRCPTAndDATAInOneWrite() {
        var s = Self.openSession(ehlo: Self.ehloFull)
        let size = Self.message.content.count
        let t = SMTPClientTimeouts()
        #expect(s.send(Self.message) == .send(Array(("MAIL FROM:<b.id.sig@bounces.tern.example>"
            + " SIZE=\(size)\r\nRCPT TO:<a@inbox.example>\r\nDATA\r\n").utf8),
            writeTimeout: t.mail, replyTimeout: t.mail))
        #expect(s.receive(Self.reply(250)) == .receive(timeout: t.rcpt))
        #expect(s.receive(Self.reply(250)) == .receive(timeout: t.dataInitiation))
        #expect(Self.line(s.receive(Self.reply(354)))?.hasSuffix("body\r\n.\r\n") == true)
        #expect(Self.result(s.receive(Self.reply(250)))?.outcome == .delivered)
    }

    @Test func pipelinedRCPTRefusalIsWeighedAfterDATAsReply() {
        var s = Self.openSession(ehlo: Self.ehloFull)
        _ = s.send(Self.message)
        _ = s.receive(Self.reply(250))
        _ = s.receive(Self.reply(550, "5.1.1 no such user"))
        let r = Self.result(s.receive(Self.reply(554, "5.5.1 no valid recipients")))
        #expect(r?.outcome == .failed && r?.stage == .rcpt && r?.code == 550)
        #expect(s.isReady && s.needsReset)
        // The next message: RSET goes in the same write, its reply is read first.
        #expect(Self.line(s.send(Self.message))?.hasPrefix("RSET\r\nMAIL FROM:") == true)
        #expect(s.receive(Self.reply(250)) == .receive(timeout: SMTPClientTimeouts().mail))
        #expect(!s.needsReset)
    }

    @Test func pipelinedDATAOpenedWithoutARecipientGetsAnEmptyText() {
        // RFC 2920 §3.1: some servers answer 354 even though every RCPT failed.
        var s = Self.openSession(ehlo: Self.ehloFull)
        _ = s.send(Self.message)
        _ = s.receive(Self.reply(250))
        _ = s.receive(Self.reply(451, "4.2.1 mailbox busy"))
        #expect(Self.line(s.receive(Self.reply(354))) == ".\r\n")
        let r = Self.result(s.receive(Self.reply(554, "5.5.1 no recipients")))
        #expect(r?.outcome == .deferred && r?.stage == .rcpt && r?.code == 451)
        #expect(s.isReady && s.needsReset)
    }

    @Test func pipelined421EndsTheSessionAtOnce() {
        var s = Self.openSession(ehlo: Self.ehloFull)
        _ = s.send(Self.message)
        guard case .close(let r?) = s.receive(Self.reply(421, "4.7.0 closing")) else {
            Issue.record("421 should close")
            return
        }
        #expect(r.outcome == .deferred && r.stage == .mail && s.phase == .closed)
    }

    @Test func aRefusedMAILLeavesTheSessionUsable() {
        var s = Self.openSession()
        _ = s.send(Self.message)
        let r = Self.result(s.receive(Self.reply(550, "5.7.1 sender refused")))
        #expect(r?.outcome == .failed && r?.stage == .mail && s.isReady && !s.needsReset)
        #expect(Self.deliverSerially(&s)?.outcome == .delivered)
    }
}
