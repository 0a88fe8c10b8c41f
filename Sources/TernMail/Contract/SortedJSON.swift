// A small JSON writer for the documents Tern stores and posts (events, history entries):
// keys in code-point order so the text is stable for signing, no slash escaping.
//
// Foundation's JSONSerialization with `.sortedKeys` compares keys through NSString with a
// locale; at one event per attempt that comparison was a third of the scheduler's CPU.

import Foundation

/// JSON text that is inserted as it is (a document already encoded, e.g. metadata).
public struct RawJSON: Sendable {
    public let text: String
    public init(_ text: String) { self.text = text }
}

public enum SortedJSON {
    /// `object` as JSON text. Values: String, Bool, integers, Double, RawJSON, and arrays
    /// and string-keyed dictionaries of these; anything else is written as its description.
    public static func encode(_ object: [String: any Sendable]) -> String {
        var out = ""
        out.reserveCapacity(256)
        write(object, into: &out)
        return out
    }

    static func write(_ value: any Sendable, into out: inout String) {
        switch value {
        case let s as String: quote(s, into: &out)
        case let b as Bool: out += b ? "true" : "false"
        case let i as Int: out += String(i)
        case let i as Int64: out += String(i)
        case let i as Int32: out += String(i)
        case let d as Double: out += d.isFinite ? "\(d)" : "null"
        case let raw as RawJSON: out += raw.text
        case let dict as [String: any Sendable]:
            out += "{"
            for (n, key) in dict.keys.sorted().enumerated() {
                if n > 0 { out += "," }
                quote(key, into: &out)
                out += ":"
                write(dict[key]!, into: &out)
            }
            out += "}"
        case let list as [any Sendable]:
            out += "["
            for (n, item) in list.enumerated() {
                if n > 0 { out += "," }
                write(item, into: &out)
            }
            out += "]"
        default: quote(String(describing: value), into: &out)
        }
    }

    /// RFC 8259 §7: quotation mark, reverse solidus and control characters are escaped.
    static func quote(_ s: String, into out: inout String) {
        // Most values need no escape: then one append, not one per scalar.
        let needsEscape: (UInt8) -> Bool = {
            $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\")
        }
        let plain = s.utf8.withContiguousStorageIfAvailable { !$0.contains(where: needsEscape) }
            ?? !s.utf8.contains(where: needsEscape)
        if plain {
            out += "\""
            out += s
            out += "\""
            return
        }
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }
}

/// Writes one JSON object member by member, in the order given: for a document of fixed
/// shape whose keys the caller lists in code-point order, so the text is what `SortedJSON`
/// would write, without building a dictionary.
public struct JSONObjectWriter {
    public private(set) var text = "{"

    public init() {}

    public mutating func add(_ key: String, _ value: String) {
        member(key)
        SortedJSON.quote(value, into: &text)
    }

    public mutating func add(_ key: String, _ value: Int) {
        member(key)
        text += String(value)
    }

    public mutating func add(_ key: String, _ value: Bool) {
        member(key)
        text += value ? "true" : "false"
    }

    /// `value` is JSON text already.
    public mutating func add(_ key: String, raw value: String) {
        member(key)
        text += value
    }

    /// The finished object.
    public mutating func close() -> String {
        text += "}"
        return text
    }

    private mutating func member(_ key: String) {
        if text.utf8.count > 1 { text += "," }
        SortedJSON.quote(key, into: &text)
        text += ":"
    }
}
