// The intake path's own trimming against Foundation's, which it replaced.

import Foundation
import Testing
@testable import TernMail
import TernTestSupport

@Suite struct TrimmingTests {
    @Test func trimsWhatFoundationsWhitespacesTrims() {
        let pieces = [" ", "\t", "\u{00A0}", "\u{3000}", "\u{2003}", "\u{200B}", "\n", "\r",
                      "a", "é", "e\u{0301}", "日", "😀", "\u{0301}", "<x@y>", "\"", ""]
        var rng = SeededGenerator(state: 0x7517)
        var samples = ["", " ", "  a b  ", "\t\u{00A0}name\u{3000}", "\n a \n", "\u{200B}x"]
        for _ in 0..<2000 {
            samples.append((0..<Int.random(in: 0...6, using: &rng))
                .map { _ in pieces.randomElement(using: &rng)! }.joined())
        }
        for s in samples {
            let expected = s.trimmingCharacters(in: .whitespaces)
            #expect(s.trimmingSpaces() == expected, "\(s.debugDescription)")
            // NUL on each side: a control character is a grapheme of its own, whatever
            // combining mark follows it.
            let inner = ("\u{0}" + s + "\u{0}").dropFirst().dropLast()
            #expect(inner.trimmingSpaces() == expected, "\(s.debugDescription)")
        }
    }
}
