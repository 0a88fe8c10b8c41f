// What a server offers in its EHLO reply (RFC 5321 §4.1.1.1): each line after the first is
// an extension keyword with optional parameters. The client reads the few it acts on and
// keeps the rest for logging; the reply comes from a peer we do not trust, so unknown or
// malformed lines are ignored rather than refused.

import TernMail

public struct ServiceExtensions: Sendable, Equatable {
    /// Every keyword, uppercased, with its parameters ("" when none).
    public private(set) var keywords: [String: String] = [:]

    /// An empty set: what a server that only understood HELO offers.
    public init() {}

    /// Reads a 250 EHLO reply; its first line is the server's name, not an extension.
    public init(ehlo reply: SMTPReply) {
        for line in reply.lines.dropFirst() {
            let trimmed = line.drop { $0 == " " }
            let word = trimmed.prefix { $0 != " " }
            let keyword = word.uppercased()
            guard !keyword.isEmpty, keyword.utf8.count <= 64 else { continue }
            let rest = trimmed[word.endIndex...].drop { $0 == " " }
            keywords[keyword] = String(rest.prefix(256))
        }
    }

    public func offers(_ keyword: String) -> Bool { keywords[keyword.uppercased()] != nil }

    /// SIZE (RFC 1870 §4): the server takes the SIZE parameter on MAIL.
    public var size: Bool { offers("SIZE") }
    /// The largest message the server takes; nil when it names no limit ("SIZE" or
    /// "SIZE 0", RFC 1870 §4), offers no SIZE at all, or names it in anything but the
    /// digits RFC 1870 §4 allows: a number read out of garbage ("+5") must not fail mail.
    public var sizeLimit: Int? {
        guard let value = keywords["SIZE"],
              value.utf8.allSatisfy({ (0x30...0x39).contains($0) }),
              let n = Int(value), n > 0 else { return nil }
        return n
    }
    /// PIPELINING (RFC 2920).
    public var pipelining: Bool { offers("PIPELINING") }
    /// 8BITMIME (RFC 6152): BODY=8BITMIME on MAIL.
    public var eightBitMIME: Bool { offers("8BITMIME") }
    /// SMTPUTF8 (RFC 6531): non-ASCII addresses.
    public var smtpUTF8: Bool { offers("SMTPUTF8") }
    /// STARTTLS (RFC 3207).
    public var startTLS: Bool { offers("STARTTLS") }
    /// ENHANCEDSTATUSCODES (RFC 2034).
    public var enhancedStatusCodes: Bool { offers("ENHANCEDSTATUSCODES") }
}
