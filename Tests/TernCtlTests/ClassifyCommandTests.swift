// ternctl's command table and `ternctl classify`, run in-process with captured output.

import Foundation
import Testing
import TernCore
import TernCtl
import TernMail

@Suite struct ClassifyCommandTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/bounces").path

    func run(_ arguments: [String]) async -> (Int32, CtlOutput) {
        let io = CtlOutput(echo: false)
        return (await TernCtl.main(arguments, io: io), io)
    }

    func objects(_ text: String) throws -> [[String: String]] {
        try text.split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: String])
        }
    }

    @Test func helpListsTheCommands() async {
        let (code, io) = await run(["--help"])
        #expect(code == 0)
        #expect(io.out.contains("classify"))
        let (sub, subIO) = await run(["classify", "--help"])
        #expect(sub == 0)
        #expect(subIO.out.contains("--verp-secret"))
    }

    @Test func badUsageExits64() async {
        #expect(await run([]).0 == 64)
        let (unknown, io) = await run(["frobnicate"])
        #expect(unknown == 64)
        #expect(io.err.contains("unknown command 'frobnicate'"))
        let (option, optionIO) = await run(["classify", "--bogus"])
        #expect(option == 64)
        #expect(optionIO.err.contains("unknown option --bogus"))
        #expect(await run(["classify", "--verp-domain"]).0 == 64)
        #expect(await run(["classify", "--verp-domain", "b.example", "--verp-secret", "abc"]).0
                == 64)
    }

    @Test func classifiesFilesOneLinePerRecipient() async throws {
        let files = ["dsn-two-recipients", "arf-abuse"].map { "\(Self.fixtures)/\($0).eml" }
        let (code, io) = await run(["classify", "--verp-domain", "bounces.tern.example",
                              "--verp-secret", String(repeating: "07", count: 16)] + files)
        #expect(code == 0)
        let lines = try objects(io.out)
        #expect(lines.map { $0["kind"] } == ["bounce", "delay", "complaint"])
        #expect(lines.map { $0["file"] } == [files[0], files[0], files[1]])
        #expect(lines.allSatisfy { $0["id_source"] == "verp" })
    }

    @Test func withoutAKeyIdsAreMarkedUnverified() async throws {
        let (code, io) = await run(["classify", "\(Self.fixtures)/dsn-postfix-user-unknown.eml"])
        #expect(code == 0)
        let line = try #require(try objects(io.out).first)
        #expect(line["id_source"] == "verp-unverified")
        #expect(line["reason"] == "user-unknown")
        #expect(line["file"] == nil)
    }

    @Test func envelopeRecipientNamesTheMessage() async throws {
        let verp = VERP(secret: Array(repeating: 7, count: 16), domain: "bounces.tern.example")
        let id = MessageID.generate()
        let path = NSTemporaryDirectory() + "ternctl-\(UUID().uuidString).eml"
        try Data("Subject: Out of office\r\nAuto-Submitted: auto-replied\r\n\r\nAway\r\n".utf8)
            .write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (code, io) = await run(["classify", "--rcpt", verp.address(for: id), "--verp-domain",
                              "bounces.tern.example", "--verp-secret=" + String(repeating: "07",
                                                                                 count: 16), path])
        #expect(code == 0)
        let line = try #require(try objects(io.out).first)
        #expect(line["message_id"] == id)
        #expect(line["kind"] == "auto-reply")
    }

    @Test func unreadableFileExits66AndGoesOn() async throws {
        let (code, io) = await run(["classify", "/nonexistent/x.eml",
                              "\(Self.fixtures)/arf-fraud.eml"])
        #expect(code == 66)
        #expect(io.err.contains("cannot read /nonexistent/x.eml"))
        #expect(try objects(io.out).first?["reason"] == "fraud")
    }
}
