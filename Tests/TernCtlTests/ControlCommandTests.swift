// ternctl's commands for the running system, in-process where they need no daemon: every
// command's help, usage errors, the environment file, and `config check` on broken files.
// Against a running system they are tested end to end (e2e/test_ternctl.py).

import Foundation
import Testing
@testable import TernCtl

@Suite struct ControlCommandTests {
    func run(_ arguments: [String]) async -> (Int32, CtlOutput) {
        let io = CtlOutput(echo: false)
        return (await TernCtl.main(arguments, io: io), io)
    }

    func file(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "tern-ctl-\(UUID().uuidString)"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func everyCommandHasHelpWithItsUsage() async {
        for command in TernCtl.commands {
            let (code, io) = await run([command.name, "--help"])
            #expect(code == 0)
            #expect(io.out.hasPrefix("usage: ternctl \(command.name)"))
            #expect(io.out.split(separator: "\n").allSatisfy { $0.count <= 100 })
        }
    }

    @Test func badUsageExits64BeforeTouchingRedis() async {
        #expect(await run(["pause", "planet", "x"]).0 == 64)
        #expect(await run(["pause", "group", "nocolon"]).0 == 64)
        #expect(await run(["cancel", "not-an-id"]).0 == 64)
        #expect(await run(["message"]).0 == 64)
        #expect(await run(["suppressions", "list", "Bad Org"]).0 == 64)
        #expect(await run(["config", "verify"]).0 == 64)
        #expect(await run(["config", "check", "--daemon", "mta"]).0 == 64)
        #expect(await run(["send-test"]).0 == 64)
    }

    @Test func redisThatDoesNotAnswerExits69() async throws {
        let env = try file("TERN_REDIS_URL=redis://127.0.0.1:1\n")
        defer { try? FileManager.default.removeItem(atPath: env) }
        let (code, io) = await run(["status", "--env-file", env])
        #expect(code == 69)
        #expect(io.err.contains("does not answer"))
    }

    @Test func environmentFilesAreReadAsSystemdReadsThem() throws {
        let path = try file("""
            # comment
            TERN_A=1

            TERN_B = "two words"
            TERN_C='x=y'
            """)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try EnvironmentFile.read(path) == ["TERN_A": "1", "TERN_B": "two words",
                                                   "TERN_C": "x=y"])
        let bad = try file("NOEQUALS\n")
        defer { try? FileManager.default.removeItem(atPath: bad) }
        #expect(throws: (any Error).self) { try EnvironmentFile.read(bad) }
    }

    @Test func configCheckNamesEachBrokenSettingAndFile() async throws {
        let keys = try file("tern.example sel rsa-sha256 /nonexistent/key.pem\n")
        let dnsbl = try file("[]")
        let env = try file("""
            TERN_API_KEYS=k
            TERN_POOLS=default=127.0.0.2/out1.example
            TERN_DKIM_KEYS=\(keys)
            TERN_DNSBL_FILE=\(dnsbl)
            TERN_DNS_RESOLVER=127.0.0.1:53
            TERN_VERP_DOMAIN=bounces.example
            TERN_VERP_SECRET=00112233445566778899aabbccddeeff
            TERN_ORG_CAPS=acme=lots
            """)
        defer { [keys, dnsbl, env].forEach { try? FileManager.default.removeItem(atPath: $0) } }
        let (code, io) = await run(["config", "check", "--env-file", env])
        #expect(code == 1)
        #expect(io.out.contains("api: WRONG: TERN_DKIM_KEYS: "))
        #expect(io.out.contains("scheduler: WRONG: TERN_ORG_CAPS: "))
        #expect(io.out.contains("TERN_DKIM_KEYS \(keys): WRONG: "))
        #expect(io.out.hasSuffix("configuration has problems\n"))
        let (_, only) = await run(["config", "check", "--env-file", env, "--daemon", "sender",
                                   "--json"])
        let report = try #require(try JSONSerialization.jsonObject(with: Data(only.out.utf8))
                                  as? [String: Any])
        let daemons = report["daemons"] as? [[String: Any]] ?? []
        #expect(daemons.map { $0["daemon"] as? String } == ["sender"])
        #expect(daemons.first?["ok"] as? Bool == true)
    }
}
