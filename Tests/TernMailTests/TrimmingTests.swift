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

/// MailboxList's one-pass unfolding against the two replacements it replaced: each CRLF
/// before SP or HTAB removed, and any CR or LF left refusing the field.
@Suite struct UnfoldingTests {
    @Test func unfoldsAsTheReplacementsDid() {
        let pieces = ["\r\n ", "\r\n\t", "\r\n", "\r", "\n", " ", "\t", "\r\r\n ", "\n\r ",
                      "a@b.example", "A <a@b.example>", ",", "\"x\r\n y\"", "(c)", "é"]
        var rng = SeededGenerator(state: 0x5322)
        for _ in 0..<3000 {
            let value = (0..<Int.random(in: 0...6, using: &rng))
                .map { _ in pieces.randomElement(using: &rng)! }.joined()
            let unfolded = value.replacingOccurrences(of: "\r\n ", with: " ")
                .replacingOccurrences(of: "\r\n\t", with: "\t")
            let expected = unfolded.unicodeScalars.contains { $0 == "\r" || $0 == "\n" }
                ? nil : MailboxList.parse(unfolded)
            #expect(MailboxList.parse(value) == expected, "\(value.debugDescription)")
        }
    }
}
