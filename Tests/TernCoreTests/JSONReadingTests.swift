// Tern's JSON reader against JSONSerialization: the same values of the same kinds for RFC
// 8259 text, U+FEFF kept (JSONSerialization drops it), and refusals where the text is not
// JSON, including text mangled at random.

import Foundation
import Testing
@testable import TernCore
import TernTestSupport

@Suite struct JSONReadingTests {
    @Test func aZeroWidthNoBreakSpaceSurvivesRawOrEscaped() throws {
        let text = #"{"raw":"a\#u{FEFF}b","escaped":"c\uFEFFd","lower":"\ufeff","n":[1,2.5]}"#
        let object = try #require(try JSONReading.value(text) as? [String: Any])
        #expect(object["raw"] as? String == "a\u{FEFF}b")
        #expect(object["escaped"] as? String == "c\u{FEFF}d")
        #expect(object["lower"] as? String == "\u{FEFF}")
        #expect((object["n"] as? [Any])?.compactMap { $0 as? Double } == [1, 2.5])
    }

    /// Equal values of the same kinds, so the checks that cast them (`as? Int`, `as? Bool`,
    /// `is NSNull`, an NSNumber's `objCType`) answer the same.
    @Test(arguments: [
        #"{"s":"x\"y\\z\n\u00e9\ud83d\ude00\/\b\f\r\t","i":-7,"d":1.25,"one":1.0,"t":true}"#,
        #"{"null":null,"nested":{"a":[{"b":[]},{}],"e":""},"big":9007199254740993,"f":false}"#,
        #"[1,"two",[3],{"four":4},-0,-0.0,1E2,1e-2,12345678901234567890,1234567890123456789012]"#,
        " \t\r\n[ \"a\" , { \"k\" : [ ] } ]\n ",
        #"["\u0000","\u001f","\u00e9t\u00e9","日本語","\ud834\udd1e"]"#,
    ])
    func theValuesAreThoseOfJSONSerialization(_ text: String) throws {
        let bytes = Array(text.utf8)
        let expected = try JSONSerialization.jsonObject(with: Data(bytes))
        let read = try JSONReading.value(bytes)
        try expectSame(read, expected)
    }

    @Test func randomDocumentsReadAsJSONSerializationReadsThem() throws {
        var rng = SeededGenerator(state: 0x4A53_4F4E)
        for _ in 0..<400 {
            let text = Self.document(&rng, depth: 0)
            let bytes = Array(text.utf8)
            let expected = try JSONSerialization.jsonObject(with: Data(bytes))
            try expectSame(try JSONReading.value(bytes), expected)
        }
    }

    /// Mangled text: whatever this reader takes, JSONSerialization takes too, as the same
    /// value. (The reverse does not hold: JSONSerialization also takes trailing commas.)
    @Test func mangledTextIsRefusedOrReadAsJSONSerializationReadsIt() throws {
        var rng = SeededGenerator(state: 0xBAD_7E47)
        let alphabet = Array(#"{}[]":,\-+.0123456789eEtrufalsn u"#.utf8) + [0x00, 0x1F, 0xC3, 0xFF]
        var accepted = 0
        for _ in 0..<3000 {
            var bytes = Array(Self.document(&rng, depth: 0).utf8)
            for _ in 0..<Int.random(in: 1...3, using: &rng) where !bytes.isEmpty {
                let at = Int.random(in: 0..<bytes.count, using: &rng)
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: bytes[at] = alphabet.randomElement(using: &rng)!
                case 1: bytes.remove(at: at)
                default: bytes.removeSubrange(at...)
                }
            }
            guard let read = try? JSONReading.value(bytes, fragments: true) else { continue }
            accepted += 1
            let expected = try JSONSerialization.jsonObject(with: Data(bytes),
                                                            options: .fragmentsAllowed)
            try expectSame(read, expected)
        }
        #expect(accepted > 100, "so few mangled texts were still JSON that nothing was compared")
    }

    /// Plain counts, which the reader makes itself up to 18 digits, of every length.
    @Test func countsAreJSONSerializations() throws {
        var rng = SeededGenerator(state: 0xC0_0A7)
        for _ in 0..<4000 {
            let digits = Int.random(in: 1...20, using: &rng)
            var token = String(Int.random(in: 1...9, using: &rng))
            for _ in 1..<digits { token += String(Int.random(in: 0...9, using: &rng)) }
            if Int.random(in: 0..<50, using: &rng) == 0 { token = "0" }
            let text = "[" + token + "]"
            try expectSame(try JSONReading.value(text),
                           try JSONSerialization.jsonObject(with: Data(text.utf8)))
        }
    }

    @Test(arguments: [
        "", " ", "\u{FEFF}", "{", "}", "[", "[1,]", #"{"a":1,}"#, "[,1]", #"{"a" 1}"#, #"{a:1}"#,
        "{}x", "[1 2]", "01", "1.", ".5", "-", "+1", "1e", "1e+", "0x10", "Infinity", "NaN",
        "1e400", "tru", "nul", "True", #""abc"#, #""a\x""#, #""a\u12""#, #""\ud800""#,
        #""\ud800x""#, #""\udc00""#, #""\ud800\u0041""#, "\"a\u{01}b\"", "\"tab\there\"",
        "\u{0B}[]", #"{"a":"b"]"#, "[}",
    ])
    func textThatIsNotJSONIsRefused(_ text: String) {
        #expect(throws: JSONReading.Invalid.self, "\(text.debugDescription)") {
            try JSONReading.value(text, fragments: true)
        }
    }

    @Test func octetsThatAreNotUTF8AreRefused() {
        for bytes: [UInt8] in [[0x22, 0xC3, 0x28, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22],
                               [0x22, 0xFF, 0x22], [0x22, 0xE6, 0x97, 0x22],
                               [0xFF, 0xFE, 0x5B, 0x00, 0x5D, 0x00]] {
            #expect(throws: JSONReading.Invalid.self, "\(bytes)") {
                try JSONReading.value(bytes, fragments: true)
            }
        }
    }

    @Test func fragmentsOnlyWhenAsked() throws {
        #expect(throws: JSONReading.Invalid.self) { try JSONReading.value(#""x""#) }
        #expect(throws: JSONReading.Invalid.self) { try JSONReading.value("7") }
        #expect(try JSONReading.value(#" "\#u{FEFF}" "#, fragments: true) as? String
                == "\u{FEFF}")
        #expect(try JSONReading.value("7", fragments: true) as? Int == 7)
        #expect(try JSONReading.value("null", fragments: true) is NSNull)
        // A byte order mark before the text is skipped (RFC 8259 §8.1).
        #expect(try JSONReading.value("\u{FEFF}[true]") as? [Bool] == [true])
    }

    @Test func aNameGivenTwiceInOneObjectIsRefused() throws {
        // As written, or the same name once escaped: either way one object names it twice.
        for text in [#"{"to":"a@x.example","subject":"s","to":"b@y.example"}"#,
                     #"{"to":1,"t\u006f":2}"#, #"[{"a":{"b":1,"b":2}}]"#] {
            do {
                _ = try JSONReading.value(text)
                Issue.record("\(text) was read")
            } catch {
                #expect(error.reason.hasPrefix("has the name \""), "\(error)")
                #expect(error.reason.hasSuffix("\" twice in one object"), "\(error)")
            }
        }
        // The same name in different objects, and differing names, are fine.
        let fine = try JSONReading.value(#"[{"a":1},{"a":2},{"a":1,"A":2}]"#) as? [[String: Any]]
        #expect(fine?.count == 3 && fine?[2].count == 2)
        // What the refusal says, and where: the second "to", control octets shown escaped.
        let twice = #"has the name "t\x0ao" twice in one object"#
        #expect(throws: JSONReading.Invalid(offset: 10, reason: twice)) {
            try JSONReading.value(#"{"t\no":1,"t\no":2}"#)
        }
    }

    @Test func aNumberADoubleCannotHoldIsRefusedAsSuch() {
        let tooLarge = "holds a number too large to read"
        #expect(throws: JSONReading.Invalid(offset: 6, reason: tooLarge)) {
            try JSONReading.value("{\"n\": " + String(repeating: "9", count: 400) + "}")
        }
        #expect(throws: JSONReading.Invalid(offset: 1, reason: tooLarge)) {
            try JSONReading.value("[1e400]")
        }
    }

    @Test func nestingStopsAtTheLimit() throws {
        let deepest = JSONReading.maxDepth
        let fits = String(repeating: "[", count: deepest) + String(repeating: "]", count: deepest)
        #expect(try JSONReading.value(fits) is [Any])
        let over = "[" + fits + "]"
        #expect(throws: JSONReading.Invalid.self) { try JSONReading.value(over) }
        // Far deeper than any stack would hold, had the reader not stopped at the limit.
        let hostile = String(repeating: #"{"a":["#, count: 200_000)
        #expect(throws: JSONReading.Invalid.self) { try JSONReading.value(hostile) }
    }

    @Test func aLongStringWithEscapesAnywhere() throws {
        // The eight-at-a-time scan must stop at a quote, backslash or control octet in any
        // of the eight lanes, and at the text's end.
        for lane in 0..<17 {
            let plain = String(repeating: "abcdefgh", count: 3)
            let head = String(plain.prefix(lane))
            let text = "[\"" + head + "\\n" + plain + "é\\\"" + plain + "\"]"
            let expected = try JSONSerialization.jsonObject(with: Data(text.utf8))
            try expectSame(try JSONReading.value(text), expected)
            let control = "[\"" + head + "\u{1F}" + plain + "\"]"
            #expect(throws: JSONReading.Invalid.self) { try JSONReading.value(control) }
            let open = "[\"" + head + plain
            #expect(throws: JSONReading.Invalid.self) { try JSONReading.value(open) }
        }
    }

    // MARK: - Helpers

    func expectSame(_ read: Any, _ expected: Any, sourceLocation: SourceLocation = #_sourceLocation)
        throws
    {
        #expect(NSArray(array: [read]).isEqual(NSArray(array: [expected])),
                "\(read) is not \(expected)", sourceLocation: sourceLocation)
        switch (read, expected) {
        case let (a as [String: Any], b as [String: Any]):
            #expect(a.keys.sorted() == b.keys.sorted(), sourceLocation: sourceLocation)
            for (k, v) in a {
                if let w = b[k] { try expectSame(v, w, sourceLocation: sourceLocation) }
            }
        case let (a as [Any], b as [Any]):
            #expect(a.count == b.count, sourceLocation: sourceLocation)
            for (v, w) in zip(a, b) { try expectSame(v, w, sourceLocation: sourceLocation) }
        case let (a as NSNumber, b as NSNumber):
            #expect(String(cString: a.objCType) == String(cString: b.objCType),
                    "\(a) \(b)", sourceLocation: sourceLocation)
            #expect(type(of: a) == type(of: b), sourceLocation: sourceLocation)
            #expect(a as? Bool == b as? Bool && a as? Int == b as? Int,
                    sourceLocation: sourceLocation)
        case (is String, is String), (is NSNull, is NSNull):
            break
        default:
            Issue.record("\(read) and \(expected) are of different kinds",
                         sourceLocation: sourceLocation)
        }
    }

    /// A random JSON document (an object or an array) without U+FEFF, with random spacing.
    static func document(_ rng: inout SeededGenerator, depth: Int) -> String {
        let space = [" ", "", "", "\n", "\t", "\r\n"]
        func sp() -> String { space.randomElement(using: &rng)! }
        func value(_ depth: Int) -> String {
            switch Int.random(in: 0..<(depth > 4 ? 6 : 8), using: &rng) {
            case 0: return "true"
            case 1: return "false"
            case 2: return "null"
            case 3: return number()
            case 4, 5: return string()
            case 6: return array(depth + 1)
            default: return object(depth + 1)
            }
        }
        func number() -> String {
            let forms = ["0", "-0", "7", "-42", "3.25", "-0.5", "1e3", "2E-2", "6.02e+23",
                         "9223372036854775807", "9223372036854775808", "-9223372036854775808",
                         "18446744073709551615", "123456789012345678901234", "1.0", "0.1"]
            return forms.randomElement(using: &rng)!
        }
        func string() -> String {
            let pieces = ["a", "hello world", "\\\"", "\\\\", "\\/", "\\n", "\\t", "\\u00e9",
                          "\\u0001", "\\u20AC", "\\ud83d\\ude00", "é", "€", "😀", "日本",
                          String(repeating: "longer text ", count: 5), "\\r\\n", "\\b\\f"]
            var s = "\""
            for _ in 0..<Int.random(in: 0...6, using: &rng) {
                s += pieces.randomElement(using: &rng)!
            }
            return s + "\""
        }
        func array(_ depth: Int) -> String {
            let items = (0..<Int.random(in: 0...4, using: &rng)).map { _ in
                sp() + value(depth) + sp()
            }
            return "[" + items.joined(separator: ",") + sp() + "]"
        }
        func object(_ depth: Int) -> String {
            // Each name ends in its place, so no object has one twice (refused, tested apart).
            let items = (0..<Int.random(in: 0...4, using: &rng)).map { n in
                sp() + string().dropLast() + "#\(n)\"" + sp() + ":" + sp() + value(depth) + sp()
            }
            return "{" + items.joined(separator: ",") + sp() + "}"
        }
        return sp() + (Bool.random(using: &rng) ? object(depth) : array(depth)) + sp()
    }
}
