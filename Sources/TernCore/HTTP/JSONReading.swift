// JSON text (RFC 8259, UTF-8) read into the values JSONSerialization gives: dictionaries,
// arrays, strings, NSNumber and NSNull.
//
// Tern's own reader rather than JSONSerialization, for two reasons. swift-corelibs-
// foundation drops U+FEFF from the strings it reads, written raw or as `\ufeff`, so a
// client's text would lose it without a word. And a message's body is most of a send
// request: this reader finds the end of a string eight bytes at a time and makes the String
// in one validating copy, where JSONSerialization's reading was a tenth of the API's CPU on
// 20 KB messages.
//
// What it accepts is RFC 8259, no more: no trailing commas (JSONSerialization takes them),
// no UTF-16 or UTF-32 text; a UTF-8 byte order mark before the text is skipped (§8.1 allows
// it). A name given twice in one object is refused (§4 leaves its meaning open, and readers
// differ: one that checked the first "to" must not see Tern send to the last). Nesting
// deeper than 512 is refused, so hostile text cannot exhaust the stack. Numbers come out as
// exactly the same NSNumber (or NSDecimalNumber) kinds as before: a plain count is made
// here, as JSONSerialization makes it, any other number is handed to JSONSerialization.

import Foundation

public enum JSONReading {
    /// Text that is not JSON, or JSON this reader will not take; `offset` is where the
    /// reading stopped, `reason` what stopped it, as the end of a sentence about the text.
    public struct Invalid: Error, Equatable, CustomStringConvertible {
        public let offset: Int
        public var reason = "is not valid JSON"
        public var description: String { "\(reason) (octet \(offset))" }
    }

    /// The most arrays and objects one inside another.
    public static let maxDepth = 512

    /// The value of `bytes`: an object or an array, or with `fragments` any JSON value.
    public static func value(_ bytes: [UInt8], fragments: Bool = false) throws(Invalid) -> Any {
        try bytes.withUnsafeBufferPointer { (buffer) throws(Invalid) -> Any in
            var reader = Reader(buffer)
            return try reader.document(fragments)
        }
    }

    /// `value` of text.
    public static func value(_ text: String, fragments: Bool = false) throws(Invalid) -> Any {
        try value(Array(text.utf8), fragments: fragments)
    }

    private struct Reader {
        let text: UnsafeBufferPointer<UInt8>
        var i = 0
        var depth = 0

        init(_ text: UnsafeBufferPointer<UInt8>) { self.text = text }

        mutating func document(_ fragments: Bool) throws(Invalid) -> Any {
            if text.count >= 3 && text[0] == 0xEF && text[1] == 0xBB && text[2] == 0xBF { i = 3 }
            skipSpace()
            if !fragments && i < text.count && text[i] != Byte.openBrace
                && text[i] != Byte.openBracket
            {
                throw Invalid(offset: i)
            }
            let v = try value()
            skipSpace()
            guard i == text.count else { throw Invalid(offset: i) }
            return v
        }

        mutating func skipSpace() {
            while i < text.count {
                switch text[i] {
                case 0x20, 0x09, 0x0A, 0x0D: i += 1
                default: return
                }
            }
        }

        mutating func value() throws(Invalid) -> Any {
            guard i < text.count else { throw Invalid(offset: i) }
            switch text[i] {
            case Byte.quote: return try string()
            case Byte.openBrace: return try object()
            case Byte.openBracket: return try array()
            case UInt8(ascii: "t"): try word("true"); return NSNumber(value: true)
            case UInt8(ascii: "f"): try word("false"); return NSNumber(value: false)
            case UInt8(ascii: "n"): try word("null"); return NSNull()
            default: return try number()
            }
        }

        mutating func word(_ w: StaticString) throws(Invalid) {
            let n = w.utf8CodeUnitCount
            guard text.count - i >= n, memcmp(text.baseAddress! + i, w.utf8Start, n) == 0 else {
                throw Invalid(offset: i)
            }
            i += n
        }

        /// Into an object or array, past its opening.
        mutating func nest() throws(Invalid) {
            depth += 1
            if depth > JSONReading.maxDepth {
                throw Invalid(offset: i, reason: "is nested deeper than \(JSONReading.maxDepth)")
            }
            i += 1
        }

        mutating func object() throws(Invalid) -> [String: Any] {
            try nest()
            var object: [String: Any] = [:]
            if closes(Byte.closeBrace) { return object }
            repeat {
                skipSpace()
                guard i < text.count, text[i] == Byte.quote else { throw Invalid(offset: i) }
                let at = i
                let name = try string()
                skipSpace()
                guard i < text.count, text[i] == Byte.colon else { throw Invalid(offset: i) }
                i += 1
                skipSpace()
                if object.updateValue(try value(), forKey: name) != nil {
                    let shown = Logger.printable(name, limit: 64)
                    throw Invalid(offset: at,
                                  reason: "has the name \"\(shown)\" twice in one object")
                }
            } while try another(Byte.closeBrace)
            return object
        }

        mutating func array() throws(Invalid) -> [Any] {
            try nest()
            var array: [Any] = []
            if closes(Byte.closeBracket) { return array }
            repeat {
                skipSpace()
                array.append(try value())
            } while try another(Byte.closeBracket)
            return array
        }

        /// True, and past it, when `close` follows the opening: an empty object or array.
        mutating func closes(_ close: UInt8) -> Bool {
            skipSpace()
            guard i < text.count, text[i] == close else { return false }
            i += 1
            depth -= 1
            return true
        }

        /// After a member or element: true past a comma, false past `close` (the end).
        mutating func another(_ close: UInt8) throws(Invalid) -> Bool {
            skipSpace()
            guard i < text.count else { throw Invalid(offset: i) }
            if text[i] == Byte.comma {
                i += 1
                return true
            }
            guard text[i] == close else { throw Invalid(offset: i) }
            i += 1
            depth -= 1
            return false
        }

        /// RFC 8259 §6's grammar checked here; the value made by JSONSerialization.
        mutating func number() throws(Invalid) -> Any {
            let start = i
            if i < text.count && text[i] == UInt8(ascii: "-") { i += 1 }
            guard i < text.count, isDigit(text[i]) else { throw Invalid(offset: i) }
            if text[i] == UInt8(ascii: "0") {
                i += 1
            } else {
                while i < text.count && isDigit(text[i]) { i += 1 }
            }
            if i < text.count && text[i] == UInt8(ascii: ".") {
                i += 1
                try digits()
            }
            if i < text.count && (text[i] | 0x20) == UInt8(ascii: "e") {
                i += 1
                if i < text.count, text[i] == UInt8(ascii: "+") || text[i] == UInt8(ascii: "-") {
                    i += 1
                }
                try digits()
            }
            // A plain count (no sign, fraction or exponent, at most 18 digits) is the NSNumber
            // JSONSerialization makes of it; anything else is asked of JSONSerialization.
            if i - start <= 18, !text[start..<i].contains(where: { !isDigit($0) }) {
                return NSNumber(value: text[start..<i].reduce(0) { $0 * 10 + Int($1 - 0x30) })
            }
            let token = Data(UnsafeBufferPointer(rebasing: text[start..<i]))
            // JSONSerialization refuses what a double cannot hold (1e400).
            guard let n = try? JSONSerialization.jsonObject(with: token, options: .fragmentsAllowed)
            else { throw Invalid(offset: start, reason: "holds a number too large to read") }
            return n
        }

        mutating func digits() throws(Invalid) {
            guard i < text.count, isDigit(text[i]) else { throw Invalid(offset: i) }
            while i < text.count && isDigit(text[i]) { i += 1 }
        }

        func isDigit(_ b: UInt8) -> Bool { b &- UInt8(ascii: "0") < 10 }

        /// A string, from its opening quote; the text between escapes is copied whole.
        mutating func string() throws(Invalid) -> String {
            i += 1
            var start = i
            var decoded: [UInt8] = []
            var escaped = false
            while true {
                i = plainEnd(from: i)
                guard i < text.count else { throw Invalid(offset: i) }
                let b = text[i]
                if b == Byte.quote { break }
                guard b == Byte.backslash else { throw Invalid(offset: i) }   // a control octet
                if !escaped { decoded.reserveCapacity(i - start + 16) }
                escaped = true
                decoded.append(contentsOf: UnsafeBufferPointer(rebasing: text[start..<i]))
                try escape(into: &decoded)
                start = i
            }
            defer { i += 1 }
            if !escaped {
                return try utf8(UnsafeBufferPointer(rebasing: text[start..<i]), at: start)
            }
            decoded.append(contentsOf: UnsafeBufferPointer(rebasing: text[start..<i]))
            return try decoded.withUnsafeBufferPointer { (b) throws(Invalid) in
                try utf8(b, at: start)
            }
        }

        func utf8(_ bytes: UnsafeBufferPointer<UInt8>, at offset: Int) throws(Invalid) -> String {
            guard let s = String(validating: bytes, as: UTF8.self) else {
                throw Invalid(offset: offset)
            }
            return s
        }

        /// The first quote, backslash or control octet at or after `from`, or the end.
        /// Eight octets at a time: each test below sets a lane's top bit only if some lane
        /// holds such an octet, and the octet-wise loop then finds which.
        func plainEnd(from: Int) -> Int {
            var j = from
            let n = text.count, base = text.baseAddress!
            let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
            while j + 8 <= n {
                let w = UnsafeRawPointer(base + j).loadUnaligned(as: UInt64.self)
                let q = w ^ (ones &* UInt64(Byte.quote)), s = w ^ (ones &* UInt64(Byte.backslash))
                let special = ((q &- ones) & ~q) | ((s &- ones) & ~s) | ((w &- ones &* 0x20) & ~w)
                if special & highs != 0 { break }
                j += 8
            }
            while j < n {
                let b = base[j]
                if b == Byte.quote || b == Byte.backslash || b < 0x20 { return j }
                j += 1
            }
            return n
        }

        /// One escape, from its backslash; a surrogate pair is one escape here.
        mutating func escape(into out: inout [UInt8]) throws(Invalid) {
            let at = i
            guard i + 1 < text.count else { throw Invalid(offset: at) }
            let c = text[i + 1]
            i += 2
            switch c {
            case Byte.quote, Byte.backslash, UInt8(ascii: "/"): out.append(c)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if (0xD800..<0xDC00).contains(scalar) {
                    guard i + 1 < text.count, text[i] == Byte.backslash,
                          text[i + 1] == UInt8(ascii: "u") else { throw Invalid(offset: at) }
                    i += 2
                    let low = try hex4()
                    guard (0xDC00..<0xE000).contains(low) else { throw Invalid(offset: at) }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00..<0xE000).contains(scalar) {
                    throw Invalid(offset: at)
                }
                out.append(contentsOf: UTF8.encode(Unicode.Scalar(scalar)!)!)
            default:
                throw Invalid(offset: at)
            }
        }

        mutating func hex4() throws(Invalid) -> UInt32 {
            guard text.count - i >= 4 else { throw Invalid(offset: i) }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let b = text[i]
                let d: UInt8
                switch b {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = b - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = b - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = b - UInt8(ascii: "A") + 10
                default: throw Invalid(offset: i)
                }
                v = v << 4 | UInt32(d)
                i += 1
            }
            return v
        }
    }

    private enum Byte {
        static let quote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\")
        static let openBrace = UInt8(ascii: "{"), closeBrace = UInt8(ascii: "}")
        static let openBracket = UInt8(ascii: "["), closeBracket = UInt8(ascii: "]")
        static let colon = UInt8(ascii: ":"), comma = UInt8(ascii: ",")
    }
}
