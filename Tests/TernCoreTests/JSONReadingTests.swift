// Reading JSON without losing U+FEFF: JSONSerialization drops it on Linux, so text that may
// hold one goes through JSONDecoder, and must come out as the same kinds of values.

import Foundation
import Testing
@testable import TernCore

@Suite struct JSONReadingTests {
    @Test func aZeroWidthNoBreakSpaceSurvivesRawOrEscaped() throws {
        let text = #"{"raw":"a\#u{FEFF}b","escaped":"c\uFEFFd","lower":"\ufeff","n":[1,2.5]}"#
        let object = try #require(try JSONReading.value(text) as? [String: Any])
        #expect(object["raw"] as? String == "a\u{FEFF}b")
        #expect(object["escaped"] as? String == "c\u{FEFF}d")
        #expect(object["lower"] as? String == "\u{FEFF}")
        #expect((object["n"] as? [Any])?.compactMap { $0 as? Double } == [1, 2.5])
    }

    /// Without U+FEFF both readings give equal values of the same kinds, so the checks that
    /// cast them (`as? Int`, `as? Bool`, `is NSNull`) answer the same.
    @Test(arguments: [
        #"{"s":"x\"y\\z\n\u00e9\ud83d\ude00","i":-7,"d":1.25,"one":1.0,"t":true,"f":false}"#,
        #"{"null":null,"nested":{"a":[{"b":[]},{}],"e":""},"big":9007199254740993}"#,
        #"[1,"two",[3],{"four":4}]"#,
    ])
    func theDecoderReadingMatchesJSONSerialization(_ text: String) throws {
        let bytes = Array(text.utf8)
        #expect(!JSONReading.mayHoldFEFF(bytes))
        let expected = try JSONSerialization.jsonObject(with: Data(bytes))
        let decoded = try JSONReading.decoded(bytes, fragments: false)
        #expect(NSArray(array: [decoded]).isEqual(NSArray(array: [expected])))
        for key in ["i", "one", "t", "f", "null", "d"] {
            let a = (expected as? [String: Any])?[key], b = (decoded as? [String: Any])?[key]
            #expect(a as? Int == b as? Int && a as? Bool == b as? Bool, "\(key)")
            #expect(a as? Double == b as? Double && (a is NSNull) == (b is NSNull), "\(key)")
        }
    }

    @Test func fragmentsAndBadTextAreRefusedAsJSONSerializationRefusesThem() throws {
        let bare = #""\#u{FEFF}""#
        #expect(throws: (any Error).self) { try JSONReading.value(bare) }
        #expect(try JSONReading.value(bare, fragments: true) as? String == "\u{FEFF}")
        for bad in [#"{"a":"\#u{FEFF}"#, #"{"a" "\#u{FEFF}"}"#, "\u{FEFF}", #"[1,]\uFEFF"#] {
            #expect(throws: (any Error).self, "\(bad)") { try JSONReading.value(bad) }
        }
    }

    @Test func onlyTextThatMayHoldIt() {
        #expect(JSONReading.mayHoldFEFF(Array("x\u{FEFF}".utf8)))
        #expect(JSONReading.mayHoldFEFF(Array(#""\uFeFf""#.utf8)))
        #expect(!JSONReading.mayHoldFEFF(Array(#""\ufefe \u00ef\u00bb""#.utf8)))
        #expect(!JSONReading.mayHoldFEFF(Array("ï»".utf8)))
        #expect(!JSONReading.mayHoldFEFF([]) && !JSONReading.mayHoldFEFF([0xEF, 0xBB]))
    }
}
