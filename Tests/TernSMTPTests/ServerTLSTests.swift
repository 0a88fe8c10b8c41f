// STARTTLS on the SMTP server over real sockets: Python's smtplib and swaks as clients, the
// guard against commands pipelined behind STARTTLS, and a certificate reload while a TLS
// session stays open.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernSMTP

@Suite(.serialized) struct ServerTLSTests {
    /// Runs a program to completion (polling, so no thread blocks); its exit status and
    /// everything it printed.
    static func run(_ path: String, _ args: [String], dir: String) async throws
        -> (Int32, String)
    {
        let log = dir + "/run-\(UUID().uuidString).log"
        let pid = try spawn(path, args, log: log)
        var status: Int32 = 0
        let deadline = ContinuousClock.now + .seconds(60)
        while waitpid(pid, &status, WNOHANG) == 0 {
            if ContinuousClock.now > deadline {
                stopProcess(pid, signal: SIGKILL)
                break
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return (status, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
    }

    static func serverTLS(_ certs: TestCertificates, _ name: String = "mx.test.example")
        async throws -> ReloadableTLSContext
    {
        let leaf = try await certs.leaf(name, stem: "server")
        return try ReloadableTLSContext(certificateFile: leaf.certificate, keyFile: leaf.key)
    }

    static let smtplibClient = """
        import smtplib, ssl, sys
        port, ca = int(sys.argv[1]), sys.argv[2]
        context = ssl.create_default_context(cafile=ca)
        context.check_hostname = False      # the chain is still verified against our CA
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=20) as s:
            s.ehlo()
            assert s.has_extn("starttls"), s.esmtp_features
            s.starttls(context=context)
            s.ehlo()
            assert not s.has_extn("starttls"), "STARTTLS offered again over TLS"
            print("version", s.sock.version())
            s.sendmail("a@client.example", ["b@mx.test.example"],
                       "Subject: over TLS\\r\\n\\r\\nsecret\\r\\n")
        print("sent")
        """

    @Test func pythonSmtplibSendsOverSTARTTLS() async throws {
        let certs = try await TestCertificates.make()
        defer { certs.remove() }
        let tls = try await Self.serverTLS(certs)
        let h = try ServerHarness(tls: tls) { $0.maxMessageSize = 10000 }
        let script = certs.dir + "/client.py"
        try Self.smtplibClient.write(toFile: script, atomically: true, encoding: .utf8)
        let (status, output) = try await Self.run(
            "/usr/bin/python3", [script, String(h.address.port), certs.caFile], dir: certs.dir)
        #expect(status == 0, "\(output)")
        #expect(output.contains("version TLSv1.3") && output.contains("sent"), "\(output)")
        let got = h.messages.withLock { $0 }
        #expect(got.count == 1)
        #expect(got.first?.0.tls.hasPrefix("TLSv1.3 TLS_") == true)
        #expect(got.first?.0.helo == "client.example")
        #expect(got.first.map { String(decoding: $0.1, as: UTF8.self) }
                == "Subject: over TLS\r\n\r\nsecret\r\n")
        await h.stop()
    }

    @Test func swaksWithTLSDelivers() async throws {
        let certs = try await TestCertificates.make()
        defer { certs.remove() }
        let tls = try await Self.serverTLS(certs)
        let h = try ServerHarness(tls: tls) { $0.maxMessageSize = 10000 }
        let (status, output) = try await Self.run("/usr/bin/swaks", [
            "--server", "127.0.0.1:\(h.address.port)", "--tls", "--helo", "swaks.example",
            "--from", "a@swaks.example", "--to", "b@mx.test.example",
            "--header", "Subject: swaks", "--body", "over TLS", "--timeout", "20",
        ], dir: certs.dir)
        #expect(status == 0, "\(output)")
        let got = h.messages.withLock { $0 }
        #expect(got.count == 1 && got.first?.0.helo == "swaks.example")
        #expect(got.first?.0.tls.hasPrefix("TLSv1.") == true)
        await h.stop()
    }

    @Test func commandsPipelinedBehindSTARTTLSAreDiscarded() async throws {
        let certs = try await TestCertificates.make()
        defer { certs.remove() }
        let h = try ServerHarness(tls: try await Self.serverTLS(certs))
        let c = try await h.client()
        #expect(try await c.code() == 220)
        try await c.send("EHLO c.example\r\n")
        #expect(try await c.reply()?.lines.last == "STARTTLS")
        // A man in the middle appends a command in clear text after STARTTLS (RFC 3207 §6).
        try await c.send("STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
        #expect(try await c.code() == 220)
        let info = try await c.startTLS(try TLSContext.client(caFile: certs.caFile),
                                        host: "mx.test.example")
        #expect(info.verified)
        // Had MAIL been obeyed it would have been answered 503 (no EHLO since TLS) first.
        try await c.send("NOOP\r\n")
        #expect(try await c.reply() == SMTPReply(250, "2.0.0", "OK"))
        try await c.send("MAIL FROM:<a@c.example>\r\n")
        #expect(try await c.code() == 503)
        try await c.send("EHLO c.example\r\n")
        #expect(try await c.reply()?.lines.contains("STARTTLS") == false)
        try await c.send("STARTTLS\r\n")
        #expect(try await c.reply() == SMTPReply(503, "5.5.1", "TLS already active"))
        try await c.quit()
        await h.stop()
    }

    @Test func aHandshakeThatFailsEndsOnlyThatSession() async throws {
        let certs = try await TestCertificates.make()
        defer { certs.remove() }
        let h = try ServerHarness(tls: try await Self.serverTLS(certs))
        let c = try await h.client()
        #expect(try await c.code() == 220)
        try await c.send("EHLO c.example\r\nSTARTTLS\r\n")
        _ = try await c.reply()
        #expect(try await c.code() == 220)
        try await c.send("GET / HTTP/1.0\r\n\r\n")
        #expect(try await c.reply() == nil)
        // The server goes on serving others.
        let d = try await h.client()
        #expect(try await d.code() == 220)
        try await d.quit()
        await h.stop()
    }

    @Test func aReloadedCertificateServesNewSessionsWhileAnOpenOneGoesOn() async throws {
        let certs = try await TestCertificates.make()
        defer { certs.remove() }
        let tls = try await Self.serverTLS(certs, "old.test.example")
        let h = try ServerHarness(tls: tls)
        let client = try TLSContext.client(caFile: certs.caFile)

        func open(_ host: String) async throws -> (LineClient, TLSSessionInfo) {
            let c = try await h.client()
            #expect(try await c.code() == 220)
            try await c.send("EHLO c.example\r\n")
            _ = try await c.reply()
            try await c.send("STARTTLS\r\n")
            #expect(try await c.code() == 220)
            return (c, try await c.startTLS(client, host: host))
        }

        let (old, before) = try await open("old.test.example")
        #expect(before.verified)
        _ = try await certs.leaf("new.test.example", stem: "server")
        try tls.reload()
        let (fresh, after) = try await open("new.test.example")
        #expect(after.verified)

        // The session opened before the reload still takes a message over its TLS.
        for c in [old, fresh] {
            try await c.send("EHLO c.example\r\n")
            #expect(try await c.code() == 250)
            try await c.send("MAIL FROM:<a@c.example>\r\nRCPT TO:<b@d.example>\r\nDATA\r\n")
            #expect(try await c.code() == 250)
            #expect(try await c.code() == 250)
            #expect(try await c.code() == 354)
            try await c.send("Subject: x\r\n\r\nbody\r\n.\r\n")
            #expect(try await c.code() == 250)
            try await c.quit()
        }
        #expect(h.messages.withLock { $0.count } == 2)
        await h.stop()
    }
}
