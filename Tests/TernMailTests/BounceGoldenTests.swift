// The golden bounces: every sample message in Tests/Fixtures/bounces is classified and
// compared, record by record and field by field, with the JSON lines written beside it.
// The samples are invented (.example domains) in the shapes RFC 3464/5965 and the common
// MTAs and mailbox providers use; docs/bounces.md lists what each kind means.

import Foundation
import Testing
import TernMail

@Suite struct BounceGoldenTests {
    /// The key the samples' VERP addresses were signed with.
    static let verp = VERP(secret: Array(repeating: 7, count: 16), domain: "bounces.tern.example")

    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/bounces")

    static var samples: [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return names.filter { $0.hasSuffix(".eml") }.map { String($0.dropLast(4)) }.sorted()
    }

    static func load(_ name: String) throws -> ([UInt8], [[String: String]]) {
        let message = try Data(contentsOf: folder.appendingPathComponent(name + ".eml"))
        let expected = try String(contentsOf: folder.appendingPathComponent(name + ".json"),
                                  encoding: .utf8)
        return (Array(message), try expected.split(separator: "\n").map(object))
    }

    static func object(_ line: some StringProtocol) throws -> [String: String] {
        let any = try JSONSerialization.jsonObject(with: Data(line.utf8))
        return try #require(any as? [String: String])
    }

    @Test func thereAreEnoughSamples() {
        #expect(Self.samples.count >= 40)
    }

    @Test(arguments: samples) func sample(_ name: String) throws {
        let (message, expected) = try Self.load(name)
        let records = BounceClassifier(verp: Self.verp).classify(message)
        let got = try records.map { try Self.object($0.json) }
        #expect(got.count == expected.count, "\(name): record count")
        for (g, e) in zip(got, expected) {
            for key in Set(g.keys).union(e.keys).sorted() where g[key] != e[key] {
                Issue.record("\(name): \(key) is \(g[key] ?? "nil"), expected \(e[key] ?? "nil")")
            }
        }
    }

    /// The share of samples classified exactly right, printed for the record.
    @Test func shareExactlyRight() throws {
        var right = 0
        for name in Self.samples {
            let (message, expected) = try Self.load(name)
            let got = try BounceClassifier(verp: Self.verp).classify(message)
                .map { try Self.object($0.json) }
            if got == expected { right += 1 }
        }
        let total = Self.samples.count
        print("golden bounces: \(right) of \(total) classified exactly right")
        #expect(right == total)
    }

    /// Cut short anywhere, a sample still gives records and no crash: bounces arrive
    /// truncated by size limits.
    @Test func everyTruncationOfEverySampleIsHandled() throws {
        let classifier = BounceClassifier(verp: Self.verp)
        for name in Self.samples {
            let (message, _) = try Self.load(name)
            for end in stride(from: 0, to: message.count, by: max(1, message.count / 40)) {
                #expect(!classifier.classify(Array(message[..<end])).isEmpty, "\(name) at \(end)")
            }
        }
    }
}
