// The keys file of TERN_DKIM_KEYS, read from real files: the format, relative and absolute
// key paths, lookups, every refusal naming the file and the line, and signing on many threads.

import Foundation
import Synchronization
import Testing
import TernCore
@testable import TernMail

@Suite struct DKIMKeysTests {
    /// A fresh folder holding the test keys as rsa.pem and ed.pem.
    func folder() async throws -> String {
        let dir = NSTemporaryDirectory() + "tern-dkim-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let rsa = try await TestKeys.shared.pair("rsa")
        let ed = try await TestKeys.shared.pair("ed25519")
        try Data(rsa.pem).write(to: URL(fileURLWithPath: dir + "/rsa.pem"))
        try Data(ed.pem).write(to: URL(fileURLWithPath: dir + "/ed.pem"))
        return dir
    }

    func write(_ text: String, in dir: String, name: String = "keys") throws -> String {
        let path = dir + "/" + name
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// The error loading `text` as a keys file gives, or nil when it loads.
    func loadError(_ text: String, in dir: String) throws -> DKIMKeyFileError? {
        let path = try write(text, in: dir)
        do throws(DKIMKeyFileError) {
            _ = try DKIMKeyTable.load(path: path)
            return nil
        } catch {
            return error
        }
    }

    @Test func readsTheFormat() async throws {
        let dir = try await folder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = try write("""
            # domain selector algorithm key
            Example.COM  s1   RSA-SHA256   rsa.pem   # relative to this file
            example.com\ts2\ted25519-sha256\t\(dir)/ed.pem

            *.example.org  w  ed25519-sha256  ed.pem
            """, in: dir)
        let table = try DKIMKeyTable.load(path: path)
        #expect(table.allKeys.count == 3)
        let keys = table.keys(for: "example.com")
        #expect(keys.map(\.selector) == ["s1", "s2"])
        #expect(keys.map(\.algorithm) == [.rsaSHA256, .ed25519SHA256])
        #expect(keys.first?.key.kind == .rsa(bits: 2048))
        #expect(table.keys(for: "a.b.example.org").map(\.domain) == ["example.org"])
        #expect(table.keys(for: "example.net").isEmpty)
        #expect(!table.isEmpty && DKIMKeyTable.empty.isEmpty)
    }

    @Test func refusalsNameFileAndLine() async throws {
        let dir = try await folder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ok = "example.com s1 rsa-sha256 rsa.pem\n"
        let cases: [(String, String)] = [
            ("example.com s1 rsa-sha256", "expected 4 fields"),
            ("example.com s1 rsa-sha1 rsa.pem", "is not rsa-sha256 or ed25519-sha256"),
            ("exa_mple.com s1 rsa-sha256 rsa.pem", "is not a domain"),
            ("bücher.example s1 rsa-sha256 rsa.pem", "xn-- form"),
            ("example.com s_1 rsa-sha256 rsa.pem", "is not a selector"),
            ("example.com s2 rsa-sha256 missing.pem", "\(dir)/missing.pem does not exist"),
            ("example.com s2 rsa-sha256 \(dir)", "is a folder"),
            ("example.com s2 ed25519-sha256 rsa.pem", "is an RSA key; its algorithm is "
                + "rsa-sha256"),
            ("example.com s2 rsa-sha256 ed.pem", "is an Ed25519 key"),
            ("example.com s1 ed25519-sha256 ed.pem", "selector s1 is listed twice"),
            ("example.com s2 rsa-sha256 keys", "not a PEM private key"),
        ]
        for (line, problem) in cases {
            let error = try #require(try loadError(ok + "# comment\n" + line + "\n", in: dir),
                                     "\(line)")
            #expect(error.line == 3, "\(line)")
            #expect(error.file == dir + "/keys")
            #expect(error.description.hasPrefix(dir + "/keys line 3: "), "\(error)")
            #expect(error.problem.contains(problem), "\(error.problem)")
        }
    }

    @Test func missingKeysFile() throws {
        do throws(DKIMKeyFileError) {
            _ = try DKIMKeyTable.load(path: "/nonexistent/tern/keys")
            Issue.record("loaded a file that does not exist")
        } catch {
            #expect(error.description == "/nonexistent/tern/keys: /nonexistent/tern/keys does "
                    + "not exist")
        }
    }

    @Test func refusesShortRSAAndEncryptedKeys() async throws {
        let dir = try await folder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let short = try await TestKeys.generate("rsa512")
        try Data(short.pem).write(to: URL(fileURLWithPath: dir + "/short.pem"))
        let error = try #require(try loadError("example.com s rsa-sha256 short.pem", in: dir))
        #expect(error.problem.contains("a 512-bit RSA key is too short"), "\(error)")

        let (status, encrypted) = try await runTool(
            ["openssl", "genpkey", "-algorithm", "ED25519", "-aes256", "-pass", "pass:secret"])
        #expect(status == 0)
        try Data(encrypted).write(to: URL(fileURLWithPath: dir + "/locked.pem"))
        let locked = try #require(try loadError("example.com s ed25519-sha256 locked.pem",
                                                in: dir))
        #expect(locked.problem.contains("not a PEM private key without a pass phrase"),
                "\(locked)")
    }

    @Test func rsa1024IsAccepted() async throws {
        let pair = try await TestKeys.shared.pair("rsa1024")
        let key = try SigningKey(pem: pair.pem)
        #expect(key.kind == .rsa(bits: 1024))
        #expect(key.sign(Array("x".utf8)).count == 128)
    }

    /// Signatures made on many threads at once with one key (which hands prepared contexts
    /// between them) are the ones made one by one, and verify.
    @Test func oneKeySignsOnManyThreadsAtOnce() async throws {
        let pair = try await TestKeys.shared.pair("rsa")
        let key = try SigningKey(pem: pair.pem)
        let verifier = try #require(VerifyingKey(rsaDER: key.publicKey))
        let messages = (0..<48).map { Array("message \($0)\r\n".utf8) }
        let alone = messages.map { key.sign($0) }
        let together = Mutex<[Int: [UInt8]]>([:])
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                DispatchQueue.concurrentPerform(iterations: messages.count) { i in
                    let signature = key.sign(messages[i])
                    together.withLock { $0[i] = signature }
                }
                done.resume()
            }
        }
        let signed = together.withLock { $0 }
        #expect(signed.count == messages.count)
        for (i, message) in messages.enumerated() {
            #expect(signed[i] == alone[i])
            #expect(verifier.verify(alone[i], of: message))
        }
        #expect(!verifier.verify(alone[0], of: messages[1]))
    }
}
