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
                let name = String(decoding: line[..<colon], as: UTF8.self).trimmingSpaces()
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
            copy.fields[k].value = copy.fields[k].value.trimmingSpaces()
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
        let value = value.trimmingSpaces()
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
        var out = name + ":"
        for (k, word) in words(value, firstLine: out.utf8.count + 1).enumerated() {
            out += (k == 0 ? " " : "\r\n ") + word
        }
        return out + "\r\n"
    }

    /// `value` as encoded words: the first sized to fit a line already `firstLine` octets
    /// long, the others a line of their own after one space of folding. With `atSpaces`,
    /// words end after a space where they can (see `mailbox`).
    static func words(_ value: String, firstLine: Int, atSpaces: Bool = false) -> [String] {
        let overhead = "=?UTF-8?B??=".utf8.count
        func capacity(_ lineLength: Int) -> Int {
            // Bytes that fit: base64 turns each 3 bytes into 4 characters.
            let room = min(maxEncodedWord, max(softLimit - lineLength, 40)) - overhead
            return room / 4 * 3
        }
        // The units a word holds whole: characters, or runs of them up to a space.
        var units: [[UInt8]] = []
        var run: [UInt8] = []
        for character in value {
            let bytes = Array(String(character).utf8)
            if !atSpaces || bytes.count + run.count > capacity(1) {
                if !run.isEmpty { units.append(run) }
                run = []
            }
            if bytes.count > capacity(1) {
                // A single character too long for a word (long emoji sequences): split it
                // by scalars, which still keeps every encoded word valid UTF-8.
                units += character.unicodeScalars.map { Array(String($0).utf8) }
            } else if atSpaces {
                run += bytes
                if character == " " {
                    units.append(run)
                    run = []
                }
            } else {
                units.append(bytes)
            }
        }
        if !run.isEmpty { units.append(run) }

        var chunk: [UInt8] = []
        var chunks: [[UInt8]] = []
        var limit = capacity(firstLine)
        for unit in units {
            if chunk.count + unit.count > limit && !chunk.isEmpty {
                chunks.append(chunk)
                chunk = []
                limit = capacity(1)
            }
            chunk += unit
        }
        if !chunk.isEmpty || chunks.isEmpty { chunks.append(chunk) }
        return chunks.map { "=?UTF-8?B?" + Data($0).base64EncodedString() + "?=" }
    }

    /// "Name: display name <address>\r\n" (RFC 5322 §3.4 name-addr), or the bare address
    /// without a name. A name of plain words goes as it is, other ASCII as a quoted string,
    /// and anything else as encoded words, which a phrase may hold (RFC 2047 §5 rule 3).
    /// Those words break after a space, which they keep (§6.2: decoders drop the folding
    /// between them), rather than inside a word: some decoders, Python's among them, show
    /// the folding between two words of a phrase as a space.
    static func mailbox(_ field: String, name: String?, address: String) -> String {
        guard let name, !name.isEmpty else { return field + ": " + address + "\r\n" }
        var tokens: [String]
        let printable = name.utf8.allSatisfy { (32...126).contains($0) } && !name.contains("=?")
        if printable {
            let words = name.split(separator: " ", omittingEmptySubsequences: false)
            let atoms = words.allSatisfy {
                !$0.isEmpty && $0.unicodeScalars.allSatisfy(EmailAddress.isAtext)
            }
            if atoms {
                tokens = words.map(String.init)
            } else {
                tokens = [quotedString(name)]
            }
        } else {
            tokens = words(name, firstLine: field.utf8.count + 2, atSpaces: true)
        }
        return folded(field, tokens + ["<" + address + ">"])
    }

    /// "Name: value; p=v; ...\r\n" for Content-Type and Content-Disposition. Each
    /// parameter value is a token, a quoted string, or, when it is not printable ASCII or
    /// too long for one line, RFC 2231 continued and percent-encoded UTF-8 pieces.
    static func parameterized(_ field: String, _ value: String,
                              _ parameters: [(name: String, value: String)]) -> String {
        var tokens = [value]
        for p in parameters {
            for piece in parameter(p.name, p.value) {
                tokens[tokens.count - 1] += ";"
                tokens.append(piece)
            }
        }
        return folded(field, tokens)
    }

    static func parameter(_ name: String, _ value: String) -> [String] {
        let printable = value.utf8.allSatisfy { (32...126).contains($0) }
        if printable && Attachment.isToken(value) && value.utf8.count <= 60 {
            return [name + "=" + value]
        }
        if printable && value.utf8.count <= 60 {
            return [name + "=" + quotedString(value)]
        }
        // RFC 2231 §4: attribute-char is printable ASCII but space, "*", "'", "%" and the
        // tspecials; everything else is %XX. Pieces never split a %XX triplet.
        var pieces: [String] = []
        var piece = "utf-8''"
        for b in value.utf8 {
            let plain = (33...126).contains(b) && !"*'%()<>@,;:\\\"/[]?=".utf8.contains(b)
            let text = plain ? String(UnicodeScalar(b)) : "%" + hexByte(b)
            if piece.utf8.count + text.utf8.count > 50 {
                pieces.append(piece)
                piece = ""
            }
            piece += text
        }
        pieces.append(piece)
        if pieces.count == 1 { return [name + "*=" + pieces[0]] }
        return pieces.enumerated().map { name + "*\($0.offset)*=" + $0.element }
    }

    /// RFC 5322 §3.2.4 quoted-string of printable ASCII: `"` and `\` escaped.
    static func quotedString(_ text: String) -> String {
        var quoted = "\""
        for c in text.unicodeScalars {
            if c == "\"" || c == "\\" { quoted += "\\" }
            quoted.unicodeScalars.append(c)
        }
        return quoted + "\""
    }

    private static func hexByte(_ b: UInt8) -> String {
        let digits = Array("0123456789ABCDEF")
        return String([digits[Int(b >> 4)], digits[Int(b & 15)]])
    }

    /// "Name: t1 t2 ...\r\n", folding before a token that would take the line past 78.
    static func folded(_ field: String, _ tokens: [String]) -> String {
        var out = field + ":"
        var line = out.utf8.count
        for token in tokens {
            if line > field.utf8.count + 1 && line + 1 + token.utf8.count > softLimit {
                out += "\r\n"
                line = 0
            }
            out += " " + token
            line += 1 + token.utf8.count
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
