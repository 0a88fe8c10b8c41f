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

    @Test func anOptionsValueIsTakenWhateverItIs() async throws {
        // Past the parser the command wants Redis, which here does not answer: 69, not help.
        let env = try file("TERN_REDIS_URL=redis://127.0.0.1:1\n")
        defer { try? FileManager.default.removeItem(atPath: env) }
        let (code, io) = await run(["pause", "org", "acme", "--reason", "--help",
                                    "--env-file", env])
        #expect(code == 69)
        #expect(!io.out.contains("usage:"))
        #expect(await run(["pause", "org", "acme", "--env-file", env, "--help"]).0 == 0)
        #expect(await run(["pause", "-h"]).1.out.hasPrefix("usage: ternctl pause"))
        // After `--` a --help is an operand.
        #expect(await run(["message", "--env-file", env, "--", "--help"]).0 == 64)
    }

    @Test func pauseNamesAndReasonsAreCheckedBeforeTouchingRedis() async throws {
        let env = try file("TERN_REDIS_URL=redis://127.0.0.1:1\nTERN_POOLS=default=*/a.example\n")
        defer { try? FileManager.default.removeItem(atPath: env) }
        for operands in [["provider", "nosuchprovider"], ["pool", "nosuchpool"],
                         ["pool", "Default"], ["group", "a:b:c"], ["group", "default:a:b"],
                         ["org", ""]] {
            let (code, io) = await run(["pause"] + operands + ["--env-file", env])
            #expect(code == 64, "\(operands)")
            #expect(io.err.contains("NAME"), "\(operands)")
        }
        for reason in ["a\nb", "\u{1B}[31m", "a\u{0}", "a\u{202E}b",
                       String(repeating: "x", count: 501)] {
            let (code, io) = await run(["pause", "org", "acme", "--reason", reason,
                                        "--env-file", env])
            #expect(code == 64 && io.err.contains("--reason"), "\(reason.debugDescription)")
        }
        // Well formed and known: it gets as far as Redis.
        for operands in [["provider", "GMAIL"], ["group", "default:GMAIL.COM."]] {
            #expect(await run(["pause"] + operands + ["--env-file", env]).0 == 69)
        }
    }

    @Test func textFromRedisIsPrintedWithItsControlsEscaped() {
        #expect(printable("plain Ünïcode") == "plain Ünïcode")
        #expect(printable("a\r\nb\u{1B}[2J\u{0}") == #"a\x0d\x0ab\x1b[2J\x00"#)
        #expect(printable("x\u{7F}\u{9B}\u{202E}") == #"x\x7f\x9b\u202e"#)
        let rows = table(["name", "reason"], [["a", "x\ny"]])
        #expect(rows == ["name  reason", #"a     x\x0ay"#])
    }

    @Test func everyCommandsHelpSaysItsExitStatus() async {
        for command in TernCtl.commands {
            let help = await run([command.name, "--help"]).1.out
            #expect(help.contains("Exit status:"), "\(command.name)")
        }
        let config = await run(["config", "--help"]).1.out
        #expect(config.contains("78"))
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
        // The blocklist file is the reputation monitor's alone: not checked for the sender.
        let files = report["files"] as? [[String: Any]] ?? []
        #expect(files.map { $0["setting"] as? String }
                == ["TERN_POOLS", "TERN_DKIM_KEYS", "TERN_ORG_CAPS"])
        #expect(io.out.contains("TERN_DNSBL_FILE \(dnsbl): WRONG: "))
    }
}
