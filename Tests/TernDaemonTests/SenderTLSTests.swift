// The sender's STARTTLS against the test world's tls.example (aiosmtpd with STARTTLS and a
// self-signed certificate): what the results entry records under each policy, and what
// the MX host saw.

import Foundation
import Testing
import TernCore
import TernMail
import TernSender

@Suite(.serialized) struct SenderTLSTests {
    static func tag() -> String { String(UUID().uuidString.prefix(8)).lowercased() }

    @Test func requiredTLSWithTheWorldsCertificateTrustedIsVerified() async throws {
        let h = try await SenderHarness(env: ["TERN_TLS_POLICY_DOMAINS": "tls.example=required"],
                                        trustWorld: true)
        let rcpt = "v+\(Self.tag())@tls.example"
        let id = try await h.submit(to: rcpt)
        let r = try await h.result(id)
        #expect(r["outcome"] == "delivered", "\(r)")
        #expect(r["tls_version"] == "TLSv1.3" && r["tls_verified"] == "yes")
        #expect(Int(r["tls_ms"] ?? "") ?? -1 >= 0 && r["reused"] == "no", "\(r)")
        #expect(r["tls_cipher"]?.hasPrefix("TLS_") == true)
        #expect(r["tls"] == "TLSv1.3 " + (r["tls_cipher"] ?? ""))
        let spooled = try #require(h.world.spooled(for: rcpt).first)
        #expect(spooled["tls"] == r["tls"])
        // The EHLO after STARTTLS is what the host kept.
        #expect(spooled["helo"] == "out1.tern.example")
        let line = h.logs.records.first { $0.message == "attempt delivered" }
        #expect(line?.fields["tls"] == r["tls"])
        await h.stop()
    }

    @Test func opportunisticEncryptsWithACertificateItCannotVerify() async throws {
        // Default policy, system trust store: the world's self-signed certificate is unknown.
        let h = try await SenderHarness()
        let rcpt = "o+\(Self.tag())@tls.example"
        let id = try await h.submit(to: rcpt)
        let r = try await h.result(id)
        #expect(r["outcome"] == "delivered", "\(r)")
        #expect(r["tls_version"] == "TLSv1.3" && r["tls_verified"] == "no")
        #expect(h.world.spooled(for: rcpt).first?["tls"]?.hasPrefix("TLSv1.3") == true)

        // A host without STARTTLS gets the message in clear, with empty TLS fields.
        let plain = try await h.submit(to: "p+\(Self.tag())@inbox.example")
        let p = try await h.result(plain)
        #expect(p["outcome"] == "delivered" && p["tls"] == "")
        #expect(p["tls_version"] == "" && p["tls_cipher"] == "" && p["tls_verified"] == "")
        await h.stop()
    }

    @Test func requiredDefersWhenTheCertificateDoesNotVerifyOrTLSIsNotOffered() async throws {
        let h = try await SenderHarness(env: [
            "TERN_TLS_POLICY": "required", "TERN_TLS_POLICY_DOMAINS": "nomx.example=disabled",
        ])
        let id = try await h.submit(to: "r+\(Self.tag())@tls.example")
        let r = try await h.result(id)
        #expect(r["outcome"] == "deferred" && r["stage"] == "tls", "\(r)")
        #expect(r["code"] == "0" && r["enhanced"] == "4.7.5")
        #expect(r["reply"] == "TLS is required for this destination and the certificate of "
                + "mx.tls.example did not verify: self-signed certificate")
        #expect(r["tls_verified"] == "no")

        let plain = try await h.submit(to: "r+\(Self.tag())@inbox.example")
        let p = try await h.result(plain)
        #expect(p["outcome"] == "deferred" && p["stage"] == "tls" && p["enhanced"] == "4.7.10")
        #expect(p["reply"] == "TLS is required for this destination and mx1.inbox.example "
                + "does not offer STARTTLS")
        #expect(h.world.spooled().isEmpty)

        // A domain set to disabled goes in clear even under a required default.
        let off = try await h.submit(to: "d+\(Self.tag())@nomx.example")
        #expect(try await h.result(off)["outcome"] == "delivered")
        await h.stop()
    }

    @Test func disabledSendsInClearToATLSHost() async throws {
        let h = try await SenderHarness(env: ["TERN_TLS_POLICY": "disabled"])
        let rcpt = "c+\(Self.tag())@tls.example"
        let id = try await h.submit(to: rcpt)
        let r = try await h.result(id)
        #expect(r["outcome"] == "delivered" && r["tls"] == "")
        let spooled = try #require(h.world.spooled(for: rcpt).first)
        #expect(spooled.meta["tls"] is NSNull)
        await h.stop()
    }

    @Test func badTLSSettingsAreConfigurationErrors() throws {
        let common = try CommonSettings(Environment([:]), role: "sender")
        let base = ["TERN_VERP_DOMAIN": "bounces.tern.example",
                    "TERN_VERP_SECRET": SenderHarness.secret]
        for (name, value) in [("TERN_TLS_POLICY", "sometimes"),
                              ("TERN_TLS_POLICY_DOMAINS", "example.com:required"),
                              ("TERN_TLS_FALLBACK_TTL", "soon")] {
            do {
                _ = try SenderSettings(Environment(base.merging([name: value]) { a, _ in a }),
                                       common: common)
                Issue.record("\(name)=\(value) was accepted")
            } catch let error as ConfigError {
                #expect(error.variable == name)
            }
        }
        let settings = try SenderSettings(
            Environment(base.merging(["TERN_TLS_CA_FILE": "/nonexistent/ca.pem"]) { a, _ in a }),
            common: common)
        #expect(throws: ConfigError.self) { _ = try settings.clientTLS() }
    }
}
