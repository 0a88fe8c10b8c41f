// DKIM in the API daemon: a message whose From domain has keys is stored signed (JSON and
// raw alike), one without is stored unsigned, and each is counted; a bad TERN_DKIM_KEYS stops
// the daemon at start naming the file and the line. dkimpy checks the stored signatures in
// e2e/test_dkim.py; the signer's own tests are in TernMailTests.

import Foundation
import Testing
import TernCore
import TernMail
@testable import TernAPI

@Suite struct APIDKIMTests {
    /// A folder with an RSA and an Ed25519 key from `openssl genpkey` and a keys file for
    /// tern.example; returns the keys file's path.
    static func keysFile() async throws -> String {
        let dir = NSTemporaryDirectory() + "tern-api-dkim-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (name, options) in [("rsa.pem", ["-algorithm", "RSA", "-pkeyopt",
                                             "rsa_keygen_bits:2048"]),
                                ("ed.pem", ["-algorithm", "ED25519"])] {
            let status = try await run(["openssl", "genpkey", "-out", dir + "/" + name]
                                       + options)
            #expect(status == 0)
        }
        let path = dir + "/keys"
        try Data("""
            tern.example  r1  rsa-sha256      rsa.pem
            tern.example  e1  ed25519-sha256  ed.pem
            """.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Runs a program on its own thread (waiting blocks) and returns its exit status.
    static func run(_ arguments: [String]) async throws -> Int32 {
        try await withCheckedThrowingContinuation { continuation in
            Thread {
                do {
                    let process = Process()
                    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
                    process.arguments = arguments
                    process.standardError = FileHandle.nullDevice
                    try process.run()
                    process.waitUntilExit()
                    continuation.resume(returning: process.terminationStatus)
                } catch {
                    continuation.resume(throwing: error)
                }
            }.start()
        }
    }

    /// RFC 9477: with TERN_CFBL_ADDRESS the stored message carries both CFBL fields, and
    /// the DKIM signatures cover them (h=), as providers require.
    @Test func cfblFieldsAreAddedAndSigned() async throws {
        let path = try await APIDKIMTests.keysFile()
        defer { try? FileManager.default.removeItem(
            atPath: (path as NSString).deletingLastPathComponent) }
        let secret = String(repeating: "5a", count: 32)
        let h = try await APIDaemonTests.Harness(env: [
            "TERN_DKIM_KEYS": path, "TERN_CFBL_ADDRESS": "fbl@tern.example",
            "TERN_VERP_DOMAIN": "bounces.tern.example", "TERN_VERP_SECRET": secret])
        let reply = try await h.post(APIDaemonTests.valid())
        #expect(reply.status == 202, "\(reply.text)")
        let id = try #require(reply.json["id"] as? String)
        let body = try await h.redis.run("HGET", h.keys.message(id), "body").string ?? ""
        let verp = VERP(secret: Crypto.bytes(hex: secret)!, domain: "bounces.tern.example")
        #expect(body.contains("\r\nCFBL-Address: fbl@tern.example; report=arf\r\n"))
        #expect(body.contains("\r\nCFBL-Feedback-ID: \(id):\(verp.tag(for: id))\r\n"))
        let signatures = body.components(separatedBy: "DKIM-Signature:").dropFirst()
        #expect(signatures.count == 2)
        for signature in signatures {
            let unfolded = signature.filter { !$0.isWhitespace }
            let list = unfolded.components(separatedBy: ";h=").dropFirst().first ?? ""
            #expect(list.contains("cfbl-address:cfbl-feedback-id"), "\(list.prefix(200))")
        }
        // A client may not write them itself.
        let own = try await h.post(APIDaemonTests.valid(["headers": ["CFBL-Address": "x@y.z"]]))
        #expect(own.status == 422)
        await h.stop()
    }

    @Test func messagesAreStoredSignedAndCounted() async throws {
        let path = try await APIDKIMTests.keysFile()
        defer { try? FileManager.default.removeItem(
            atPath: (path as NSString).deletingLastPathComponent) }
        let h = try await APIDaemonTests.Harness(env: ["TERN_DKIM_KEYS": path])

        func storedBody(_ json: [String: Any]) async throws -> String {
            let reply = try await h.post(json)
            #expect(reply.status == 202, "\(reply.text)")
            let id = try #require(reply.json["id"] as? String)
            return try await h.redis.run("HGET", h.keys.message(id), "body").string ?? ""
        }

        let built = try await storedBody(APIDaemonTests.valid())
        #expect(built.hasPrefix("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; "
                                + "d=tern.example; s=r1;\r\n t="))
        let signatures = built.components(separatedBy: "\r\nDKIM-Signature: v=1; ")
        #expect(signatures.count == 2)
        #expect(signatures.last?.hasPrefix("a=ed25519-sha256;") == true)
        #expect(built.contains("Subject: hello\r\n"))

        let raw = "From: Tern <news@tern.example>\r\nTo: a@inbox.example\r\nSubject: raw\r\n"
            + "\r\nHi\r\n"
        let signedRaw = try await storedBody(["from": "sender@tern.example",
                                              "to": "a@inbox.example", "raw": raw])
        #expect(signedRaw.hasPrefix("DKIM-Signature: "))
        #expect(signedRaw.hasSuffix(raw))

        // The From header decides, not the envelope sender.
        let other = "From: news@other.example\r\nTo: a@inbox.example\r\n\r\nHi\r\n"
        let unsigned = try await storedBody(["from": "sender@tern.example",
                                             "to": "a@inbox.example", "raw": other])
        #expect(unsigned.hasSuffix(other) && !unsigned.contains("DKIM-Signature"))

        let counters = try await h.redis.run("HGETALL", h.keys.counters).fieldMap
        #expect(counters["dkim.signed"] == "2")
        #expect(counters["dkim.unsigned"] == "1")
        let skipped = h.logs.records.filter { $0.message.hasPrefix("no dkim key") }
        #expect(skipped.count == 1 && skipped.first?.level == .debug)
        #expect(skipped.first?.fields["from_domain"] == "other.example")
        // Each key is logged at start with the record to publish.
        let loaded = h.logs.records.filter { $0.message == "dkim key" }
        #expect(loaded.map { $0.fields["dns_name"] ?? "" }.sorted()
                == ["e1._domainkey.tern.example", "r1._domainkey.tern.example"])
        #expect(loaded.allSatisfy { $0.fields["record"]?.hasPrefix("v=DKIM1; k=") == true })
        await h.stop()
    }

    @Test func badKeysFileIsAConfigurationErrorNamingFileAndLine() async throws {
        let path = try await APIDKIMTests.keysFile()
        defer { try? FileManager.default.removeItem(
            atPath: (path as NSString).deletingLastPathComponent) }
        try Data("tern.example r1 rsa-sha256 rsa.pem\ntern.example e1 ed25519-sha256 gone.pem\n"
            .utf8).write(to: URL(fileURLWithPath: path))
        for (file, expected) in [(path, path + " line 2: "), ("/nonexistent/keys",
                                                              "/nonexistent/keys: ")] {
            let env = Environment(["TERN_API_KEYS": "k", "TERN_DKIM_KEYS": file])
            do {
                _ = try APISettings(env, common: CommonSettings(env, role: "api"))
                Issue.record("\(file) was accepted")
            } catch let error as ConfigError {
                #expect(error.variable == "TERN_DKIM_KEYS")
                #expect(error.problem.hasPrefix(expected), "\(error)")
            }
        }
    }
}
