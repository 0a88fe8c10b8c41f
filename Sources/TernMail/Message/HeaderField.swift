// Header fields of RFC 5322 messages: reading a header section (with unfolding, §2.2.3), and
// writing fields folded under the line limits of §2.1.1 with RFC 2047 encoded words for text
// that is not ASCII. Shared by the message builder, the send-request checks and the DSN parser.

import Foundation

/// One header field. `value` is unfolded and has no leading or trailing whitespace.
public struct HeaderField: Sendable, Hashable {
    public var name: String
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }

    /// RFC 5322 §3.6.8 field-name: one or more printable ASCII characters except ":".
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.allSatisfy { (33...126).contains($0) && $0 != 58 }
    }
}

/// A parsed header section.
struct HeaderSection {
    var fields: [HeaderField]
    /// Index (in the parsed slice) of the first body byte after the empty line, or its end.
    var bodyStart: Int

    /// The first field with this name, compared without case.
    func value(_ name: String) -> String? {
        fields.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }

    func contains(_ name: String) -> Bool { value(name) != nil }

    /// Parses the header section at the start of `message`. Lines may end in CRLF or a bare
    /// LF. Returns nil when a line in the section is neither a field nor a continuation
    /// (such as a body that starts without an empty line, or an mbox "From " line).
    static func parse(_ message: ArraySlice<UInt8>) -> HeaderSection? {
        var fields: [HeaderField] = []
        var i = message.startIndex
        let end = message.endIndex
        while i < end {
            let lineEnd = message[i...].firstIndex(of: 0x0A) ?? end
            var contentEnd = lineEnd
            if contentEnd > i && message[contentEnd - 1] == 0x0D { contentEnd -= 1 }
            let line = message[i..<contentEnd]
            let next = lineEnd < end ? lineEnd + 1 : end
            if line.isEmpty {
                return HeaderSection(fields: fields, bodyStart: next).trimmed()
            }
            if line.first == 0x20 || line.first == 0x09 {
                // §2.2.3 unfolding: the continuation joins the previous field, CRLF removed.
                guard !fields.isEmpty else { return nil }
                fields[fields.count - 1].value += String(decoding: line, as: UTF8.self)
            } else {
                guard let colon = line.firstIndex(of: 0x3A), colon > line.startIndex else {
                    return nil
                }
                // obs-name allows whitespace before the colon (RFC 5322 §4.5.8); drop it.
                let name = String(decoding: line[..<colon], as: UTF8.self)
                    .trimmingCharacters(in: .whitespaces)
                guard HeaderField.isValidName(name) else { return nil }
                let value = String(decoding: line[(colon + 1)...], as: UTF8.self)
                fields.append(HeaderField(name: name, value: value))
            }
            i = next
        }
        return HeaderSection(fields: fields, bodyStart: end).trimmed()
    }

    private func trimmed() -> HeaderSection {
        var copy = self
        for k in copy.fields.indices {
            copy.fields[k].value = copy.fields[k].value.trimmingCharacters(in: .whitespaces)
        }
        return copy
    }
}

/// Writing header fields.
enum HeaderWriter {
    /// RFC 5322 §2.1.1: lines SHOULD stay within 78 octets and MUST stay within 998.
    static let softLimit = 78
    static let hardLimit = 998
    /// RFC 2047 §2: an encoded word is at most 75 characters.
    static let maxEncodedWord = 75

    /// "Name: value\r\n", folded at whitespace to stay near 78 octets. Values that are not
    /// printable ASCII, or that could be mistaken for encoded words, become RFC 2047 encoded
    /// words, which only suits unstructured fields (Subject, custom text fields).
    static func unstructured(_ name: String, _ value: String) -> String {
        let value = value.trimmingCharacters(in: .whitespaces)
        let plain = value.utf8.allSatisfy { (32...126).contains($0) || $0 == 9 }
            && !value.contains("=?")
        if plain, let folded = fold(name, value) { return folded }
        return encodedWords(name, value)
    }

    /// Folds "Name: value" before whitespace so lines stay within 78 octets where a word
    /// allows it; nil when some line would still exceed 998 octets. Unfolding gives back the
    /// value unchanged, so this is safe for structured fields too.
    static func fold(_ name: String, _ value: String) -> String? {
        var out = name + ":"
        var lineLength = out.utf8.count
        var segments: [Substring] = []
        // Each segment is a run of whitespace and the word after it; the first has none.
        var start = value.startIndex
        var i = value.startIndex
        var inWord = false
        while i < value.endIndex {
            let isSpace = value[i] == " " || value[i] == "\t"
            if isSpace && inWord {
                segments.append(value[start..<i])
                start = i
            }
            inWord = !isSpace
            i = value.index(after: i)
        }
        if start < value.endIndex { segments.append(value[start...]) }

        for (k, segment) in segments.enumerated() {
            let piece = k == 0 ? " " + segment : segment
            let length = piece.utf8.count
            if k > 0 && lineLength + length > softLimit {
                out += "\r\n"
                lineLength = 0
            }
            out += piece
            lineLength += length
            if lineLength > hardLimit { return nil }
        }
        return out + "\r\n"
    }

    /// The value as a run of "=?UTF-8?B?...?=" words, one per line, each holding whole
    /// characters (RFC 2047 §5) and at most 75 characters; whitespace between adjacent
    /// encoded words is dropped by decoders (§6.2), so the folding adds nothing.
    static func encodedWords(_ name: String, _ value: String) -> String {
        let overhead = "=?UTF-8?B??=".utf8.count
        var out = name + ":"
        var chunk: [UInt8] = []
        var chunks: [[UInt8]] = []

        func capacity(_ lineLength: Int) -> Int {
            // Bytes that fit: base64 turns each 3 bytes into 4 characters.
            let room = min(maxEncodedWord, max(softLimit - lineLength, 40)) - overhead
            return room / 4 * 3
        }
        var limit = capacity(out.utf8.count + 1)
        for character in value {
            var pieces = [Array(String(character).utf8)]
            if pieces[0].count > capacity(1) {
                // A single character too long for a word (long emoji sequences): split it
                // by scalars, which still keeps every encoded word valid UTF-8.
                pieces = character.unicodeScalars.map { Array(String($0).utf8) }
            }
            for piece in pieces {
                if chunk.count + piece.count > limit && !chunk.isEmpty {
                    chunks.append(chunk)
                    chunk = []
                    limit = capacity(1)
                }
                chunk += piece
            }
        }
        if !chunk.isEmpty || chunks.isEmpty { chunks.append(chunk) }
        for (k, bytes) in chunks.enumerated() {
            out += (k == 0 ? " " : "\r\n ") + "=?UTF-8?B?" + Data(bytes).base64EncodedString()
                + "?="
        }
        return out + "\r\n"
    }
}

/// A parsed Content-Type (RFC 2045 §5.1): lowercased type and subtype, parameters by
/// lowercased name with quotes and escapes removed.
struct ContentType {
    var type: String
    var subtype: String
    var parameters: [String: String]

    var mimeType: String { type + "/" + subtype }

    init?(_ value: String) {
        let scalars = Array(value.unicodeScalars)
        var i = 0
        func skipSpace() {
            while i < scalars.count, scalars[i] == " " || scalars[i] == "\t" { i += 1 }
        }
        func token() -> String {
            var out = String.UnicodeScalarView()
            while i < scalars.count, !";=/ \t\"".unicodeScalars.contains(scalars[i]) {
                out.append(scalars[i])
                i += 1
            }
            return String(out)
        }
        skipSpace()
        let type = token().lowercased()
        skipSpace()
        guard !type.isEmpty, i < scalars.count, scalars[i] == "/" else { return nil }
        i += 1
        skipSpace()
        let subtype = token().lowercased()
        guard !subtype.isEmpty else { return nil }
        var parameters: [String: String] = [:]
        while true {
            skipSpace()
            guard i < scalars.count, scalars[i] == ";" else { break }
            i += 1
            skipSpace()
            let name = token().lowercased()
            skipSpace()
            guard !name.isEmpty, i < scalars.count, scalars[i] == "=" else { break }
            i += 1
            skipSpace()
            var parameter = String.UnicodeScalarView()
            if i < scalars.count, scalars[i] == "\"" {
                i += 1
                while i < scalars.count, scalars[i] != "\"" {
                    if scalars[i] == "\\", i + 1 < scalars.count { i += 1 }
                    parameter.append(scalars[i])
                    i += 1
                }
                i += 1
            } else {
                parameter = token().unicodeScalars
            }
            if parameters[name] == nil { parameters[name] = String(parameter) }
        }
        self.type = type
        self.subtype = subtype
        self.parameters = parameters
    }
}
