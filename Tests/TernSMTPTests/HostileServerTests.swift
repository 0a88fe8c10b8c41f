// The client against servers that break the rules, by malice or by accident: replies too long,
// endless or malformed, servers that stall at each step, replies out of step with the
// commands, a STARTTLS that is refused or never finishes. Each attempt must end within its
// timeout as a clear deferral (ambiguous after the final dot), with bounded memory and text
// that is safe to store and log.

import Foundation
import Testing
import TernCore
import TernMail
@testable import TernSMTP

@Suite struct HostileServerTests {
    typealias C = ClientConnectionTests
    static let greeting = C.greeting
    static let ehlo = C.ehlo
    /// EHLO offered without PIPELINING: one command, one reply.
    static let ehloSerial: [ScriptedServer.Step] = [.read, .say(["250 mx.test"])]

    static func timeouts(_ change: (inout SMTPClientTimeouts) -> Void) -> SMTPClientTimeouts {
        var t = SMTPClientTimeouts()
        change(&t)
        return t
    }

    static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    // MARK: Replies too long or without end

    @Test func aReplyLineFarOverTheLimitDefers() async throws {
        let server = try ScriptedServer([Self.greeting, .read,
            .sayRaw(Self.bytes("250-" + String(repeating: "a", count: 100_000) + "\r\n"))])
        let result = await C.deliver(C.message("x"), to: server)
        _ = try? await server.transcript()
        #expect(result.outcome == .deferred && result.stage == .ehlo && result.code == 0)
        #expect(result.enhanced == "4.5.0")
        #expect(result.text == "protocol error: reply line longer than 4096 octets waiting "
                + "for the reply to EHLO")
    }

    @Test func aReplyLineThatNeverEndsTimesOut() async throws {
        let server = try ScriptedServer([Self.greeting, .read,
            .sayRaw(Self.bytes("250-mx.test\r\n250 " + String(repeating: "b", count: 2000))),
            .waitForClose])
        let result = await C.deliver(C.message("x"), to: server,
                                     timeouts: Self.timeouts { $0.ehlo = .milliseconds(300) })
        _ = try await server.transcript()
        #expect(result.outcome == .deferred && result.stage == .ehlo && result.code == 0)
        #expect(result.enhanced == "4.4.2")
        #expect(result.text == "timed out waiting for the reply to EHLO")
    }

    @Test func anEndlessMultiLineReplyIsCutAtItsLineCount() async throws {
        let server = try ScriptedServer([Self.greeting, .read,
            .sayRaw(Self.bytes(String(repeating: "250-x\r\n", count: 300))), .waitForClose])
        let result = await C.deliver(C.message("x"), to: server)
        _ = try await server.transcript()
        #expect(result.outcome == .deferred && result.stage == .ehlo)
        #expect(result.text == "protocol error: reply of over 200 lines waiting for the "
                + "reply to EHLO")
    }

    /// Lines under both limits, but 100 of 1,000 octets: no reply needs that much, and it
    /// would be stored whole with every attempt.
    @Test func aMultiLineReplyIsCutAtItsSize() async throws {
        let line = "250-" + String(repeating: "c", count: 996) + "\r\n"
        let server = try ScriptedServer([Self.greeting, .read,
            .sayRaw(Self.bytes(String(repeating: line, count: 100) + "250 end\r\n")),
            .waitForClose])
        let result = await C.deliver(C.message("x"), to: server,
                                     timeouts: Self.timeouts { $0.mail = .milliseconds(300) })
        _ = try? await server.transcript()
        #expect(result.outcome == .deferred && result.stage == .ehlo)
        #expect(result.text == "protocol error: reply of over 65536 octets waiting for the "
                + "reply to EHLO")
    }

    // MARK: Malformed replies

    static let malformed: [(String, String)] = [
        ("2500 ok", "reply code not followed by space or -: 2500 ok"),
        ("abc", "reply line without a three-digit code: abc"),
        ("25", "reply line without a three-digit code: 25"),
        ("250-mx.test\r\n251 PIPELINING", "multi-line reply changed code from 250 to 251"),
        ("199 informational", "reply code 199 outside 200-599"),
        ("600 six hundred", "reply code 600 outside 200-599"),
        ("\0\u{1b}[2J", "reply line without a three-digit code: \\x00\\x1b[2J"),
    ]

    @Test(arguments: malformed)
    func aMalformedReplyToEHLOIsAProtocolError(_ reply: String, _ why: String) async throws {
        let server = try ScriptedServer([Self.greeting, .read, .say([reply]), .waitForClose])
        let result = await C.deliver(C.message("x"), to: server)
        _ = try await server.transcript()
        #expect(result.outcome == .deferred && result.stage == .ehlo && result.code == 0)
        #expect(result.enhanced == "4.5.0")
        #expect(result.text == "protocol error: \(why) waiting for the reply to EHLO")
    }

    /// Garbled before a session exists, the greeting counts as no answer; garbled after the
    /// final dot, the answer leaves the outcome unknown.
    @Test func aMalformedGreetingMovesOnAndAMalformedAnswerToTheDotIsAmbiguous() async throws {
        let greeting = try ScriptedServer([.say(["2200 mx.test ready"]), .waitForClose])
        let moved = await C.deliver(C.message("x"), to: greeting)
        _ = try await greeting.transcript()
        #expect(moved.outcome == .deferred && moved.stage == .greeting)
        #expect(moved.fallback == .nextAddress && moved.enhanced == "4.4.1")
        #expect(moved.text == "protocol error: reply code not followed by space or -: "
                + "2200 mx.test ready before the greeting")

        let dot = try ScriptedServer([Self.greeting] + Self.ehlo + [
            .read, .read, .read, .say(["250 ok", "250 ok", "354 go"]), .readData,
            .say(["2.0.0 queued"]), .waitForClose,
        ])
        let unknown = await C.deliver(C.message("x\r\n"), to: dot)
        _ = try await dot.transcript()
        #expect(unknown.outcome == .ambiguous && unknown.stage == .dot && unknown.reply == nil)
        #expect(unknown.text.hasPrefix("protocol error: reply line without a three-digit code: "
                                       + "2.0.0 queued after the final dot"))
    }

    @Test func bareLineFeedsEndRepliesToo() async throws {
        let server = try ScriptedServer([
            .sayRaw(Self.bytes("220 mx.test\n")), .read,
            .sayRaw(Self.bytes("250-mx.test\n250 8BITMIME\n")),
            .read, .sayRaw(Self.bytes("250 ok\n")), .read, .sayRaw(Self.bytes("250 ok\n")),
            .read, .sayRaw(Self.bytes("354 go\n")), .readData,
            .sayRaw(Self.bytes("250 2.0.0 queued\n")), .read, .sayRaw(Self.bytes("221 bye\n")),
        ])
        let result = await C.deliver(C.message("x\r\n"), to: server)
        let t = try await server.transcript()
        #expect(result.outcome == .delivered && result.code == 250 && result.text == "2.0.0 queued")
        #expect(t.lines.last == "QUIT")
    }

    /// NUL, escape sequences and a C1 control are escaped; bytes that are not UTF-8 become
    /// U+FFFD. A tab is text (RFC 5321 §4.2 textstring) and stays.
    @Test func controlsAndEightBitGarbageInReplyTextArePrintable() async throws {
        let server = try ScriptedServer([Self.greeting] + Self.ehloSerial + [
            .read, .say(["250 ok"]), .read,
            .sayRaw(Self.bytes("550-5.1.1 no\0such\tuser\u{1b}[2J\r\n550 5.1.1 caf")
                    + [0xE9, 0x20, 0xC2, 0x9B, 0x0D, 0x0D, 0x0A]),
            .read, .say(["221 bye"]),
        ])
        let result = await C.deliver(C.message("x"), to: server)
        _ = try await server.transcript()
        #expect(result.outcome == .failed && result.stage == .rcpt && result.code == 550)
        #expect(result.text == "5.1.1 no\\x00such\tuser\\x1b[2J\n5.1.1 caf\u{FFFD} \\x9b\\x0d")
    }

    // MARK: Servers that stall

    @Test func aServerThatStallsAfterEHLO() async throws {
        let server = try ScriptedServer([Self.greeting, .read, .waitForClose])
        let result = await C.deliver(C.message("x"), to: server,
                                     timeouts: Self.timeouts { $0.ehlo = .milliseconds(300) })
        let t = try await server.transcript()
        #expect(result.outcome == .deferred && result.stage == .ehlo && result.enhanced == "4.4.2")
        #expect(result.text == "timed out waiting for the reply to EHLO")
        #expect(t.lines == ["EHLO out1.tern.example"])
    }

    /// Too few replies to a pipelined batch: DATA's never comes.
    @Test func aServerThatNeverAnswersDATA() async throws {
        let server = try ScriptedServer([Self.greeting] + Self.ehlo + [
            .read, .read, .read, .say(["250 2.1.0 ok", "250 2.1.5 ok"]), .waitForClose,
        ])
        let result = await C.deliver(
            C.message("x"), to: server,
            timeouts: Self.timeouts { $0.dataInitiation = .milliseconds(300) })
        _ = try await server.transcript()
        #expect(result.outcome == .deferred && result.stage == .data && result.enhanced == "4.4.2")
        #expect(result.text == "timed out waiting for the reply to DATA")
    }

    @Test func aServerThatStallsInTheMiddleOfItsReplyToTheDot() async throws {
        let server = try ScriptedServer([Self.greeting] + Self.ehlo + [
            .read, .read, .read, .say(["250 ok", "250 ok", "354 go"]), .readData,
            .sayRaw(Self.bytes("250-2.0.0 queued\r\n250 2.0")), .waitForClose,
        ])
        let result = await C.deliver(
            C.message("x\r\n"), to: server,
            timeouts: Self.timeouts { $0.dataTermination = .milliseconds(300) })
        _ = try await server.transcript()
        #expect(result.outcome == .ambiguous && result.stage == .dot && result.reply == nil)
        #expect(result.text.hasPrefix("timed out after the final dot with no reply"))
    }

    /// A server that never greets holds only its own session: another delivery runs to the
    /// end meanwhile, and the stalled one is still waiting when it does.
    @Test func aStalledServerHoldsUpNoOtherSession() async throws {
        let silent = try TCPListener(address: SocketAddress("127.0.0.1:0")!)
        defer { silent.close() }
        let stalled = Task {
            await SMTPClient.deliver(C.message("x"), to: silent.address, mxHost: "silent.test",
                                     from: nil, helo: "out1.tern.example",
                                     timeouts: Self.timeouts { $0.greeting = .seconds(60) })
        }
        let held = try await silent.accept()
        let server = try ScriptedServer([Self.greeting] + Self.ehlo + [
            .read, .read, .read, .say(["250 ok", "250 ok", "354 go"]), .readData,
            .say(["250 2.0.0 queued"]), .read, .say(["221 bye"]),
        ])
        let result = await C.deliver(C.message("x\r\n"), to: server)
        _ = try await server.transcript()
        #expect(result.outcome == .delivered)
        held.close()
        let waited = await stalled.value
        #expect(waited.outcome == .deferred && waited.stage == .greeting)
        #expect(waited.text == "connection closed by the server before the greeting")
    }

    // MARK: Replies out of step

    /// A reply that came with the 354 (RFC 2920 §3.1: one reply per command) answers nothing
    /// the client asked; read after the text it would pass for the acceptance of a message
    /// the server may refuse.
    @Test func aReplyBeyondThePipelinedBatchIsNotTakenForTheAcceptance() async throws {
        let server = try ScriptedServer([Self.greeting] + Self.ehlo + [
            .read, .read, .read,
            .say(["250 2.1.0 ok", "250 2.1.5 ok", "354 go", "250 2.0.0 queued as FAKE"]),
        ])
        let result = await C.deliver(C.message("Subject: t\r\n\r\nhi\r\n"), to: server,
                                     timeouts: Self.timeouts { $0.quit = .milliseconds(300) })
        let t = try await server.transcript()
        #expect(result.outcome == .deferred && result.stage == .data && result.reply == nil)
        #expect(result.enhanced == "4.5.0")
        #expect(result.text == "protocol error: the server replied before it was asked "
                + "while sending the message text")
        #expect(t.lines == ["EHLO out1.tern.example", "MAIL FROM:<b.x.y@bounces.tern.example> "
                            + "SIZE=18", "RCPT TO:<a@inbox.example>", "DATA"])
    }

    /// A second reply to the final dot is left over when the next message starts: the
    /// session is out of step and ends before MAIL, which a pooled session takes as a stale
    /// one and retries on a new connection.
    @Test func aReplyLeftOverFromTheLastMessageEndsTheSession() async throws {
        let server = try ScriptedServer([Self.greeting] + Self.ehlo + [
            .read, .read, .read, .say(["250 ok", "250 ok", "354 go"]), .readData,
            .say(["250 2.0.0 queued", "250 2.0.0 queued again"]),
        ])
        try await Self.secondMessageFindsTheSpareReply(server) {}
    }

    /// A reply that comes while the session idles, after the last answer was read (a server
    /// closing an idle session, a late second answer to the dot), is looked for before the
    /// next MAIL: it ends the session, as a stale one, instead of passing for MAIL's answer.
    @Test func aReplySentWhileTheSessionIdlesIsFoundBeforeTheNextMAIL() async throws {
        let (asked, ask) = AsyncStream.makeStream(of: Void.self)
        let (said, say) = AsyncStream.makeStream(of: Void.self)
        let server = try ScriptedServer([Self.greeting] + Self.ehlo + [
            .read, .read, .read, .say(["250 ok", "250 ok", "354 go"]), .readData,
            .say(["250 2.0.0 queued"]),
            .run { _ in for await _ in asked { break } },
            .say(["250 2.0.0 queued again"]),
            .run { conn in
                // Until the client's kernel has it all (acknowledged), then tell the test.
                var unacknowledged: Int32 = 1
                for _ in 0..<1000 where unacknowledged > 0 {
                    if ioctl(conn.fd, UInt(TIOCOUTQ), &unacknowledged) != 0 { break }
                    if unacknowledged > 0 { try? await Task.sleep(for: .milliseconds(5)) }
                }
                say.yield()
            },
        ])
        try await Self.secondMessageFindsTheSpareReply(server) {
            ask.yield()
            for await _ in said { break }
        }
    }

    /// Two messages on one session to `server`, which answers the first dot twice (`between`
    /// runs after the first): the first is delivered, the second ends the session out of
    /// step before its MAIL is answered, and only one MAIL reaches the server.
    static func secondMessageFindsTheSpareReply(
        _ server: ScriptedServer, between: () async -> Void
    ) async throws {
        guard case .ready(let connection, _) = await SMTPClient.open(
            to: server.address, mxHost: "mx.test", from: nil, helo: "out1.tern.example",
            timeouts: Self.timeouts { $0.rcpt = .milliseconds(300) })
        else {
            Issue.record("the session did not open")
            return
        }
        let first = await connection.send(C.message("x\r\n"))
        await between()
        let second = await connection.send(C.message("y\r\n"))
        connection.close()
        let t = try await server.transcript()
        #expect(first.outcome == .delivered && first.text == "2.0.0 queued")
        #expect(second.outcome == .deferred && second.stage == .mail && second.reply == nil)
        #expect(second.text == "protocol error: the server replied before it was asked "
                + "waiting for the reply to MAIL")
        #expect(t.lines.filter { $0.hasPrefix("MAIL") }.count == 1)
    }

    // MARK: STARTTLS refused or stalled (RFC 3207)

    static let offersTLS: [ScriptedServer.Step] = [
        .read, .say(["250-mx.test", "250 STARTTLS"]), .read,
    ]

    static func tls(_ policy: TLSPolicy) throws -> SMTPClientTLS {
        SMTPClientTLS(context: try TLSContext.client(caFile: nil),
                      policies: TLSPolicies(default: policy),
                      fallbacks: TLSFallbackCache(ttl: .seconds(3600)))
    }

    static func deliver(to server: ScriptedServer, tls: SMTPClientTLS,
                        timeouts: SMTPClientTimeouts = SMTPClientTimeouts())
        async -> DeliveryResult
    {
        await SMTPClient.deliver(C.message("x\r\n"), to: server.address, mxHost: "mx.test",
                                 from: nil, helo: "out1.tern.example", timeouts: timeouts,
                                 tls: tls, domain: "inbox.example")
    }

    /// RFC 3207 §4: after 454 the session goes on as it was, in clear text, on the same
    /// connection, without a second EHLO.
    @Test func a454ToSTARTTLSGoesOnInClearTextUnlessRequired() async throws {
        let clear = try ScriptedServer([Self.greeting] + Self.offersTLS + [
            .say(["454 4.7.0 TLS not available due to temporary reason"]),
            .read, .say(["250 ok"]), .read, .say(["250 ok"]), .read, .say(["354 go"]),
            .readData, .say(["250 2.0.0 queued"]), .read, .say(["221 bye"]),
        ])
        let sent = await Self.deliver(to: clear, tls: try Self.tls(.opportunistic))
        let t = try await clear.transcript()
        #expect(sent.outcome == .delivered && sent.tls == nil && sent.text == "2.0.0 queued")
        #expect(t.lines == ["EHLO out1.tern.example", "STARTTLS",
                            "MAIL FROM:<b.x.y@bounces.tern.example>",
                            "RCPT TO:<a@inbox.example>", "DATA", "QUIT"])

        let strict = try ScriptedServer([Self.greeting] + Self.offersTLS + [
            .say(["454 4.7.0 TLS not available due to temporary reason"]),
            .read, .say(["221 bye"]),
        ])
        let held = await Self.deliver(to: strict, tls: try Self.tls(.required))
        #expect(held.outcome == .deferred && held.stage == .tls && held.code == 0)
        #expect(held.enhanced == "4.7.10")
        #expect(held.text == "TLS is required for this destination and mx.test refused "
                + "STARTTLS: 454 4.7.0 TLS not available due to temporary reason")
        #expect(try await strict.transcript().lines
                == ["EHLO out1.tern.example", "STARTTLS", "QUIT"])
    }

    /// The server says 220 to STARTTLS and then never answers the ClientHello.
    @Test func aStalledHandshakeFallsBackOrDefersByPolicy() async throws {
        let stall: [ScriptedServer.Step] = [Self.greeting] + Self.offersTLS
            + [.say(["220 2.0.0 go ahead"]), .waitForClose]
        let short = Self.timeouts { $0.ehlo = .milliseconds(500) }
        let peer = try ScriptedServer(connections: [stall, [Self.greeting] + Self.ehloSerial + [
            .read, .say(["250 ok"]), .read, .say(["250 ok"]), .read, .say(["354 go"]),
            .readData, .say(["250 2.0.0 queued"]), .read, .say(["221 bye"]),
        ]])
        let sent = await Self.deliver(to: peer, tls: try Self.tls(.opportunistic),
                                      timeouts: short)
        let t = try await peer.transcripts()
        #expect(sent.outcome == .delivered && sent.tls == nil)
        #expect(sent.text == "2.0.0 queued\nsent without TLS: STARTTLS with mx.test failed: "
                + "timed out", "\(sent)")
        #expect(t[1].lines.first == "EHLO out1.tern.example" && t[1].lines.last == "QUIT")

        let strict = try ScriptedServer([Self.greeting] + Self.offersTLS
                                        + [.say(["220 2.0.0 go ahead"]), .waitForClose])
        let held = await Self.deliver(to: strict, tls: try Self.tls(.required), timeouts: short)
        _ = try await strict.transcript()
        #expect(held.outcome == .deferred && held.stage == .tls && held.enhanced == "4.7.5")
        #expect(held.fallback == DeliveryFallback.none)
        #expect(held.text == "STARTTLS with mx.test failed: timed out", "\(held)")
    }

    // MARK: EHLO

    /// RFC 1870 §4: the SIZE parameter is digits only. Anything else names no limit: SIZE is
    /// still declared, and no message fails locally on a number read out of garbage.
    @Test(arguments: ["SIZE +5", "SIZE 12abc", "SIZE 99999999999999999999999", "SIZE -1"])
    func aGarbageSIZEIsNoLimit(_ line: String) async throws {
        let server = try ScriptedServer([Self.greeting, .read, .say(["250-mx.test", "250 " + line]),
            .read, .say(["250 ok"]), .read, .say(["250 ok"]), .read, .say(["354 go"]),
            .readData, .say(["250 2.0.0 queued"]), .read, .say(["221 bye"]),
        ])
        let result = await C.deliver(C.message("Subject: t\r\n\r\nhi\r\n"), to: server)
        let t = try await server.transcript()
        #expect(result.outcome == .delivered, "\(result)")
        #expect(t.lines.dropFirst().first == "MAIL FROM:<b.x.y@bounces.tern.example> SIZE=18")
    }
}
