// STARTTLS in the server state machine (RFC 3207): when it is offered, the codes for each
// misuse, and the fresh start after the handshake.

import Testing
import TernCore
import TernMail
@testable import TernSMTP

@Suite struct ServerStartTLSTests {
    static func tlsDialogue() -> Dialogue {
        Dialogue(Dialogue.config { $0.startTLS = true })
    }

    @Test func ehloOffersSTARTTLSOnlyWithACertificateAndOnlyBeforeTLS() {
        var plain = Dialogue()
        #expect(plain.send("EHLO client.example") == 250)
        #expect(plain.lastReply?.lines.contains("STARTTLS") == false)

        var d = Self.tlsDialogue()
        #expect(d.send("EHLO client.example") == 250)
        #expect(d.lastReply?.lines.last == "STARTTLS")
        #expect(d.send("STARTTLS") == 220)
        #expect(d.tlsRequested && d.lastReply?.enhanced?.description == "2.0.0")
        #expect(d.session.phase == .startingTLS)
        #expect(d.follow(d.session.tlsStarted("TLSv1.3 TLS_AES_256_GCM_SHA384")) == nil)
        #expect(d.session.envelope.tls == "TLSv1.3 TLS_AES_256_GCM_SHA384")
        #expect(d.send("EHLO client.example") == 250)
        #expect(d.lastReply?.lines.contains("STARTTLS") == false)
        #expect(d.send("STARTTLS") == 503)
        #expect(d.lastReply?.text == "5.5.1 TLS already active")
    }

    @Test func theSessionStartsAfreshAfterTheHandshake() {
        var d = Self.tlsDialogue()
        d.run([("EHLO client.example", 250), ("STARTTLS", 220)])
        _ = d.follow(d.session.tlsStarted("TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256"))
        // RFC 3207 §4.2: what the client said before TLS counts for nothing.
        #expect(d.session.envelope.helo == "" && d.session.phase == .greeted)
        d.run([("MAIL FROM:<a@b.example>", 503), ("EHLO client.example", 250),
               ("MAIL FROM:<a@b.example>", 250)])
        // The TLS note survives the transaction reset that MAIL and RSET make.
        d.run([("RSET", 250)])
        #expect(d.session.envelope.tls == "TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256")
    }

    @Test func misusesGetTheirCodes() {
        var d = Self.tlsDialogue()
        d.run([
            ("STARTTLS", 503),                      // before EHLO
            ("EHLO client.example", 250),
            ("STARTTLS now", 501),                  // RFC 3207 §4: no parameters
            ("MAIL FROM:<a@b.example>", 250),
            ("STARTTLS", 503),                      // inside a transaction
            ("RSET", 250),
        ])
        #expect(!d.tlsRequested)
        var plain = Dialogue()
        plain.run([("EHLO client.example", 250), ("STARTTLS", 502)])
    }

    @Test func tlsThatCannotStartIs454AndTheSessionGoesOnInClear() {
        var d = Self.tlsDialogue()
        d.run([("EHLO client.example", 250), ("STARTTLS", 220)])
        #expect(d.follow(d.session.tlsUnavailable()) == 454)
        #expect(d.lastReply?.enhanced?.description == "4.7.0")
        d.run([("MAIL FROM:<a@b.example>", 250)])
        #expect(d.session.envelope.tls == "")
    }

    @Test func aLineWhileTheHandshakeIsPendingIsAnInternalError() {
        var d = Self.tlsDialogue()
        d.run([("EHLO client.example", 250), ("STARTTLS", 220)])
        #expect(d.send("NOOP") == 421)
        #expect(d.closed)
    }
}
