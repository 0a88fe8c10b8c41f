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
                // Nothing listens there: no test reaches a real resolver by default.
                "TERN_DNS_RESOLVER": "127.0.0.1:1",
                "TERN_FBL_ADDRESSES": "fbl@tern.example, Complaints@Tern.Example",
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
        #expect(entries.count == 2)
        let entry = try #require(entries.first)
        #expect(entry["id"] == id)
        #expect(entry["kind"] == "bounce")
        #expect(entry["severity"] == "hard")
        #expect(entry["reason"] == "user-unknown")
        #expect(entry["status"] == "5.1.1")
        #expect(entry["action"] == "failed")
        #expect(entry["rcpt"] == "erin@inbox.example")
        #expect(entry["reporter"] == "mx.inbox.example")
        #expect(entry["remote_mta"] == "mx.inbox.example")
        #expect(entry["id_source"] == "verp")
        #expect(entry["format"] == "dsn")
        #expect(entry["diagnostic"]
                == "550 5.1.1 <erin@inbox.example>: Recipient address rejected: user unknown")
        // The delayed recipient of the same report is a soft delay entry.
        #expect(entries.last?["kind"] == "delay")
        #expect(entries.last?["severity"] == "soft")
        #expect(entries.last?["rcpt"] == "slow@inbox.example")
        #expect(try await h.counter("bounce.accepted") == 2)
        #expect(try await h.counter("bounce.forged") == 0)
        let logged = h.logs.records.filter { $0.message == "bounce" }
        #expect(h.logs.records.filter { $0.message == "delay" }.count == 1)
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
        for rcpt in ["postmaster@elsewhere.example", "user@example.com",
                     otherDomain.address(for: MessageID.generate()), "abuse@\(Self.domain)"] {
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

    /// Sends one message over SMTP and returns the reply to its final dot.
    func deliver(_ h: Harness, from: String, to rcpt: String, _ message: String) async throws
        -> SMTPReply?
    {
        let c = try await h.client()
        #expect(try await c.command("MAIL FROM:<\(from)>")?.code == 250)
        #expect(try await c.command("RCPT TO:<\(rcpt)>")?.code == 250)
        #expect(try await c.command("DATA")?.code == 354)
        try await c.send(MessageBody.dataPayload(Array(message.utf8)))
        let reply = try await c.reply()
        try await c.quit()
        return reply
    }

    @Test func autoReplyIsRecordedAsOne() async throws {
        let h = try await Harness()
        let id = MessageID.generate()
        let reply = try await deliver(h, from: "auto@inbox.example", to: h.verp.address(for: id),
                                      "From: auto@inbox.example\r\nSubject: Out of office\r\n"
                                      + "Auto-Submitted: auto-replied\r\n\r\nBack on Monday.\r\n")
        #expect(reply?.code == 250)
        let entries = try await h.inbound()
        #expect(entries.count == 1)
        #expect(entries.first?["id"] == id)
        #expect(entries.first?["kind"] == "auto-reply")
        #expect(entries.first?["reason"] == "vacation")
        #expect(entries.first?["severity"] == "none")
        #expect(try await h.counter("bounce.unparsed") == 0)
        try await h.stop()
    }

    @Test func messageThatIsNotAReportIsTakenAndCounted() async throws {
        let h = try await Harness()
        let id = MessageID.generate()
        let reply = try await deliver(h, from: "someone@inbox.example",
                                      to: h.verp.address(for: id),
                                      "Subject: Re: hello\r\n\r\nThanks!\r\n")
        #expect(reply?.code == 250)
        #expect(try await h.counter("bounce.unparsed") == 1)
        #expect(try await h.inbound().isEmpty)
        try await h.stop()
    }

    /// An ARF complaint as a mailbox provider's feedback loop sends it: to the configured
    /// address, naming the message by the signed return path of the original inside.
    static func complaint(about verpAddress: String, rcpt: String) -> String {
        """
        From: feedback@isp.example\r
        To: fbl@tern.example\r
        Subject: FW: complaint\r
        MIME-Version: 1.0\r
        Content-Type: multipart/report; report-type=feedback-report; boundary="arf"\r
        \r
        --arf\r
        Content-Type: text/plain\r
        \r
        This is an abuse report.\r
        --arf\r
        Content-Type: message/feedback-report\r
        \r
        Feedback-Type: abuse\r
        User-Agent: ISP-FBL/1.0\r
        Version: 1\r
        Original-Rcpt-To: <\(rcpt)>\r
        Reporting-MTA: dns; fbl.isp.example\r
        \r
        --arf\r
        Content-Type: message/rfc822\r
        \r
        Return-Path: <\(verpAddress)>\r
        From: news@shop.example\r
        To: \(rcpt)\r
        Subject: Sale\r
        \r
        Buy.\r
        --arf--\r

        """
    }

    @Test func complaintToAFeedbackAddressNamesItsMessage() async throws {
        let h = try await Harness()
        let id = MessageID.generate()
        // The configured address matches without regard to case.
        let reply = try await deliver(
            h, from: "feedback@isp.example", to: "COMPLAINTS@tern.example",
            Self.complaint(about: h.verp.address(for: id), rcpt: "reader@isp.example"))
        #expect(reply?.code == 250)
        let entries = try await h.inbound()
        #expect(entries.count == 1)
        #expect(entries.first?["id"] == id)
        #expect(entries.first?["kind"] == "complaint")
        #expect(entries.first?["feedback_type"] == "abuse")
        #expect(entries.first?["rcpt"] == "reader@isp.example")
        #expect(entries.first?["reporter"] == "fbl.isp.example")
        #expect(entries.first?["id_source"] == "verp")
        try await h.stop()
    }

    @Test func complaintWithAForgedReturnPathIsDropped() async throws {
        let h = try await Harness()
        let id = MessageID.generate()
        let forged = Self.forged(h.verp.address(for: id), replacement: "z")
        let reply = try await deliver(h, from: "feedback@isp.example", to: "fbl@tern.example",
                                      Self.complaint(about: forged, rcpt: "reader@isp.example"))
        #expect(reply?.code == 250)
        #expect(try await h.inbound().isEmpty)
        #expect(try await h.counter("bounce.unmatched") == 1)
        try await h.stop()
    }

    /// RFC 5321 §4.5.1: postmaster, bare or at any domain we take mail for, is accepted.
    @Test func postmasterIsAcceptedCountedAndLogged() async throws {
        let h = try await Harness()
        let c = try await h.client()
        #expect(try await c.command("MAIL FROM:<admin@peer.example>")?.code == 250)
        for rcpt in ["postmaster", "Postmaster", "POSTMASTER@\(Self.domain.uppercased())",
                     "postmaster@tern.example"] {
            #expect(try await c.command("RCPT TO:<\(rcpt)>")?.code == 250, "\(rcpt)")
        }
        #expect(try await c.command("DATA")?.code == 354)
        let text = "From: admin@peer.example\r\nSubject: =?utf-8?q?Your_server?= is listed\r\n"
            + "Message-ID: <\(MessageID.generate())@tern.example>\r\n\r\nPlease check.\r\n"
        try await c.send(MessageBody.dataPayload(Array(text.utf8)))
        let reply = try await c.reply()
        #expect(reply?.code == 250)
        try await c.quit()
        #expect(try await h.counter("bounce.postmaster") == 1)
        #expect(try await h.counter("bounce.refused") == 0)
        #expect(try await h.inbound().isEmpty)
        let logged = h.logs.records.filter { $0.message == "mail to postmaster" }
        #expect(logged.count == 1)
        #expect(logged.first?.level == .notice)
        #expect(logged.first?.fields["from"] == "admin@peer.example")
        #expect(logged.first?.fields["subject"] == "Your server is listed")
        try await h.stop()
    }

    /// A complaint sent to postmaster that names its message by a signed VERP address is
    /// recorded like one sent to the feedback address.
    @Test func reportToPostmasterNamingASignedAddressIsRecorded() async throws {
        let h = try await Harness()
        let id = MessageID.generate()
        let reply = try await deliver(
            h, from: "feedback@isp.example", to: "postmaster@\(Self.domain)",
            Self.complaint(about: h.verp.address(for: id), rcpt: "reader@isp.example"))
        #expect(reply?.code == 250)
        let entries = try await h.inbound()
        #expect(entries.count == 1)
        #expect(entries.first?["id"] == id)
        #expect(entries.first?["kind"] == "complaint")
        #expect(entries.first?["id_source"] == "verp")
        #expect(try await h.counter("bounce.postmaster") == 0)
        // A forged VERP address inside makes it plain postmaster mail.
        let forged = Self.forged(h.verp.address(for: id), replacement: "z")
        let second = try await deliver(
            h, from: "feedback@isp.example", to: "postmaster",
            Self.complaint(about: forged, rcpt: "reader@isp.example"))
        #expect(second?.code == 250)
        #expect(try await h.inbound().count == 1)
        #expect(try await h.counter("bounce.postmaster") == 1)
        try await h.stop()
    }

    /// Real bounces quote lines past RFC 5321's 1000 octets: taken up to TERN_BOUNCE_MAX_LINE,
    /// refused as content (554 5.6.0, not a 500 syntax error) beyond it.
    @Test func longLinesUpToTheLimitAreTaken() async throws {
        let h = try await Harness(env: ["TERN_BOUNCE_MAX_LINE": "4000"])
        let id = MessageID.generate()
        let address = h.verp.address(for: id)
        var long = Self.report(to: address)
        long += Array(("X-Long: " + String(repeating: "q", count: 3900) + "\r\n").utf8)
        let c = try await h.client()
        #expect(try await c.command("MAIL FROM:<>")?.code == 250)
        #expect(try await c.command("RCPT TO:<\(address)>")?.code == 250)
        #expect(try await c.command("DATA")?.code == 354)
        try await c.send(MessageBody.dataPayload(long))
        #expect(try await c.reply()?.code == 250)
        #expect(try await h.inbound().count == 2)   // failed + delayed
        #expect(try await c.command("MAIL FROM:<>")?.code == 250)
        #expect(try await c.command("RCPT TO:<\(address)>")?.code == 250)
        #expect(try await c.command("DATA")?.code == 354)
        long += Array((String(repeating: "w", count: 4001) + "\r\n").utf8)
        try await c.send(MessageBody.dataPayload(long))
        let refused = try await c.reply()
        #expect(refused?.code == 554)
        #expect(refused?.enhanced?.description == "5.6.0")
        try await c.quit()
        #expect(try await h.inbound().count == 2)   // failed + delayed
        try await h.stop()
    }

    /// A redacted ARF report whose original keeps only its CFBL-Feedback-ID (RFC 9477).
    static func cfblComplaint(feedbackID: String) -> String {
        """
        From: fbl@isp.example\r
        Subject: complaint\r
        MIME-Version: 1.0\r
        Content-Type: multipart/report; report-type=feedback-report; boundary="b"\r
        \r
        --b\r
        Content-Type: message/feedback-report\r
        \r
        Feedback-Type: abuse\r
        User-Agent: ISP/1\r
        Version: 1\r
        Original-Rcpt-To: <reader@isp.example>\r
        \r
        --b\r
        Content-Type: text/rfc822-headers\r
        \r
        From: news@tern.example\r
        CFBL-Address: fbl@tern.example; report=arf\r
        CFBL-Feedback-ID: \(feedbackID)\r
        \r
        --b--\r

        """
    }

    @Test func complaintNamedByAVerifiedCFBLFeedbackID() async throws {
        let h = try await Harness()
        let id = MessageID.generate()
        let cfbl = CFBL(address: "fbl@tern.example", verp: h.verp)
        let reply = try await deliver(h, from: "fbl@isp.example", to: "fbl@tern.example",
                                      Self.cfblComplaint(feedbackID: cfbl.feedbackID(for: id)))
        #expect(reply?.code == 250)
        let entries = try await h.inbound()
        #expect(entries.count == 1)
        #expect(entries.first?["id"] == id)
        #expect(entries.first?["kind"] == "complaint")
        #expect(entries.first?["id_source"] == "cfbl")
        #expect(entries.first?["cfbl"] == "pass")
        // Another message's id with this tag: forged, counted, and names nothing.
        let other = MessageID.generate()
        let forged = try await deliver(h, from: "fbl@isp.example", to: "fbl@tern.example",
                                       Self.cfblComplaint(feedbackID: "\(other):"
                                                          + h.verp.tag(for: id)))
        #expect(forged?.code == 250)
        #expect(try await h.inbound().count == 1)
        #expect(try await h.counter("bounce.cfbl_forged") == 1)
        #expect(try await h.counter("bounce.unmatched") == 1)
        try await h.stop()
    }

    /// RFC 6376 on feedback reports: the reporting provider's signature is checked with the
    /// key the test world publishes, and the verdict lands in the inbound entry.
    @Test func complaintSignaturesAreVerifiedThroughDNS() async throws {
        let path = try await APIDKIMTests.keysFile()
        defer { try? FileManager.default.removeItem(
            atPath: (path as NSString).deletingLastPathComponent) }
        // The same keys, as the provider's (d=isp.example).
        let keys = try DKIMKeyTable.load(path: path).allKeys.map {
            DKIMKey(domain: "isp.example", selector: $0.selector, algorithm: $0.algorithm,
                    key: $0.key)
        }
        let world = try await SenderTestWorld.start(txt: Dictionary(
            uniqueKeysWithValues: keys.map { ($0.dnsName, [$0.dnsRecord]) }))
        defer { world.stop() }
        let h = try await Harness(env: ["TERN_DNS_RESOLVER": "127.0.0.1:\(world.dnsPort)"])
        let signer = DKIMSigner(keys: DKIMKeyTable(keys))

        let id = MessageID.generate()
        let report = Array(Self.complaint(about: h.verp.address(for: id),
                                          rcpt: "reader@isp.example").utf8)
        let (signed, outcome) = signer.sign(report, at: Date())
        #expect(outcome == .signed(domain: "isp.example", selectors: ["e1", "r1"])
                || outcome == .signed(domain: "isp.example", selectors: ["r1", "e1"]))
        let tampered = String(decoding: signed, as: UTF8.self)
            .replacingOccurrences(of: "This is an abuse report.", with: "This is praise.")
        for (message, verdict) in [(String(decoding: signed, as: UTF8.self), "pass"),
                                   (tampered, "fail"),
                                   (String(decoding: report, as: UTF8.self), "none")] {
            let reply = try await deliver(h, from: "feedback@isp.example",
                                          to: "fbl@tern.example", message)
            #expect(reply?.code == 250)
            let entry = try await h.inbound().last
            #expect(entry?["id"] == id)
            #expect(entry?["dkim"] == verdict)
            #expect(entry?["dkim_domain"] == (verdict == "none" ? "" : "isp.example"))
        }
        #expect(try await h.inbound().count == 3)
        try await h.stop()
    }

    /// A DNS server that never answers: the key lookup times out and the report is still
    /// recorded, with dkim=temperror.
    @Test func keyLookupTimeoutIsATemporaryError() async throws {
        let (silent, port) = try loopbackSocket(SOCK_DGRAM)
        defer { close(silent) }
        let h = try await Harness(env: ["TERN_DNS_RESOLVER": "127.0.0.1:\(port)",
                                        "TERN_BOUNCE_DKIM_TIMEOUT": "1s"])
        let path = try await APIDKIMTests.keysFile()
        defer { try? FileManager.default.removeItem(
            atPath: (path as NSString).deletingLastPathComponent) }
        let keys = try DKIMKeyTable.load(path: path).allKeys.map {
            DKIMKey(domain: "isp.example", selector: $0.selector, algorithm: $0.algorithm,
                    key: $0.key)
        }
        let id = MessageID.generate()
        let (signed, _) = DKIMSigner(keys: DKIMKeyTable(keys)).sign(
            Array(Self.complaint(about: h.verp.address(for: id), rcpt: "r@isp.example").utf8),
            at: Date())
        let reply = try await deliver(h, from: "feedback@isp.example", to: "fbl@tern.example",
                                      String(decoding: signed, as: UTF8.self))
        #expect(reply?.code == 250)
        let entry = try await h.inbound().first
        #expect(entry?["id"] == id)
        #expect(entry?["dkim"] == "temperror")
        #expect(entry?["dkim_domain"] == "isp.example")
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
        #expect(s.server.maxSessionsPerClient == 20)
        #expect(s.server.sessionTimeout == .seconds(1800))
        #expect(s.server.maxCommands == 1000)
        #expect(s.server.maxTextLine == 10000)
        let tight = try make(base.merging([
            "TERN_BOUNCE_MAX_SESSIONS_PER_CLIENT": "3", "TERN_BOUNCE_SESSION_TIMEOUT": "2m",
            "TERN_BOUNCE_MAX_COMMANDS": "50", "TERN_BOUNCE_MAX_ERRORS": "5",
        ]) { _, b in b })
        #expect(tight.server.maxSessionsPerClient == 3)
        #expect(tight.server.sessionTimeout == .seconds(120))
        #expect(tight.server.maxCommands == 50)
        #expect(tight.server.maxErrors == 5)
        #expect(throws: ConfigError.self) {
            try make(base.merging(["TERN_BOUNCE_MAX_SESSIONS_PER_CLIENT": "0"]) { _, b in b })
        }
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
        #expect(s.feedbackAddresses.isEmpty)
        let fbl = try make(base.merging(["TERN_FBL_ADDRESSES": " FBL@Tern.example,x@y.example"])
                           { _, b in b })
        #expect(fbl.feedbackAddresses == ["fbl@tern.example", "x@y.example"])
        #expect(throws: ConfigError.self) {
            try make(base.merging(["TERN_FBL_ADDRESSES": "not-an-address"]) { _, b in b })
        }
    }
}
