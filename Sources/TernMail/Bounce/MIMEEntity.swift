// A tolerant MIME reader (RFC 2045, 2046) for the messages that reach the bounce receiver:
// reports, auto-replies and whatever else anyone on the Internet sends to a return path.
//
// Hostile input must cost bounded work and never crash: the input is capped, nesting stops
// at `maxDepth`, a whole tree holds at most `maxParts` entities, header sections stop at
// `maxFields`, and every malformed piece (a header line without a colon, a boundary that
// never closes, bad base64) degrades to "text we could not structure" instead of an error.

import Foundation

/// One entity of a MIME tree: its header fields, its content type and its children.
public struct MIMEEntity: Sendable {
    public struct Limits: Sendable {
        /// Octets of a message that are read; the rest is ignored. A report is small, a
        /// returned original message is the only big part and its end is never needed.
        public var maxInput = 4 * 1024 * 1024
        public var maxDepth = 8
        public var maxParts = 200
        public var maxFields = 500

        public init() {}
    }

    public var fields: [HeaderField]
    /// The declared type, or text/plain (RFC 2045 §5.2) when absent or unreadable.
    var contentType: ContentType
    /// The body as it was sent, before any transfer decoding.
    public var rawBody: ArraySlice<UInt8>
    /// Body parts of a multipart, or the one enclosed message of message/rfc822.
    public var children: [MIMEEntity]

    public var mimeType: String { contentType.mimeType }
    public func parameter(_ name: String) -> String? { contentType.parameters[name] }

    /// The first field with this name, compared without case.
    public func value(_ name: String) -> String? {
        fields.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }

    /// Every field with this name, in order.
    public func values(_ name: String) -> [String] {
        fields.filter { $0.name.caseInsensitiveCompare(name) == .orderedSame }.map(\.value)
    }

    /// The body with its Content-Transfer-Encoding undone (base64, quoted-printable).
    public var decodedBody: [UInt8] {
        switch value("Content-Transfer-Encoding")?.lowercased() ?? "" {
        case "base64":
            return Data(base64Encoded: Data(rawBody), options: .ignoreUnknownCharacters)
                .map { Array($0) } ?? Array(rawBody)
        case "quoted-printable":
            return QuotedPrintable.decode(rawBody)
        default:
            return Array(rawBody)
        }
    }

    /// The decoded body as text in its charset (UTF-8 unless it says Latin-1 or
    /// windows-1252), lines ending in LF; undecodable bytes become U+FFFD.
    public var text: String {
        MIMEText.lines(MIMEText.string(decodedBody, charset: parameter("charset")))
    }

    /// The first `limit` octets of the decoded body as text, like `text`, without
    /// converting the rest of a large body.
    public func text(limit: Int) -> String {
        let encoding = value("Content-Transfer-Encoding")?.lowercased() ?? ""
        let bytes = encoding == "base64" || encoding == "quoted-printable"
            ? decodedBody.prefix(limit) : rawBody.prefix(limit)
        return MIMEText.lines(MIMEText.string(bytes, charset: parameter("charset")))
    }

    /// Every entity of the tree, this one first, depth first.
    public var all: [MIMEEntity] { [self] + children.flatMap(\.all) }

    // MARK: - Parsing

    public static func parse(_ message: [UInt8], limits: Limits = Limits()) -> MIMEEntity {
        let input = message.count > limits.maxInput ? Array(message.prefix(limits.maxInput))
            : message
        var budget = limits.maxParts
        return parse(input[...], depth: 0, limits: limits, budget: &budget)
    }

    static func parse(_ bytes: ArraySlice<UInt8>, depth: Int, limits: Limits,
                      budget: inout Int) -> MIMEEntity {
        budget -= 1
        let (fields, bodyStart) = readFields(bytes, limit: limits.maxFields)
        let declared = fields.first {
            $0.name.caseInsensitiveCompare("Content-Type") == .orderedSame
        }.flatMap { ContentType($0.value) }
        let type = declared ?? ContentType("text/plain")!
        var entity = MIMEEntity(fields: fields, contentType: type,
                                rawBody: bytes[bodyStart...], children: [])
        guard depth < limits.maxDepth, budget > 0 else { return entity }
        if type.type == "multipart", let boundary = type.parameters["boundary"],
           !boundary.isEmpty, boundary.utf8.count <= 200 {
            for part in DeliveryStatusReport.parts(of: entity.rawBody,
                                                   boundary: Array(boundary.utf8)) {
                guard budget > 0 else { break }
                entity.children.append(parse(part, depth: depth + 1, limits: limits,
                                             budget: &budget))
            }
        } else if type.mimeType == "message/rfc822" || type.mimeType == "message/global" {
            // A returned message is sometimes base64 encoded despite RFC 2046 §5.2.1.
            let inner = entity.value("Content-Transfer-Encoding")?.lowercased() == "base64"
                ? entity.decodedBody[...] : entity.rawBody
            entity.children.append(parse(inner, depth: depth + 1, limits: limits,
                                         budget: &budget))
        }
        return entity
    }

    /// The header section at the start of `bytes`, unfolded, and where the body starts.
    /// Unlike a strict reader it never fails: an mbox "From " line first is skipped, and a
    /// line that is neither a field nor a continuation ends the section there (a body that
    /// forgot its empty line).
    static func readFields(_ bytes: ArraySlice<UInt8>, limit: Int)
        -> ([HeaderField], Int)
    {
        var fields: [HeaderField] = []
        var i = bytes.startIndex
        let end = bytes.endIndex
        var first = true
        while i < end {
            let lineEnd = bytes[i...].firstIndex(of: 0x0A) ?? end
            var contentEnd = lineEnd
            if contentEnd > i && bytes[contentEnd - 1] == 0x0D { contentEnd -= 1 }
            let line = bytes[i..<contentEnd]
            let next = lineEnd < end ? lineEnd + 1 : end
            defer { first = false }
            if line.isEmpty { return (fields, next) }
            if first && line.starts(with: Array("From ".utf8)) {
                i = next
                continue
            }
            if line.first == 0x20 || line.first == 0x09 {
                guard !fields.isEmpty else { return (fields, i) }
                if fields[fields.count - 1].value.utf8.count < 16384 {
                    fields[fields.count - 1].value += " " + MIMEText.trim(line)
                }
            } else {
                guard let colon = line.firstIndex(of: 0x3A), colon > line.startIndex,
                      fields.count < limit
                else { return (fields, i) }
                let name = MIMEText.trim(line[..<colon])
                guard HeaderField.isValidName(name) else { return (fields, i) }
                fields.append(HeaderField(name: name, value: MIMEText.trim(line[(colon + 1)...])))
            }
            i = next
        }
        return (fields, end)
    }
}

/// Text helpers for MIME: charsets, trimming, RFC 2047 encoded words.
public enum MIMEText {
    static func trim(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespaces)
    }

    /// LF line ends only. Swift takes CR LF as one Character, so text is split on LF
    /// only after this.
    static func lines(_ text: String) -> String {
        text.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n")
    }

    /// Bytes as text in a charset: Latin-1 family byte for byte, anything else as UTF-8.
    static func string(_ bytes: some Collection<UInt8>, charset: String?) -> String {
        switch charset?.lowercased() ?? "" {
        case "iso-8859-1", "latin1", "windows-1252", "cp1252", "iso-8859-15":
            var scalars = String.UnicodeScalarView()
            for b in bytes { scalars.append(Unicode.Scalar(b)) }
            return String(scalars)
        default:
            return String(decoding: bytes, as: UTF8.self)
        }
    }

    /// Decodes RFC 2047 encoded words ("=?UTF-8?Q?Abwesenheit?="); whitespace between two
    /// adjacent words is dropped (§6.2). Anything malformed is left as it was.
    public static func decodeWords(_ value: String) -> String {
        guard value.contains("=?") else { return value }
        var out = ""
        var rest = Substring(value)
        var lastWasWord = false
        while let start = rest.range(of: "=?") {
            let gap = rest[..<start.lowerBound]
            let afterStart = rest[start.upperBound...]
            let pieces = afterStart.split(separator: "?", maxSplits: 3,
                                          omittingEmptySubsequences: false)
            guard pieces.count == 4, pieces[3].hasPrefix("="),
                  let decoded = decodeWord(charset: String(pieces[0]),
                                           encoding: String(pieces[1]), text: pieces[2])
            else {
                out += rest[..<start.upperBound]
                rest = afterStart
                lastWasWord = false
                continue
            }
            if !(lastWasWord && gap.allSatisfy({ $0 == " " || $0 == "\t" })) { out += gap }
            out += decoded
            rest = pieces[3].dropFirst()
            lastWasWord = true
        }
        return out + rest
    }

    private static func decodeWord(charset: String, encoding: String, text: Substring)
        -> String?
    {
        let charset = String(charset.prefix { $0 != "*" })  // RFC 2231 language suffix
        switch encoding.uppercased() {
        case "B":
            guard let data = Data(base64Encoded: String(text),
                                  options: .ignoreUnknownCharacters) else { return nil }
            return string(data, charset: charset)
        case "Q":
            let bytes = Array(text.utf8).map { $0 == UInt8(ascii: "_") ? 0x20 : $0 }
            return string(QuotedPrintable.decode(bytes[...]), charset: charset)
        default:
            return nil
        }
    }
}

extension QuotedPrintable {
    /// Decodes quoted-printable (RFC 2045 §6.7): "=XX" escapes and "=" soft line breaks.
    /// A malformed escape is kept literally, as §6.7 note 2 suggests.
    static func decode(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(bytes.count)
        var i = bytes.startIndex
        while i < bytes.endIndex {
            let b = bytes[i]
            guard b == UInt8(ascii: "=") else {
                out.append(b)
                i += 1
                continue
            }
            // Soft line break: "=" then optional whitespace then CRLF or LF.
            var j = i + 1
            while j < bytes.endIndex, bytes[j] == 0x20 || bytes[j] == 0x09 { j += 1 }
            if j < bytes.endIndex, bytes[j] == 0x0D || bytes[j] == 0x0A {
                if bytes[j] == 0x0D, j + 1 < bytes.endIndex, bytes[j + 1] == 0x0A { j += 1 }
                i = j + 1
                continue
            }
            if j == bytes.endIndex {
                i = j
                continue
            }
            if i + 2 < bytes.endIndex, let hi = hexValue(bytes[i + 1]),
               let lo = hexValue(bytes[i + 2]) {
                out.append(hi << 4 | lo)
                i += 3
            } else {
                out.append(b)
                i += 1
            }
        }
        return out
    }

    private static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return b - UInt8(ascii: "0")
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return b - UInt8(ascii: "A") + 10
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return b - UInt8(ascii: "a") + 10
        default: return nil
        }
    }
}
