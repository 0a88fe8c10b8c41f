// The SMTP server over real sockets on 127.0.0.1: pipelining, the limits that end a session
// (early talker, line too long, session count, idle timeout) and a bounded shutdown.

import Synchronization
import Testing
import TernCore
import TernMail
@testable import TernSMTP

/// A bare SMTP client: writes what it is told, reads whole replies.
final class LineClient: @unchecked Sendable {
    let connection: TCPConnection
    let reader: LineReader
    /// The connection, or the TLS session over it after `startTLS`.
    private(set) var stream: any ByteStream

    init(_ address: SocketAddress) async throws {
        connection = try await TCPConnection.connect(to: address, deadline: .now + .seconds(10))
        reader = LineReader(connection)
        stream = connection
    }

    deinit { connection.close() }

    func send(_ text: String) async throws {
        try await stream.write(Array(text.utf8), deadline: .now + .seconds(10))
    }

    /// The client's handshake, after the server's 220 to STARTTLS.
    func startTLS(_ context: TLSContext, host: String) async throws -> TLSSessionInfo {
        reader.discardBuffered()
        let tls = try await TLSStream.connect(over: connection, context: context, host: host,
                                              deadline: .now + .seconds(10))
        stream = tls
        reader.stream = tls
        return tls.info
    }

    /// The next reply, nil once the server has closed the connection (and then this side
    /// closes too, as a real client does).
    func reply() async throws -> SMTPReply? {
        var parser = SMTPReplyParser()
        while true {
            let line: [UInt8]?
            do {
                line = try await reader.readLine(limit: 4096, deadline: .now + .seconds(10))
            } catch LineError.endOfStream {
                line = nil
            }
            guard let line else {
                connection.close()
                return nil
            }
            if let reply = try parser.feed(line) { return reply }
        }
    }

    func code() async throws -> Int? { try await reply()?.code }

    /// QUIT, its 221, and the server's end of the connection.
    func quit() async throws {
        try await send("QUIT\r\n")
        #expect(try await code() == 221)
        #expect(try await reply() == nil)
    }
}

/// A server on a free loopback port that keeps every message it is given.
final class ServerHarness: Sendable {
    let server: SMTPServer
    let shutdown: Shutdown
    let task: Task<Void, Never>
    let messages = Mutex<[(SMTPEnvelope, [UInt8])]>([])

    init(tls: ReloadableTLSContext? = nil,
         _ change: (inout SMTPServerConfig) -> Void = { _ in }) throws {
        var config = SMTPServerConfig(hostname: "mx.test.example", maxMessageSize: 1000)
        change(&config)
        let listener = try TCPListener(address: SocketAddress("127.0.0.1:0")!)
        let box = Box()
        let server = SMTPServer(
            listener: listener, config: config,
            logger: Logger(label: "smtp-test", sink: MemoryLogSink()), tls: tls,
            policy: { rcpt, _ in
                rcpt.hasPrefix("refuse") ? .refuse(SMTPReply(550, "5.7.1", "no")) : .accept
            },
            handler: { envelope, message in
                box.harness?.messages.withLock { $0.append((envelope, message)) }
                return SMTPReply(250, "2.0.0", "queued")
            })
        let shutdown = Shutdown()
        self.server = server
        self.shutdown = shutdown
        task = Task { await server.run(shutdown: shutdown) }
        box.set(self)
    }

    var address: SocketAddress { server.address }

    /// Waits until the server holds `count` sessions (a closed one is removed a moment
    /// after the client sees the close).
    func waitForSessions(_ count: Int) async throws {
        for _ in 0..<200 where server.sessionCount != count {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(server.sessionCount == count)
    }

    func client() async throws -> LineClient { try await LineClient(address) }

    func stop() async {
        shutdown.request()
        await task.value
    }

    /// Lets the handler reach the harness it belongs to without a cycle at init.
    final class Box: Sendable {
        private let value = Mutex<ServerHarness?>(nil)
        var harness: ServerHarness? { value.withLock { $0 } }
        func set(_ h: ServerHarness) { value.withLock { $0 = h } }
    }
}

@Suite struct ServerSocketTests {
    @Test func pipelinedTransaction() async throws {
        let h = try ServerHarness()
        let c = try await h.client()
        let greeting = try await c.reply()
        #expect(greeting?.code == 220)
        // RFC 2920: a whole group in one write; replies come back in order.
        try await c.send("EHLO c.example\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.example>\r\n"
                         + "RCPT TO:<refuse@b.example>\r\nDATA\r\n")
        let ehlo = try await c.reply()
        #expect(ehlo?.code == 250)
        #expect(ehlo?.lines.contains("PIPELINING") == true)
        #expect(ehlo?.lines.contains("SIZE 1000") == true)
        var codes: [Int?] = []
        for _ in 0..<4 { codes.append(try await c.code()) }
        #expect(codes == [250, 250, 550, 354])
        try await c.send("Subject: t\r\n\r\n..dot\r\nend\r\n.\r\n")
        #expect(try await c.code() == 250)
        try await c.send("QUIT\r\n")
        #expect(try await c.code() == 221)
        #expect(try await c.reply() == nil)
        let stored = h.messages.withLock { $0 }
        #expect(stored.count == 1)
        #expect(stored.first?.0.recipients == ["a@b.example"])
        #expect(stored.first?.0.peer?.host == "127.0.0.1")
        #expect(stored.first.map { String(decoding: $0.1, as: UTF8.self) }
                == "Subject: t\r\n\r\n.dot\r\nend\r\n")
        await h.stop()
    }

    /// SMTP smuggling: "\n.\r\n" does not end the message, so what follows it is text, not
    /// a second transaction; the message ends at the real CR LF "." CR LF.
    @Test func aBareLFDotDoesNotEndTheMessage() async throws {
        let h = try ServerHarness()
        let c = try await h.client()
        #expect(try await c.code() == 220)
        try await c.send("EHLO c.example\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.example>\r\nDATA\r\n")
        _ = try await c.reply()
        for expected in [250, 250, 354] { #expect(try await c.code() == expected) }
        try await c.send("one\n.\r\nMAIL FROM:<>\r\nRCPT TO:<x@b.example>\r\nDATA\r\n"
                         + "two\r\n.\r\n")
        #expect(try await c.code() == 250)
        try await c.quit()
        let stored = h.messages.withLock { $0 }
        #expect(stored.count == 1)
        #expect(stored.first?.0.recipients == ["a@b.example"])
        #expect(stored.first.map { String(decoding: $0.1, as: UTF8.self) }
                == "one\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<x@b.example>\r\nDATA\r\ntwo\r\n")
        await h.stop()
    }

    @Test func earlyTalkerIsRefused() async throws {
        let h = try ServerHarness { $0.greetingDelay = .seconds(5) }
        let c = try await h.client()
        try await c.send("EHLO impatient.example\r\n")
        let reply = try await c.reply()
        #expect(reply?.code == 554)
        #expect(try await c.reply() == nil)
        #expect(h.messages.withLock { $0.count } == 0)
        await h.stop()
    }

    @Test func patientClientIsGreetedAfterTheDelay() async throws {
        let h = try ServerHarness { $0.greetingDelay = .milliseconds(100) }
        let c = try await h.client()
        #expect(try await c.code() == 220)
        try await c.send("NOOP\r\n")
        #expect(try await c.code() == 250)
        try await c.quit()
        await h.stop()
    }

    @Test func aClientThatWaitedOnceIsNotTestedAgain() async throws {
        let h = try ServerHarness { $0.greetingDelay = .milliseconds(200) }
        let first = try await h.client()
        #expect(try await first.code() == 220)
        try await first.quit()
        // From the same address, speaking at once is no longer an early talk: it is greeted
        // without the pause, and its EHLO is answered.
        let again = try await h.client()
        try await again.send("EHLO patient.example\r\n")
        #expect(try await again.code() == 220)
        #expect(try await again.code() == 250)
        try await again.quit()
        await h.stop()
    }

    @Test func linesTooLong() async throws {
        let h = try ServerHarness {
            $0.maxCommandLine = 510
            $0.lineBufferCap = 2048
        }
        let c = try await h.client()
        #expect(try await c.code() == 220)
        // Over the command limit but under the buffer cap: refused, the session goes on.
        try await c.send("NOOP " + String(repeating: "a", count: 600) + "\r\n")
        let refused = try await c.reply()
        #expect(refused?.code == 500)
        #expect(refused?.enhanced?.description == "5.5.6")
        try await c.send("NOOP\r\n")
        #expect(try await c.code() == 250)
        // Over the buffer cap: the line cannot be skipped, so the session ends.
        try await c.send(String(repeating: "b", count: 3000))
        #expect(try await c.code() == 500)
        #expect(try await c.reply() == nil)
        await h.stop()
    }

    @Test func oversizedMessages() async throws {
        let h = try ServerHarness()
        let c = try await h.client()
        #expect(try await c.code() == 220)
        try await c.send("EHLO c\r\nMAIL FROM:<> SIZE=5000\r\n")
        #expect(try await c.code() == 250)
        let declared = try await c.reply()
        #expect(declared?.code == 552)
        #expect(declared?.enhanced?.description == "5.3.4")
        try await c.send("MAIL FROM:<>\r\nRCPT TO:<a@b.example>\r\nDATA\r\n")
        for _ in 0..<3 { _ = try await c.reply() }
        let line = String(repeating: "z", count: 98) + "\r\n"
        try await c.send(String(repeating: line, count: 50) + ".\r\n")
        let after = try await c.reply()
        #expect(after?.code == 552)
        try await c.send("NOOP\r\n")
        #expect(try await c.code() == 250)
        #expect(h.messages.withLock { $0.count } == 0)
        try await c.quit()
        await h.stop()
    }

    @Test func sessionLimit() async throws {
        let h = try ServerHarness { $0.maxSessions = 1 }
        let first = try await h.client()
        #expect(try await first.code() == 220)
        let second = try await h.client()
        let busy = try await second.reply()
        #expect(busy?.code == 421)
        #expect(busy?.enhanced?.description == "4.3.2")
        #expect(try await second.reply() == nil)
        try await first.send("NOOP\r\n")
        #expect(try await first.code() == 250)
        try await first.quit()
        await h.stop()
    }

    @Test func sessionsPerClientAddress() async throws {
        let h = try ServerHarness { $0.maxSessionsPerClient = 2 }
        let first = try await h.client()
        let second = try await h.client()
        #expect(try await first.code() == 220)
        #expect(try await second.code() == 220)
        let third = try await h.client()
        let busy = try await third.reply()
        #expect(busy?.code == 421)
        #expect(busy?.enhanced?.description == "4.7.0")
        #expect(busy?.text.contains("too many connections from your address") == true)
        #expect(try await third.reply() == nil)
        // When one of them leaves, the address may connect again.
        try await first.quit()
        try await h.waitForSessions(1)
        let fourth = try await h.client()
        #expect(try await fourth.code() == 220)
        try await fourth.quit()
        try await second.quit()
        await h.stop()
    }

    @Test func sessionTimeLimitEndsABusySession() async throws {
        let h = try ServerHarness {
            $0.sessionTimeout = .milliseconds(400)
            $0.idleTimeout = .seconds(30)
        }
        let c = try await h.client()
        #expect(try await c.code() == 220)
        // A client that keeps talking is still cut off once the session's time is over.
        var last: SMTPReply?
        for _ in 0..<100 {
            try await c.send("NOOP\r\n")
            last = try await c.reply()
            if last?.code != 250 { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(last?.code == 421)
        #expect(last?.enhanced?.description == "4.4.2")
        #expect(last?.text.contains("session too long") == true)
        #expect(try await c.reply() == nil)
        await h.stop()
    }

    @Test func idleTimeout() async throws {
        let h = try ServerHarness { $0.idleTimeout = .milliseconds(300) }
        let c = try await h.client()
        #expect(try await c.code() == 220)
        let reply = try await c.reply()
        #expect(reply?.code == 421)
        #expect(reply?.enhanced?.description == "4.4.2")
        #expect(try await c.reply() == nil)
        await h.stop()
    }

    @Test func shutdownLetsTransactionsFinish() async throws {
        let h = try ServerHarness()
        let idle = try await h.client()
        #expect(try await idle.code() == 220)
        try await idle.send("EHLO idle\r\n")
        #expect(try await idle.code() == 250)
        let busy = try await h.client()
        #expect(try await busy.code() == 220)
        try await busy.send("EHLO busy\r\nMAIL FROM:<>\r\n")
        #expect(try await busy.code() == 250)
        #expect(try await busy.code() == 250)

        h.shutdown.request()
        // The idle session is told at once; the one in a transaction may finish it.
        let told = try await idle.reply()
        #expect(told?.code == 421)
        #expect(told?.enhanced?.description == "4.3.2")
        #expect(try await idle.reply() == nil)
        try await busy.send("RCPT TO:<a@b.example>\r\nDATA\r\n")
        #expect(try await busy.code() == 250)
        #expect(try await busy.code() == 354)
        try await busy.send("last words\r\n.\r\n")
        #expect(try await busy.code() == 250)
        #expect(try await busy.code() == 421)
        #expect(try await busy.reply() == nil)
        await h.task.value
        #expect(h.messages.withLock { $0.count } == 1)
        #expect(h.server.sessionCount == 0)
        // Nothing listens any more.
        await #expect(throws: IOError.self) { _ = try await h.client() }
    }

    @Test func cancellingTheServerStopsIt() async throws {
        let h = try ServerHarness()
        let c = try await h.client()
        #expect(try await c.code() == 220)
        h.task.cancel()
        await h.task.value
        #expect(h.shutdown.isRequested)
        #expect(h.server.sessionCount == 0)
    }

    @Test func shutdownIsBounded() async throws {
        let h = try ServerHarness { $0.drainTimeout = .milliseconds(200) }
        let stuck = try await h.client()
        #expect(try await stuck.code() == 220)
        try await stuck.send("EHLO c\r\nMAIL FROM:<>\r\n")
        #expect(try await stuck.code() == 250)
        #expect(try await stuck.code() == 250)
        await h.stop()
        #expect(h.server.sessionCount == 0)
        let after = try? await stuck.reply()
        #expect(after == nil)
    }
}
