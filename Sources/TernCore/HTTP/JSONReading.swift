// JSON text read into the values JSONSerialization gives (dictionaries, arrays, strings,
// NSNumber, NSNull), keeping every U+FEFF.
//
// swift-corelibs-foundation's JSONSerialization drops U+FEFF (ZERO WIDTH NO-BREAK SPACE)
// from the strings it reads, written raw or as `\ufeff`; a client's text would lose it
// without a word. JSONDecoder keeps it, so text that may hold one is read through
// JSONDecoder into the same kinds of values; all other text, nearly all of it, goes through
// JSONSerialization, which is faster.
//
// Known shortcoming: ternctl and the provider catalogue still read with JSONSerialization
// (operators' files and Tern's own documents, not clients' text), so a U+FEFF there is lost.

import Foundation

public enum JSONReading {
    public struct Invalid: Error {}

    /// The value of `bytes`: an object or an array, or with `fragments` any JSON value.
    public static func value(_ bytes: [UInt8], fragments: Bool = false) throws -> Any {
        guard mayHoldFEFF(bytes) else {
            return try JSONSerialization.jsonObject(
                with: Data(bytes), options: fragments ? .fragmentsAllowed : [])
        }
        return try decoded(bytes, fragments: fragments)
    }

    /// `value` of text.
    public static func value(_ text: String, fragments: Bool = false) throws -> Any {
        try value(Array(text.utf8), fragments: fragments)
    }

    /// Through JSONDecoder, whatever the text holds.
    static func decoded(_ bytes: [UInt8], fragments: Bool) throws -> Any {
        let value = try JSONDecoder().decode(Value.self, from: Data(bytes))
        if !fragments {
            switch value {
            case .array, .object: break
            default: throw Invalid()
            }
        }
        return value.foundation
    }

    /// True when `bytes` hold U+FEFF in UTF-8 (EF BB BF) or the escape `\ufeff` in any case.
    /// An escaped backslash before "ufeff" answers true too: the slower reading is as right.
    static func mayHoldFEFF(_ bytes: [UInt8]) -> Bool {
        guard bytes.count >= 3 else { return false }
        for i in 0..<(bytes.count - 2) {
            switch bytes[i] {
            case 0xEF where bytes[i + 1] == 0xBB && bytes[i + 2] == 0xBF:
                return true
            case UInt8(ascii: "\\") where i + 5 < bytes.count && bytes[i + 1] == UInt8(ascii: "u"):
                let hex = bytes[(i + 2)...(i + 5)].map { $0 | 0x20 }   // ASCII lowercase
                if hex == Array("feff".utf8) { return true }
            default:
                continue
            }
        }
        return false
    }

    private enum Value: Decodable {
        case null
        case bool(Bool)
        case integer(Int)
        case number(Double)
        case string(String)
        case array([Value])
        case object([String: Value])

        init(from decoder: any Decoder) throws {
            let single = try decoder.singleValueContainer()
            if single.decodeNil() {
                self = .null
            } else if let b = try? single.decode(Bool.self) {
                self = .bool(b)
            } else if let i = try? single.decode(Int.self) {
                self = .integer(i)
            } else if let d = try? single.decode(Double.self) {
                self = .number(d)
            } else if let s = try? single.decode(String.self) {
                self = .string(s)
            } else if let a = try? single.decode([Value].self) {
                self = .array(a)
            } else {
                self = .object(try single.decode([String: Value].self))
            }
        }

        /// As JSONSerialization gives it: numbers and booleans as NSNumber, null as NSNull.
        var foundation: Any {
            switch self {
            case .null: return NSNull()
            case .bool(let b): return NSNumber(value: b)
            case .integer(let i): return NSNumber(value: i)
            case .number(let d): return NSNumber(value: d)
            case .string(let s): return s
            case .array(let a): return a.map(\.foundation)
            case .object(let o): return o.mapValues(\.foundation)
            }
        }
    }
}
