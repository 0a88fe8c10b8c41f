// The bounce receiver's STARTTLS: a report arriving over TLS from Python's smtplib becomes
// an inbound entry, a reload (what SIGHUP does) serves the new certificate to the next
// session, and certificate settings that cannot work stop the daemon at start.

import Foundation
import Testing
import TernBounce
import TernCore
import TernMail
import TernTestSupport

@Suite(.serialized) struct BounceTLSTests {
    /// Sends the report file over STARTTLS; prints the TLS version and the certificate's
    /// DNS names (the chain is verified against the CA; the name is printed, not checked).
    static let client = """
        import smtplib, ssl, sys
        port, ca, report, rcpt = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
        context = ssl.create_default_context(cafile=ca)
        context.check_hostname = False
        with smtplib.SMTP("127.0.0.1", port, local_hostname="mx1.inbox.example", timeout=20) as s:
            s.starttls(context=context)
            print("version", s.sock.version())
            names = [v for k, v in s.sock.getpeercert()["subjectAltName"] if k == "DNS"]
            print("names", ",".join(names))
            s.sendmail("", [rcpt], open(report, "rb").read())
        print("sent")
        """

    static func send(_ h: BounceDaemonTests.Harness, certs: TestCertificates, rcpt: String)
        async throws -> String
    {
        let script = certs.dir + "/client.py", report = certs.dir + "/report.eml"
        try client.write(toFile: script, atomically: true, encoding: .utf8)
        try Data(BounceDaemonTests.report(to: rcpt)).write(to: URL(fileURLWithPath: report))
        let log = certs.dir + "/client-\(UUID().uuidString).log"
        let pid = try spawn(SenderTestWorld.python, [script, String(h.daemon.address.port),
                                                     certs.caFile, report, rcpt], log: log)
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 { try await Task.sleep(for: .milliseconds(20)) }
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(status == 0, "\(output)")
        return output
    }

    @Test func aReportOverSTARTTLSIsRecordedAndAReloadServesTheNewCertificate() async throws {
        let certs = try await TestCertificates.make()
        defer { certs.remove() }
        let leaf = try await certs.leaf("old.tern.example", stem: "bounce")
        let h = try await BounceDaemonTests.Harness(env: [
            "TERN_BOUNCE_TLS_CERT": leaf.certificate, "TERN_BOUNCE_TLS_KEY": leaf.key,
        ])
        let id = MessageID.generate()
        let output = try await Self.send(h, certs: certs, rcpt: h.verp.address(for: id))
        #expect(output.contains("version TLSv1.3") && output.contains("names old.tern.example"))
        #expect(output.contains("sent"))
        let entries = try await h.inbound()
        // The report names a failed and a delayed recipient: one entry each.
        #expect(entries.count == 2 && entries.allSatisfy { $0["id"] == id }, "\(entries)")
        let line = h.logs.records.first { $0.message == "bounce" }
        #expect(line?.fields["tls"]?.hasPrefix("TLSv1.3 TLS_") == true)

        // A session open across the reload keeps working; the next one sees the new name.
        let open = try await BounceDaemonTests.Client(h.daemon.address)
        #expect(try await open.reply()?.code == 220)
        _ = try await certs.leaf("new.tern.example", stem: "bounce")
        await h.daemon.reload()
        #expect(h.logs.records.contains { $0.message == "STARTTLS certificate reloaded" })
        let again = try await Self.send(h, certs: certs, rcpt: h.verp.address(for: id))
        #expect(again.contains("names new.tern.example"), "\(again)")
        #expect(try await open.command("EHLO mx2.inbox.example")?.lines.last == "STARTTLS")
        try await open.quit()

        // Files that no longer load leave the current certificate in place.
        try "garbage".write(toFile: leaf.certificate, atomically: true, encoding: .utf8)
        await h.daemon.reload()
        #expect(h.logs.records.contains {
            $0.message.hasPrefix("STARTTLS certificate not reloaded, the old one stays")
        })
        let still = try await Self.send(h, certs: certs, rcpt: h.verp.address(for: id))
        #expect(still.contains("names new.tern.example"))
        try await h.stop()
    }

    @Test func certificateSettingsThatCannotWorkAreConfigurationErrors() async throws {
        let certs = try await TestCertificates.make()
        defer { certs.remove() }
        let leaf = try await certs.leaf("bounce.tern.example")
        let other = try await certs.leaf("other.tern.example")
        let base = ["TERN_VERP_DOMAIN": "bounces.tern.example",
                    "TERN_VERP_SECRET": SenderHarness.secret]
        let cases: [([String: String], String)] = [
            (["TERN_BOUNCE_TLS_CERT": leaf.certificate], "TERN_BOUNCE_TLS_KEY"),
            (["TERN_BOUNCE_TLS_KEY": leaf.key], "TERN_BOUNCE_TLS_CERT"),
            (["TERN_BOUNCE_TLS_CERT": leaf.certificate, "TERN_BOUNCE_TLS_KEY": other.key],
             "TERN_BOUNCE_TLS_CERT"),
            (["TERN_BOUNCE_TLS_CERT": certs.dir + "/none.crt", "TERN_BOUNCE_TLS_KEY": leaf.key],
             "TERN_BOUNCE_TLS_CERT"),
        ]
        for (values, variable) in cases {
            let env = Environment(base.merging(values) { a, _ in a })
            do {
                let settings = try BounceSettings(env, common: CommonSettings(env, role: "b"))
                _ = try settings.loadTLS()
                Issue.record("\(values) was accepted")
            } catch let error as ConfigError {
                #expect(error.variable == variable, "\(error)")
            }
        }
    }
}
