import Foundation
import Testing
@testable import TernCtl

@Suite struct ProvidersCommandTests {
    func run(_ arguments: [String]) async -> (Int32, CtlOutput) {
        let io = CtlOutput(echo: false)
        return (await TernCtl.main(arguments, io: io), io)
    }

    func file(_ json: String) throws -> String {
        let path = NSTemporaryDirectory() + "tern-providers-\(UUID().uuidString).json"
        try Data(json.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func checkSaysWhatAFileChangesOrWhatIsWrongWhere() async throws {
        let good = try file(#"{"providers": [{"name": "gmail", "messagesPerMinute": 50},"#
            + #"{"name": "fastmail", "domains": ["fastmail.com"], "messagesPerMinute": 30,"#
            + #""connectionsPerIP": 2, "messagesPerConnection": 10}]}"#)
        defer { try? FileManager.default.removeItem(atPath: good) }
        let (ok, out) = await run(["providers", "check", good])
        #expect(ok == 0)
        #expect(out.out == "\(good): accepted; changes gmail; adds fastmail\n")

        let bad = try file(#"{"providers": [{"name": "gmail", "messagesPerMinute": "x"}]}"#)
        defer { try? FileManager.default.removeItem(atPath: bad) }
        let (failed, err) = await run(["providers", "check", bad])
        #expect(failed == 1)
        #expect(err.err == "ternctl: \(bad): providers[0] (gmail).messagesPerMinute: wrong type\n")
        #expect(await run(["providers", "check"]).0 == 64)
        // A file that is not there is an input that cannot be read (66), as for classify.
        let (missing, io) = await run(["providers", "check", "/nonexistent/providers.json"])
        #expect(missing == 66)
        #expect(io.err.contains("cannot read /nonexistent/providers.json"))
    }

    @Test func matchAndListShowTheProfiles() async throws {
        let (code, io) = await run(["providers", "match", "company.example", "aspmx.l.google.com"])
        #expect(code == 0)
        #expect(io.out == "company.example: gmail (by its MX hosts), 100/min per IP\n")
        #expect(await run(["providers", "match", "hotmail.com"]).1.out
                == "hotmail.com: microsoft (by its name), 80/min per IP\n")
        let (listed, list) = await run(["providers", "list", "--json"])
        #expect(listed == 0)
        let json = try JSONSerialization.jsonObject(with: Data(list.out.utf8)) as? [String: Any]
        #expect((json?["providers"] as? [[String: Any]])?.count == 13)
    }
}
