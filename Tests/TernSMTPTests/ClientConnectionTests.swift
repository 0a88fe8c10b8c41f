// The SMTP client over real loopback sockets against a scripted server: what goes on the
// wire (dot-stuffing, QUIT or not), multi-line replies, and connections that break.

import Foundation
import Testing
import TernCore
import TernMail
@testable import TernSMTP

/// An SMTP server that follows one script per connection, in order, and records what it read.
final class ScriptedServer: Sendable {
    enum Step: Sendable {
        /// Sends these lines, each followed by CRLF.
        case say([String])
        /// Sends these bytes as they are: no line ends added.
        case sayRaw([UInt8])
        /// Reads one line into the transcript.
        case read
        /// Reads message text up to the lone "." line; the raw bytes go to `data`.
        case readData
        /// Reads whatever comes for a moment and throws it away.
        case ignoreInput
        /// Says nothing and drops whatever comes until the client closes: a stalled server.
        case waitForClose
        /// Closes the connection.
        case hangUp
        /// Runs this with the connection (to wait for the test, or to tell it something).
        case run(@Sendable (TCPConnection) async -> Void)
    }

    struct Transcript: Sendable {
        var lines: [String] = []
        var data: [UInt8] = []
    }

    let listener: TCPListener
    let task: Task<[Transcript], any Error>

    convenience init(_ script: [Step]) throws {
        try self.init(connections: [script])
    }

    init(connections scripts: [[Step]]) throws {
        let listener = try TCPListener(address: SocketAddress("127.0.0.1:0")!)
        self.listener = listener
        task = Task {
            var transcripts: [Transcript] = []
            for script in scripts {
                let conn = try await listener.accept()
                defer { conn.close() }
                transcripts.append(try await Self.serve(conn, script))
            }
            return transcripts
        }
    }

    static func serve(_ conn: TCPConnection, _ script: [Step]) async throws -> Transcript {
        let reader = LineReader(conn)
        var t = Transcript()
        let deadline = ContinuousClock.now + .seconds(20)
        for step in script {
            switch step {
            case .say(let lines):
                try await conn.write(Array(lines.map { $0 + "\r\n" }.joined().utf8),
                                     deadline: deadline)
            case .sayRaw(let bytes):
                try await conn.write(bytes, deadline: deadline)
            case .read:
                guard let line = try await reader.readLine(limit: 4096, deadline: deadline)
                else { return t }
                t.lines.append(String(decoding: line, as: UTF8.self))
            case .readData:
                while let line = try await reader.readLine(limit: 4096, deadline: deadline),
                      line != [UInt8(ascii: ".")] {
                    t.data += line + [0x0D, 0x0A]
                }
            case .ignoreInput:
                _ = try? await conn.read(max: 65536, deadline: .now + .milliseconds(50))
            case .waitForClose:
                while let more = try? await conn.read(max: 65536, deadline: deadline),
                      !more.isEmpty {}
                return t
            case .hangUp:
                return t
            case .run(let body):
                await body(conn)
            }
        }
        // Whatever else the client sends (a QUIT it should not send) is recorded too.
        while let line = try? await reader.readLine(limit: 4096, deadline: deadline) {
            t.lines.append(String(decoding: line, as: UTF8.self))
        }
        return t
    }

    var address: SocketAddress { listener.address }

    func transcript() async throws -> Transcript {
        try await transcripts()[0]
    }

    func transcripts() async throws -> [Transcript] {
        defer { listener.close() }
        return try await task.value
    }
}

@Suite struct ClientConnectionTests {
    static let greeting = ScriptedServer.Step.say(["220 mx.test ESMTP ready"])
    static let ehlo: [ScriptedServer.Step] = [
        .read, .say(["250-mx.test greets out1", "250-SIZE 10000000", "250-8BITMIME",
                     "250-PIPELINING", "250 ENHANCEDSTATUSCODES"]),
    ]

    static func deliver(_ message: OutboundMessage, to server: ScriptedServer,
                        timeouts: SMTPClientTimeouts = SMTPClientTimeouts())
        async -> DeliveryResult
    {
        await SMTPClient.deliver(message, to: server.address, mxHost: "mx.test", from: nil,
                                 helo: "out1.tern.example", timeouts: timeouts)
    }

    static func message(_ body: String) -> OutboundMessage {
        OutboundMessage(returnPath: "b.x.y@bounces.tern.example", recipient: "a@inbox.example",
                        content: Array(body.utf8))
    }

    @Test func deliversAndDotStuffsOnTheWire() async throws {
        let server = try ScriptedServer([Self.greeting] + Self.ehlo + [
            .read, .say(["250 2.1.0 Ok"]), .read, .say(["250 2.1.5 Ok"]),
            .read, .say(["354 End data with <CR><LF>.<CR><LF>"]), .readData,
            .say(["250 2.0.0 Ok: queued as 42"]), .read, .say(["221 2.0.0 Bye"]),
        ])
        // A bare LF, a leading dot, a line that is only a dot, no final line break.
        let body = "Subject: t\r\n\r\n.hidden\nline\r\n.\r\nlast"
        let result = await Self.deliver(Self.message(body), to: server)
        let t = try await server.transcript()
        #expect(result.outcome == .delivered)
        #expect(result.code == 250 && result.enhanced == "2.0.0")
        #expect(result.stage == .dot && result.address == "127.0.0.1" && result.mxHost == "mx.test")
        #expect(t.lines == [
            "EHLO out1.tern.example",
            "MAIL FROM:<b.x.y@bounces.tern.example> SIZE=\(body.utf8.count)",
            "RCPT TO:<a@inbox.example>", "DATA", "QUIT",
        ])
        #expect(String(decoding: t.data, as: UTF8.self)
                == "Subject: t\r\n\r\n..hidden\r\nline\r\n..\r\nlast\r\n")
    }

    @Test func multiLineRejectionAtRCPTKeepsEveryLineAndQuits() async throws {
        let server = try ScriptedServer([Self.greeting] + Self.ehlo + [
            .read, .say(["250 2.1.0 Ok"]), .read,
            .say(["550-5.1.1 The account does not exist.",
                  "550 5.1.1 <a@inbox.example>: user unknown"]),
            .read, .say(["221 Bye"]),
        ])
        let result = await Self.deliver(Self.message("x"), to: server)
        let t = try await server.transcript()
        #expect(result.outcome == .failed && result.stage == .rcpt && result.code == 550)
        #expect(result.enhanced == "5.1.1")
        #expect(result.text == "5.1.1 The account does not exist.\n"
                + "5.1.1 <a@inbox.example>: user unknown")
        #expect(t.lines.last == "QUIT")
    }

    @Test func heloFallbackOnTheWire() async throws {
        let server = try ScriptedServer([Self.greeting, .read,
            .say(["500 5.5.1 Command unrecognized"]), .read, .say(["250 mx.test"]),
            .read, .say(["250 Ok"]), .read, .say(["250 Ok"]), .read, .say(["354 go"]),
            .readData, .say(["250 Ok"]), .read, .say(["221 Bye"]),
        ])
        let result = await Self.deliver(Self.message("hello\r\n"), to: server)
        let t = try await server.transcript()
        #expect(result.outcome == .delivered)
        #expect(t.lines == ["EHLO out1.tern.example", "HELO out1.tern.example",
                            "MAIL FROM:<b.x.y@bounces.tern.example>",
                            "RCPT TO:<a@inbox.example>", "DATA", "QUIT"])
        #expect(t.data == Array("hello\r\n".utf8))
    }

    @Test func serviceClosingAtMAILEndsWithoutQUIT() async throws {
        let server = try ScriptedServer([Self.greeting] + Self.ehlo + [
            .read, .say(["421 4.7.0 Too many connections, closing"]),
        ])
        let result = await Self.deliver(Self.message("x"), to: server)
        let t = try await server.transcript()
        #expect(result.outcome == .deferred && result.stage == .mail && result.code == 421)
        // PIPELINING: RCPT and DATA were in the same write as MAIL (RFC 2920 §3.1).
        #expect(t.lines == ["EHLO out1.tern.example", "MAIL FROM:<b.x.y@bounces.tern.example> "
                            + "SIZE=1", "RCPT TO:<a@inbox.example>", "DATA"])
    }

    @Test func transientReplyToTheDotDefers() async throws {
        let server = try ScriptedServer([Self.greeting] + Self.ehlo + [
            .read, .say(["250 Ok"]), .read, .say(["250 Ok"]), .read, .say(["354 go"]),
            .readData, .say(["452 4.3.1 Insufficient system storage"]), .read,
            .say(["221 Bye"]),
        ])
        let result = await Self.deliver(Self.message("x\r\n"), to: server)
        _ = try await server.transcript()
        #expect(result.outcome == .deferred && result.stage == .dot && result.code == 452)
    }

    @Test func connectionDroppedInTheMiddleOfTheText() async throws {
        let server = try ScriptedServer([Self.greeting] + Self.ehlo + [
            .read, .say(["250 Ok"]), .read, .say(["250 Ok"]), .read, .say(["354 go"]),
            .ignoreInput, .hangUp,
        ])
        // Far more than the socket buffers hold, so writing is still going on at the drop.
        let line = String(repeating: "a", count: 998) + "\r\n"
        let body = "Subject: big\r\n\r\n" + String(repeating: line, count: 8_000)
        let result = await Self.deliver(Self.message(body), to: server)
        _ = try await server.transcript()
        #expect(result.outcome == .deferred)
        #expect(result.stage == .data)
        #expect(result.code == 0 && result.enhanced == "4.4.2")
    }

    @Test func aServerThatReadsTheTextAtATrickleIsGivenUpOnAsAWhole() async throws {
        // It takes 16 KiB every 100 ms for five seconds: each chunk goes within its own
        // timeout, the whole text would take minutes. (Without the cap the client would see
        // the server hang up instead, not a timeout.)
        let trickle = ScriptedServer.Step.run { conn in
            let until = ContinuousClock.now + .seconds(5)
            while ContinuousClock.now < until {
                guard let more = try? await conn.read(max: 16384, deadline: until),
                      !more.isEmpty else { return }
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        // No SIZE limit, and far more text than the socket buffers on both sides hold.
        let server = try ScriptedServer([Self.greeting, .read, .say(["250 mx.test"]),
            .read, .say(["250 Ok"]), .read, .say(["250 Ok"]), .read, .say(["354 go"]),
            trickle, .hangUp,
        ])
        let line = String(repeating: "a", count: 998) + "\r\n"
        let body = "Subject: big\r\n\r\n" + String(repeating: line, count: 40_000)
        var timeouts = SMTPClientTimeouts()
        timeouts.dataBlock = .seconds(10)
        timeouts.text = .seconds(1)
        let result = await Self.deliver(Self.message(body), to: server, timeouts: timeouts)
        _ = try await server.transcript()
        #expect(result.outcome == .deferred && result.stage == .data, "\(result)")
        #expect(result.text.contains("timed out"), "\(result.text)")
    }

    @Test func connectionDroppedAfterTheDotIsAmbiguous() async throws {
        let server = try ScriptedServer([Self.greeting] + Self.ehlo + [
            .read, .say(["250 Ok"]), .read, .say(["250 Ok"]), .read, .say(["354 go"]),
            .readData, .hangUp,
        ])
        let result = await Self.deliver(Self.message("x\r\n"), to: server)
        _ = try await server.transcript()
        #expect(result.outcome == .ambiguous && result.stage == .dot)
        #expect(result.reply == nil)
        #expect(result.text.contains("may have been delivered"))
    }

    @Test func silentServerTimesOutBeforeTheGreeting() async throws {
        let server = try ScriptedServer([.ignoreInput, .ignoreInput, .ignoreInput, .hangUp])
        var timeouts = SMTPClientTimeouts()
        timeouts.greeting = .milliseconds(20)
        let result = await Self.deliver(Self.message("x"), to: server, timeouts: timeouts)
        _ = try await server.transcript()
        #expect(result.outcome == .deferred && result.stage == .greeting)
        #expect(result.fallback == .nextAddress)
        #expect(result.text.contains("timed out"))
    }

    @Test func garbageInsteadOfAReply() async throws {
        let server = try ScriptedServer([Self.greeting, .read, .say(["HTTP/1.1 400 Bad"])])
        let result = await Self.deliver(Self.message("x"), to: server)
        _ = try await server.transcript()
        #expect(result.outcome == .deferred && result.stage == .ehlo)
        #expect(result.enhanced == "4.5.0")
    }

    @Test func refusedConnectionMovesOn() async throws {
        // Bind a port, then close it: nothing listens there now.
        let listener = try TCPListener(address: SocketAddress("127.0.0.1:0")!)
        let address = listener.address
        listener.close()
        let result = await SMTPClient.deliver(Self.message("x"), to: address, mxHost: "mx.test",
                                              from: nil, helo: "h")
        #expect(result.outcome == .deferred && result.stage == .connect)
        #expect(result.fallback == .nextAddress)
        #expect(result.text.contains("refused"))
    }

    @Test func connectsFromTheChosenSourceAddress() async throws {
        let listener = try TCPListener(address: SocketAddress("127.0.0.1:0")!)
        defer { listener.close() }
        let accepted = Task { () -> String? in
            let c = try await listener.accept()
            defer { c.close() }
            return c.remote?.host
        }
        let conn = try await SMTPClientConnection.connect(
            to: listener.address, from: SocketAddress(host: "127.0.0.2", port: 0),
            helo: "h", mxHost: "m")
        conn.close()
        #expect(try await accepted.value == "127.0.0.2")
    }
}
