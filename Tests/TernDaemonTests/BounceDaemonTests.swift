// The bounce receiver in-process against a private Redis, spoken to over SMTP on 127.0.0.1:
// a real RFC 3464 report to a signed VERP address becomes an inbound entry; forged and foreign
// addresses are refused at RCPT and counted; nothing is acknowledged that Redis did not take.

import Foundation
import Synchronization
import Testing
import TernBounce
import TernCore
import TernMail
import TernTestSupport

@Suite(.serialized) struct BounceDaemonTests {
    static let domain = "bounces.tern.example"
    static let secret = (0..<32).map { UInt8($0 * 7 & 0xFF) }

    /// A bare SMTP client, as a remote MTA would be.
    final class Client: @unchecked Sendable {
        let connection: TCPConnection
        let reader: LineReader

        init(_ address: SocketAddress) async throws {
            connection = try await TCPConnection.connect(to: address, deadline: .now + .seconds(10))
            reader = LineReader(connection)
        }

        deinit { connection.close() }

        func send(_ text: String) async throws { try await send(Array(text.utf8)) }

        func send(_ bytes: [UInt8]) async throws {
            try await connection.write(bytes, deadline: .now + .seconds(10))
        }

        func reply() async throws -> SMTPReply? {
            var parser = SMTPReplyParser()
            while let line = try await reader.readLine(limit: 4096, deadline: .now + .seconds(10)) {
                if let reply = try parser.feed(line) { return reply }
            }
            connection.close()
            return nil
        }

        /// QUIT, its 221, and the server's end of the connection.
        func quit() async throws {
            #expect(try await command("QUIT")?.code == 221)
            #expect(try await reply() == nil)
        }

        /// Sends a command and returns the reply.
        func command(_ line: String) async throws -> SMTPReply? {
            try await send(line + "\r\n")
            return try await reply()
        }
    }

    final class Harness: Sendable {
        let redisServer: TestRedis
        let redis: RedisClient
        let daemon: BounceDaemon
        let shutdown: Shutdown
        let logs: MemoryLogSink
        let task: Task<Void, any Error>
        let keys = Keys()
        let verp = VERP(secret: BounceDaemonTests.secret, domain: BounceDaemonTests.domain)
        let ready: ReadyStatus

        /// What the daemon passed to its `ready` callback.
        final class ReadyStatus: Sendable {
            private let value = Mutex<String?>(nil)
            var status: String? { value.withLock { $0 } }
            func set(_ s: String) { value.withLock { $0 = s } }
        }

        init(env extra: [String: String] = [:]) async throws {
            redisServer = try TestRedis()
            redis = try RedisClient(url: redisServer.url)
            let env = Environment(extra.merging([
                "TERN_REDIS_URL": redisServer.url, "TERN_INSTANCE": "t",
                "TERN_BOUNCE_LISTEN": "127.0.0.1:0",
                "TERN_VERP_DOMAIN": BounceDaemonTests.domain,
                "TERN_VERP_SECRET": Crypto.hex(BounceDaemonTests.secret),
                "TERN_HOSTNAME": "bounce.tern.example",
                "TERN_BOUNCE_GREET_DELAY": "0ms",
            ]) { a, _ in a })
            let settings = try BounceSettings(
                env, common: CommonSettings(env, role: "bounce-receiver"))
            let logs = MemoryLogSink()
            let daemon = try BounceDaemon(
                settings: settings, logger: Logger(label: "bounce", sink: logs))
            let shutdown = Shutdown()
            let ready = ReadyStatus()
            self.logs = logs
            self.daemon = daemon
            self.shutdown = shutdown
            self.ready = ready
            task = Task {
                try await daemon.run(shutdown: shutdown) { status in ready.set(status) }
            }
        }

        func client() async throws -> Client {
            let c = try await Client(daemon.address)
            let greeting = try await c.reply()
            #expect(greeting?.code == 220)
            #expect(try await c.command("EHLO mx1.inbox.example")?.code == 250)
            return c
        }

        func counter(_ name: String) async throws -> Int {
            try await redis.run("HGET", keys.counters, name).int ?? 0
        }

        func inbound() async throws -> [[String: String]] {
            let all = try await redis.run("XRANGE", keys.stream(.inbound), "-", "+")
            return (all.array ?? []).compactMap { $0.array?.last?.fieldMap }
        }

        func stop() async throws {
            shutdown.request()
            try await task.value
            redisServer.stop()
        }
    }

    /// A Postfix-style report: multipart/report, CRLF lines, a folded diagnostic, a
    /// delayed recipient beside the failed one, and a line that needs dot-stuffing.
    static func report(to verpAddress: String) -> [UInt8] {
        let b = "B0UND.4RY/mx.inbox.example"
        let text = """
            From: MAILER-DAEMON@mx.inbox.example (Mail Delivery System)\r
            To: \(verpAddress)\r
            Subject: Undelivered Mail Returned to Sender\r
            Auto-Submitted: auto-replied\r
            MIME-Version: 1.0\r
            Content-Type: multipart/report; report-type=delivery-status;\r
            \tboundary="\(b)"\r
            \r
            --\(b)\r
            Content-Type: text/plain\r
            \r
            Your message could not be delivered.\r
            .A line that starts with a dot.\r
            \r
            --\(b)\r
            Content-Type: message/delivery-status\r
            \r
            Reporting-MTA: dns; mx.inbox.example\r
            \r
            Final-Recipient: rfc822; erin@inbox.example\r
            Action: failed\r
            Status: 5.1.1\r
            Remote-MTA: dns; mx.inbox.example\r
            Diagnostic-Code: smtp; 550 5.1.1 <erin@inbox.example>: Recipient address\r
                rejected: user unknown\r
            \r
            Final-Recipient: rfc822; slow@inbox.example\r
            Action: delayed\r
            Status: 4.4.1\r
            \r
            --\(b)\r
            Content-Type: text/rfc822-headers\r
            \r
            Subject: will bounce later\r
            \r
            --\(b)--\r

            """
        return Array(text.utf8)
    }

    /// The same address with one signature character changed to `replacement`.
    static func forged(_ address: String, replacement: Character) -> String {
        let at = address.lastIndex(of: "@")!
        let local = address[..<at]
        let dot = local.lastIndex(of: ".")!
        var signature = Array(local[local.index(after: dot)...])
        signature[0] = signature[0] == replacement ? "0" : replacement
        return String(local[...dot]) + String(signature) + String(address[at...])
    }

    @Test func reportToASignedAddressBecomesAnInboundEntry() async throws {
        let h = try await Harness()
        let id = MessageID.generate()
        let address = h.verp.address(for: id)
        let c = try await h.client()
        #expect(try await c.command("MAIL FROM:<>")?.code == 250)
        // Servers may change the case of the address; the signature survives that.
        #expect(try await c.command("RCPT TO:<\(address.uppercased())>")?.code == 250)
        #expect(try await c.command("DATA")?.code == 354)
        try await c.send(MessageBody.dataPayload(Self.report(to: address)))
        let accepted = try await c.reply()
        #expect(accepted?.code == 250)
        #expect(accepted?.enhanced?.description == "2.0.0")
        try await c.quit()

        let entries = try await h.inbound()
        #expect(entries.count == 1)
        let entry = try #require(entries.first)
        #expect(entry["id"] == id)
        #expect(entry["kind"] == "bounce")
        #expect(entry["status"] == "5.1.1")
        #expect(entry["action"] == "failed")
        #expect(entry["rcpt"] == "erin@inbox.example")
        #expect(entry["reporter"] == "mx.inbox.example")
        #expect(entry["diagnostic"]
                == "550 5.1.1 <erin@inbox.example>: Recipient address rejected: user unknown")
        #expect(try await h.counter("bounce.accepted") == 1)
        #expect(try await h.counter("bounce.forged") == 0)
        let logged = h.logs.records.filter { $0.message == "bounce" }
        #expect(logged.map { $0.fields["message_id"] } == [id])
        #expect(logged.first?.level == .info)
        #expect(h.ready.status?.contains(Self.domain) == true)
        // The scheduler's group exists, so the entry will be read.
        let groups = try await h.redis.run("XINFO", "GROUPS", h.keys.stream(.inbound))
        #expect(groups.array?.count == 1)
        try await h.stop()
    }

    @Test func forgedSignaturesAreRefusedAndCounted() async throws {
        let h = try await Harness()
        let id = MessageID.generate()
        let address = h.verp.address(for: id)
        let c = try await h.client()
        #expect(try await c.command("MAIL FROM:<>")?.code == 250)
        // One character changed inside the signature's alphabet, then one outside it.
        for replacement: Character in ["z", "u"] {
            let forged = Self.forged(address, replacement: replacement)
            #expect(forged != address)
            let refused = try await c.command("RCPT TO:<\(forged)>")
            #expect(refused?.code == 550)
            #expect(refused?.enhanced?.description == "5.7.1")
        }
        // No recipient was accepted, so no message can follow.
        #expect(try await c.command("DATA")?.code == 554)
        try await c.quit()
        #expect(try await h.counter("bounce.forged") == 2)
        #expect(try await h.counter("bounce.refused") == 0)
        #expect(try await h.inbound().isEmpty)
        try await h.stop()
    }

    @Test func addressesThatAreNotOursAreRefused() async throws {
        let h = try await Harness()
        let c = try await h.client()
        #expect(try await c.command("MAIL FROM:<someone@elsewhere.example>")?.code == 250)
        let otherDomain = VERP(secret: Self.secret, domain: "bounces.elsewhere.example")
        for rcpt in ["postmaster@\(Self.domain)", "user@example.com",
                     otherDomain.address(for: MessageID.generate()), "Postmaster"] {
            let refused = try await c.command("RCPT TO:<\(rcpt)>")
            #expect(refused?.code == 550, "\(rcpt)")
            #expect(refused?.enhanced?.description == "5.7.1", "\(rcpt)")
        }
        try await c.quit()
        #expect(try await h.counter("bounce.refused") == 4)
        #expect(try await h.counter("bounce.forged") == 0)
        #expect(try await h.inbound().isEmpty)
        try await h.stop()
    }

    @Test func messageThatIsNotAReportIsTakenAndCounted() async throws {
        let h = try await Harness()
        let id = MessageID.generate()
        let c = try await h.client()
        #expect(try await c.command("MAIL FROM:<auto@inbox.example>")?.code == 250)
        #expect(try await c.command("RCPT TO:<\(h.verp.address(for: id))>")?.code == 250)
        #expect(try await c.command("DATA")?.code == 354)
        try await c.send("Subject: Out of office\r\n\r\nBack on Monday.\r\n.\r\n")
        #expect(try await c.reply()?.code == 250)
        try await c.quit()
        #expect(try await h.counter("bounce.unparsed") == 1)
        #expect(try await h.inbound().isEmpty)
        try await h.stop()
    }

    @Test func bounceIsNotAcknowledgedWhenRedisFails() async throws {
        let h = try await Harness()
        let id = MessageID.generate()
        let address = h.verp.address(for: id)
        let c = try await h.client()
        #expect(try await c.command("MAIL FROM:<>")?.code == 250)
        #expect(try await c.command("RCPT TO:<\(address)>")?.code == 250)
        #expect(try await c.command("DATA")?.code == 354)
        h.redisServer.stop()
        try await c.send(MessageBody.dataPayload(Self.report(to: address)))
        let reply = try await c.reply()
        #expect(reply?.code == 451)
        #expect(reply?.enhanced?.description == "4.3.0")
        try await c.quit()
        h.shutdown.request()
        _ = try? await h.task.value
    }

    @Test func settings() throws {
        let base = ["TERN_VERP_DOMAIN": "Bounces.Example.COM",
                    "TERN_VERP_SECRET": String(repeating: "ab", count: 16)]
        func make(_ values: [String: String]) throws -> BounceSettings {
            let env = Environment(values)
            return try BounceSettings(env, common: CommonSettings(env, role: "bounce-receiver"))
        }
        let s = try make(base)
        #expect(s.listen.description == "0.0.0.0:25")
        #expect(s.verp.domain == "bounces.example.com")
        #expect(s.verp.address(for: "m") == VERP(secret: [UInt8](repeating: 0xAB, count: 16),
                                                 domain: "bounces.example.com").address(for: "m"))
        #expect(s.maxMessageSize == 10 * 1024 * 1024)
        #expect(throws: ConfigError.self) {
            try make(base.merging(["TERN_VERP_SECRET": "abcd"]) { _, b in b })
        }
        #expect(throws: ConfigError.self) {
            try make(base.merging(["TERN_VERP_SECRET": "zz"]) { _, b in b })
        }
        #expect(throws: ConfigError.self) {
            try make(["TERN_VERP_SECRET": base["TERN_VERP_SECRET"]!])
        }
        #expect(throws: ConfigError.self) {
            try make(base.merging(["TERN_BOUNCE_LISTEN": "localhost:25"]) { _, b in b })
        }
    }
}
