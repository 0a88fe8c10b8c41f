// A batch's answer written by hand (`BatchResult.json`) against what JSONSerialization wrote
// for the same results before: the same bytes for printable text, the same values once read
// back whatever the text (quotes, backslashes, controls, non-ASCII, slashes).

import Foundation
import Testing
@testable import TernAPI

@Suite struct BatchResultTests {
    static let pieces = ["", "a", "\"", "\\", "/", "\u{00}", "\u{1F}", "\n", "\t", "\u{7F}",
                         "é", "e\u{301}", "𝄞", "\u{2028}", "messages[3].to", " ", "}"]

    static func text(_ state: inout UInt64) -> String {
        func random(_ n: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(n))
        }
        return (0..<random(5)).map { _ in pieces[random(pieces.count)] }.joined()
    }

    @Test func theHandWrittenAnswerIsWhatJSONSerializationWrote() throws {
        var state: UInt64 = 9457
        for n in 0..<2000 {
            let result: BatchResult = n % 3 == 0
                ? .accepted(index: n, id: Self.text(&state))
                : .refused(index: n, status: 400 + n % 30, field: Self.text(&state),
                           detail: Self.text(&state))
            let old = try JSONSerialization.data(
                withJSONObject: result.object, options: [.sortedKeys, .withoutEscapingSlashes])
            let oldText = String(decoding: old, as: UTF8.self)
            let read = try JSONSerialization.jsonObject(with: Data(result.json.utf8))
            #expect((read as? NSDictionary) == (result.object as NSDictionary), "\(result.json)")
            // Control characters may be escaped in other spellings (\n or \u000a).
            let strings = result.object.values.compactMap { $0 as? String }
            if strings.allSatisfy({ !$0.unicodeScalars.contains { $0.value < 0x20 } }) {
                #expect(result.json == oldText)
            }
        }
    }
}
