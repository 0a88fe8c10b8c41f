// SMTP replies: the parsed form of what a server answers (RFC 5321 §4.2), with the enhanced
// status code of RFC 3463 when the server sends one (RFC 2034), an incremental parser for the
// client side and rendering for the server side (Tern's bounce receiver and test servers).

/// An RFC 3463 enhanced status code, `class.subject.detail`.
public struct EnhancedStatus: Sendable, Hashable, CustomStringConvertible {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    public let statusClass: Int
    public let subject: Int
    public let detail: Int

    public init(statusClass: Int, subject: Int, detail: Int) {
        self.statusClass = statusClass
        self.subject = subject
        self.detail = detail
    }

    /// Parses "5.1.1": class 2, 4 or 5; subject and detail of 1 to 3 digits (RFC 3463 §2).
    public init?(_ text: some StringProtocol) {
        self.init(octets: text.utf8)
    }

    /// The same from the text's octets: read on every reply the sender gets, so without
    /// splitting into strings.
    init?(octets: some Sequence<UInt8>) {
        var numbers = (0, 0, 0), digits = 0, part = 0
        for b in octets {
            if b == UInt8(ascii: ".") {
                guard digits > 0, part < 2 else { return nil }
                part += 1
                digits = 0
                continue
            }
            let d = b &- UInt8(ascii: "0")
            guard d < 10, digits < (part == 0 ? 1 : 3) else { return nil }
            digits += 1
            switch part {
            case 0: numbers.0 = Int(d)
            case 1: numbers.1 = numbers.1 * 10 + Int(d)
            default: numbers.2 = numbers.2 * 10 + Int(d)
            }
        }
        guard part == 2, digits > 0, [2, 4, 5].contains(numbers.0) else { return nil }
        self.init(statusClass: numbers.0, subject: numbers.1, detail: numbers.2)
    }

    public var description: String { "\(statusClass).\(subject).\(detail)" }
}

/// One complete reply, possibly of several lines.
public struct SMTPReply: Sendable, Hashable, CustomStringConvertible {
    /// The three-digit reply code, 200...599.
    public let code: Int
    /// Parsed from the start of the first line's text when present (RFC 2034 §3).
    public let enhanced: EnhancedStatus?
    /// The text of each line, without the code and the "-" or " " after it.
    public let lines: [String]

    /// A reply from its parts; the enhanced status is read from the first line.
    public init(code: Int, lines: [String]) {
        self.code = code
        self.lines = lines
        self.enhanced = lines.first.flatMap(SMTPReply.leadingStatus)
    }

    /// A server reply whose every line starts with the enhanced status, as RFC 2034 §3 asks;
    /// `text` is split into lines at "\n".
    public init(code: Int, enhanced: EnhancedStatus, text: String) {
        self.code = code
        self.enhanced = enhanced
        let prefix = enhanced.description
        self.lines = text.split(separator: "\n", omittingEmptySubsequences: false).map {
            $0.isEmpty ? prefix : prefix + " " + $0
        }
    }

    /// The lines joined by "\n", as stored in the results stream.
    public var text: String { lines.joined(separator: "\n") }

    /// 2yz: the command succeeded.
    public var isPositive: Bool { (200..<300).contains(code) }
    /// 4yz: a transient failure, worth retrying.
    public var isTransient: Bool { (400..<500).contains(code) }
    /// 5yz: a permanent failure.
    public var isPermanent: Bool { (500..<600).contains(code) }

    public var description: String { "\(code) \(text)" }

    /// The reply as a server sends it: "250-first", ..., "250 last", each ending in CRLF.
    public func render() -> String {
        guard !lines.isEmpty else { return "\(code)\r\n" }
        var out = ""
        for (i, line) in lines.enumerated() {
            let isLast = i == lines.count - 1
            // RFC 5321 §4.2: the text is optional, so an empty last line is the code alone.
            out += "\(code)" + (isLast ? (line.isEmpty ? "" : " ") : "-") + line + "\r\n"
        }
        return out
    }

    private static func leadingStatus(_ line: String) -> EnhancedStatus? {
        EnhancedStatus(octets: line.utf8.prefix { $0 != UInt8(ascii: " ") })
    }
}

/// Why a reply line could not be parsed.
public enum SMTPReplyError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Fewer than three characters, or the code is not three digits.
    case badCode(line: String)
    /// The character after the code is neither " " nor "-".
    case badSeparator(line: String)
    /// A code outside 200...599, which RFC 5321 §4.2 does not define for replies.
    case codeOutOfRange(Int)
    /// A continuation line with another code than the first line (RFC 5321 §4.2.1).
    case codeMismatch(expected: Int, got: Int)

    public var description: String {
        switch self {
        case .badCode(let line): return "reply line without a three-digit code: \(line)"
        case .badSeparator(let line): return "reply code not followed by space or -: \(line)"
        case .codeOutOfRange(let code): return "reply code \(code) outside 200-599"
        case .codeMismatch(let expected, let got):
            return "multi-line reply changed code from \(expected) to \(got)"
        }
    }
}

/// Collects reply lines until a reply is complete. After an error the parser starts afresh.
public struct SMTPReplyParser: Sendable {
    private var code: Int?
    private var lines: [String] = []

    public init() {}

    /// True while a multi-line reply has started but not ended.
    public var isPending: Bool { code != nil }

    /// Feeds one line without its CRLF; returns the reply once its last line is in
    /// ("250 ..." or a bare "250"), nil while "250-..." lines continue it.
    public mutating func feed(_ line: String) throws(SMTPReplyError) -> SMTPReply? {
        try feed(Array(line.utf8))
    }

    /// Feeds one line of raw bytes; bytes that are not UTF-8 are replaced, since servers may
    /// send any 8-bit text and the reply is only ever read by people. For the same reason
    /// controls are written as `\xNN` (see `printable`).
    public mutating func feed(_ bytes: [UInt8]) throws(SMTPReplyError) -> SMTPReply? {
        func text() -> String { String(decoding: bytes, as: UTF8.self) }
        guard bytes.count >= 3, bytes[0..<3].allSatisfy({ (0x30...0x39).contains($0) }) else {
            reset()
            throw .badCode(line: text())
        }
        let lineCode = bytes[0..<3].reduce(0) { $0 * 10 + Int($1 - 0x30) }
        guard (200...599).contains(lineCode) else {
            reset()
            throw .codeOutOfRange(lineCode)
        }
        if let code, code != lineCode {
            reset()
            throw .codeMismatch(expected: code, got: lineCode)
        }
        let isLast: Bool
        switch bytes.count > 3 ? bytes[3] : UInt8(ascii: " ") {
        case UInt8(ascii: " "): isLast = true
        case UInt8(ascii: "-"): isLast = false
        default:
            reset()
            throw .badSeparator(line: text())
        }
        lines.append(bytes.count > 4 ? Self.printable(bytes[4...]) : "")
        guard isLast else {
            code = lineCode
            return nil
        }
        let reply = SMTPReply(code: lineCode, lines: lines)
        reset()
        return reply
    }

    private mutating func reset() {
        code = nil
        lines = []
    }

    /// A reply line's text as stored and logged: C0 controls but the tab that RFC 5321 §4.2
    /// allows in text, DEL and C1 controls become `\xNN`, so that a NUL, an escape sequence
    /// or a stray CR from the server can neither cut a stored text nor move a terminal.
    static func printable(_ bytes: ArraySlice<UInt8>) -> String {
        let text = bytes.withUnsafeBufferPointer { String(decoding: $0, as: UTF8.self) }
        func isControl(_ u: Unicode.Scalar) -> Bool { u.isControlCharacter && u != "\t" }
        guard text.unicodeScalars.contains(where: isControl) else { return text }
        var out = String.UnicodeScalarView()
        for u in text.unicodeScalars {
            guard isControl(u) else {
                out.append(u)
                continue
            }
            let hex = String(u.value, radix: 16)
            out.append(contentsOf: ("\\x" + (hex.count < 2 ? "0" : "") + hex).unicodeScalars)
        }
        return String(out)
    }
}
