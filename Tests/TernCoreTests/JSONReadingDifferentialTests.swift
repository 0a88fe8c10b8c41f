// Tern's JSON reader against JSONSerialization on text made at random from a seed: valid
// documents with every kind of string content (escapes, raw non-ASCII, octets that look like
// a quote or backslash with the high bit set) at every alignment the eight-at-a-time string
// scan can meet, random number tokens, and random octets. What RFC 8259 allows both take as
// the same values; what the reader takes, JSONSerialization takes as the same values.

import Foundation
import Testing
@testable import TernCore
import TernTestSupport

@Suite struct JSONReadingDifferentialTests {
    /// Valid documents: both read them, to equal values of equal kinds.
    @Test func validDocumentsReadAsJSONSerializationReadsThem() throws {
        var rng = SeededGenerator(state: 0xD1FF_0001)
        var problems: [String] = []
        for _ in 0..<3000 {
            let text = Self.document(&rng)
            let bytes = Array(text.utf8)
            guard let expected = try? JSONSerialization.jsonObject(with: Data(bytes)) else {
                continue   // text JSONSerialization refuses is no reference
            }
            do {
                let read = try JSONReading.value(bytes)
                if let problem = Self.difference(read, expected) {
                    problems.append("\(text.debugDescription): \(problem)")
                }
            } catch {
                problems.append("\(text.debugDescription): refused (\(error))")
            }
        }
        #expect(problems.isEmpty, "\(problems.count): \(problems.prefix(5))")
    }

    /// Every special octet, and octets one bit away from one, at each lane of the scan and
    /// with the string starting at each alignment: the reader's string is the one made
    /// octet by octet, and its refusals are exactly where RFC 8259 refuses.
    @Test func everyOctetAtEveryLane() throws {
        let fill = Array("abcdefghijklmnopqrstuvwx".utf8)
        // Octets as they may appear inside a string (multi-octet characters whole).
        let probes: [[UInt8]] = (0..<0x20).map { [UInt8($0)] } + [
            [0x22], [0x5C], [0x7F], [0x21], [0x23], [0x5B], [0x5D], [0x20], [0x3F], [0x40],
            [0xC2, 0xA2], [0xC3, 0x9C], [0xDC, 0xA2], [0xC2, 0xA0], [0xC2, 0x80],
            [0xC2, 0x9F], [0xE3, 0x80, 0xA2], [0xF0, 0x9F, 0x98, 0x80], [0xEF, 0xBB, 0xBF],
        ]
        for lead in 0..<9 {
            for lane in 0..<17 {
                for probe in probes {
                    let content = Array(fill.prefix(lane)) + probe + fill
                    let bytes = Array(repeating: UInt8(ascii: " "), count: lead)
                        + Array("[\"".utf8) + content + Array("\"]".utf8)
                    let valid = !probe.contains { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }
                    let read = try? JSONReading.value(bytes)
                    if valid {
                        let expected = String(decoding: content, as: UTF8.self)
                        #expect((read as? [Any])?.first as? String == expected,
                                "\(probe) at lane \(lane), lead \(lead)")
                    } else {
                        #expect(read == nil, "\(probe) at lane \(lane), lead \(lead)")
                    }
                }
            }
        }
    }

    /// Random number tokens, valid or not: the reader takes exactly those that RFC 8259's
    /// grammar allows and JSONSerialization can hold, as JSONSerialization reads them.
    @Test func numbersAreJSONSerializations() throws {
        var rng = SeededGenerator(state: 0xD1FF_0002)
        let alphabet = Array("0123456789-+.eE".utf8)
        var problems: [String] = []
        for _ in 0..<20000 {
            let n = Int.random(in: 1...24, using: &rng)
            let token = String(decoding: (0..<n).map { _ in
                alphabet.randomElement(using: &rng)!
            }, as: UTF8.self)
            let text = "[" + token + "]"
            let grammar = Self.isRFCNumber(token)
            let expected = try? JSONSerialization.jsonObject(with: Data(text.utf8))
            let read = try? JSONReading.value(text)
            switch (read, expected) {
            case (nil, nil):
                break
            case (let r?, let e?):
                if !grammar { problems.append("\(token): taken, not RFC 8259") }
                if let d = Self.difference(r, e) { problems.append("\(token): \(d)") }
            case (nil, _?):
                if grammar { problems.append("\(token): refused, JSONSerialization takes it") }
            case (_?, nil):
                problems.append("\(token): taken, JSONSerialization refuses it")
            }
        }
        #expect(problems.isEmpty, "\(problems.count): \(problems.prefix(8))")
    }

    /// Random octets from JSON's alphabet and beyond: whatever the reader takes,
    /// JSONSerialization takes as the same value, and nothing traps or hangs.
    @Test func randomOctets() throws {
        var rng = SeededGenerator(state: 0xD1FF_0003)
        let alphabet = Array(#"{}[]":,\-+.0123456789eEtrufalsnu /bfAF"#.utf8)
            + [0x00, 0x09, 0x0A, 0x0D, 0x1F, 0x7F, 0x80, 0xBF, 0xC2, 0xC3, 0xED, 0xEF, 0xF0,
               0xF4, 0xF5, 0xFF, 0xA0, 0xBB]
        var problems: [String] = []
        for _ in 0..<30000 {
            let bytes = (0..<Int.random(in: 0...20, using: &rng)).map { _ in
                alphabet.randomElement(using: &rng)!
            }
            guard let read = try? JSONReading.value(bytes, fragments: true) else { continue }
            guard let expected = try? JSONSerialization.jsonObject(
                with: Data(bytes), options: .fragmentsAllowed)
            else {
                problems.append("\(bytes): taken, JSONSerialization refuses it")
                continue
            }
            if let d = Self.difference(read, expected) { problems.append("\(bytes): \(d)") }
        }
        #expect(problems.isEmpty, "\(problems.count): \(problems.prefix(8))")
    }

    // MARK: - Helpers

    /// RFC 8259 §6: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
    static func isRFCNumber(_ token: String) -> Bool {
        var s = Substring(token)
        func digits() -> Int {
            let d = s.prefix { $0.isASCII && $0.isNumber }
            s = s.dropFirst(d.count)
            return d.count
        }
        if s.first == "-" { s = s.dropFirst() }
        if s.first == "0" { s = s.dropFirst() } else {
            guard let f = s.first, ("1"..."9").contains(f) else { return false }
            _ = digits()
        }
        if s.first == "." {
            s = s.dropFirst()
            guard digits() > 0 else { return false }
        }
        if s.first == "e" || s.first == "E" {
            s = s.dropFirst()
            if s.first == "+" || s.first == "-" { s = s.dropFirst() }
            guard digits() > 0 else { return false }
        }
        return s.isEmpty
    }

    /// Why `read` is not `expected` (value or kind), nil when it is.
    static func difference(_ read: Any, _ expected: Any) -> String? {
        switch (read, expected) {
        case let (a as [String: Any], b as [String: Any]):
            guard a.keys.sorted() == b.keys.sorted() else {
                return "keys \(a.keys.sorted()) vs \(b.keys.sorted())"
            }
            for (k, v) in a { if let d = difference(v, b[k]!) { return "\(k): \(d)" } }
            return nil
        case let (a as [Any], b as [Any]):
            guard a.count == b.count else { return "\(a.count) items vs \(b.count)" }
            for (v, w) in zip(a, b) { if let d = difference(v, w) { return d } }
            return nil
        case let (a as String, b as String):
            return Array(a.unicodeScalars) == Array(b.unicodeScalars)
                ? nil : "\(a.debugDescription) vs \(b.debugDescription)"
        case let (a as NSNumber, b as NSNumber):
            let kinds = (String(cString: a.objCType), String(cString: b.objCType))
            guard kinds.0 == kinds.1, type(of: a) == type(of: b), a == b else {
                return "\(a) (\(kinds.0), \(type(of: a))) vs \(b) (\(kinds.1), \(type(of: b)))"
            }
            return nil
        case (is NSNull, is NSNull):
            return nil
        default:
            return "\(read) (\(type(of: read))) vs \(expected) (\(type(of: expected)))"
        }
    }

    /// A random document with random spacing, strings of any content (no U+FEFF, which
    /// JSONSerialization drops) and numbers of any RFC 8259 form that a double holds.
    /// (JSONSerialization takes {"a":1e400,"a":1}: its number is converted only if kept.)
    static func document(_ rng: inout SeededGenerator) -> String {
        func sp() -> String {
            (0..<Int.random(in: 0...2, using: &rng)).map { _ in
                [" ", "\t", "\n", "\r"].randomElement(using: &rng)!
            }.joined()
        }
        func digits(_ range: ClosedRange<Int>) -> String {
            String((0..<Int.random(in: range, using: &rng)).map { _ in
                "0123456789".randomElement(using: &rng)!
            })
        }
        func number() -> String {
            var s = Bool.random(using: &rng) ? "-" : ""
            s += Int.random(in: 0..<4, using: &rng) == 0
                ? "0" : String("123456789".randomElement(using: &rng)!) + digits(0...22)
            if Bool.random(using: &rng) { s += "." + digits(1...20) }
            if Int.random(in: 0..<3, using: &rng) == 0 {
                s += ["e", "E", "e+", "e-", "E-"].randomElement(using: &rng)! + digits(1...2)
            }
            return s
        }
        func string() -> String {
            let pieces = ["a", "Z", " ", "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r",
                          "\\t", "\\u0000", "\\u001F", "\\u007f", "\\u00E9", "\\uD83D\\uDE00",
                          "\\udbff\\udfff", "\\u2028", "é", "¢", "Ü", "\u{7F}", "\u{2028}",
                          "日本", "😀", "ܢ", "\u{A0}", "0123456789abcdef", "'", "/"]
            var s = "\""
            for _ in 0..<Int.random(in: 0...12, using: &rng) {
                s += pieces.randomElement(using: &rng)!
            }
            return s + "\""
        }
        func value(_ depth: Int) -> String {
            switch Int.random(in: 0..<(depth > 3 ? 6 : 8), using: &rng) {
            case 0: return ["true", "false", "null"].randomElement(using: &rng)!
            case 1, 2: return number()
            case 3, 4, 5: return string()
            case 6:
                let items = (0..<Int.random(in: 0...4, using: &rng)).map { _ in
                    sp() + value(depth + 1) + sp()
                }
                return "[" + items.joined(separator: ",") + sp() + "]"
            default:
                // Each name ends in its place: a name given twice is refused (tested apart).
                let items = (0..<Int.random(in: 0...4, using: &rng)).map { n in
                    sp() + string().dropLast() + "#\(n)\"" + sp() + ":" + sp()
                        + value(depth + 1) + sp()
                }
                return "{" + items.joined(separator: ",") + sp() + "}"
            }
        }
        let items = (0..<Int.random(in: 1...4, using: &rng)).map { _ in sp() + value(1) + sp() }
        return sp() + "[" + items.joined(separator: ",") + "]" + sp()
    }
}
