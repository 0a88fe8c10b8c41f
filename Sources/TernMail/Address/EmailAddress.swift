// Envelope addresses: parsing and validation of an RFC 5321 §4.1.2 Mailbox as it will appear in
// MAIL FROM and RCPT TO, with the size limits of §4.5.3.1 and the SMTPUTF8 extension
// (RFC 6531) for UTF-8 local parts and internationalised domains.
//
// The check is strict on purpose: whatever passes here is written into an SMTP command line, so
// CR, LF, NUL and other controls must never get through, and an address a receiving server
// would reject for its syntax is better refused at the API than bounced later.

import Foundation

public enum EmailAddressError: Error, Equatable, Sendable, CustomStringConvertible {
    case empty
    /// The mailbox exceeds 254 octets, so its path would exceed 256 (RFC 5321 §4.5.3.1.3).
    case tooLong(octets: Int)
    case controlCharacter
    case missingAt
    case emptyLocalPart
    /// Over 64 octets (RFC 5321 §4.5.3.1.1).
    case localPartTooLong(octets: Int)
    /// A space outside a quoted local part.
    case whitespace
    case invalidLocalPartCharacter(Character)
    /// A dot at the start or end of an unquoted local part, or two dots in a row.
    case misplacedDot
    case unterminatedQuote
    /// Something other than "@" follows the closing quote of a quoted local part.
    case textAfterQuote
    case emptyDomain
    /// Over 255 octets (RFC 5321 §4.5.3.1.2).
    case domainTooLong(octets: Int)
    /// The domain starts or ends with a dot, or has two dots in a row.
    case emptyLabel
    /// A domain label over 63 octets (RFC 1035 §2.3.4), counted in its A-label form.
    case labelTooLong(String)
    /// A domain label that starts or ends with a hyphen (RFC 5321 §4.1.2 Let-dig).
    case labelHyphen(String)
    case invalidDomainCharacter(Character)
    /// A symbol (Unicode categories Sm, Sc, Sk, So: emoji among them) in a domain, which
    /// IDNA2008 disallows (RFC 5892 §2.3).
    case symbolInDomain(Character)
    /// An "xn--" label that is not the Punycode of a valid U-label (RFC 5891 §5.4).
    case invalidALabel(String)
    /// An invisible control that reorders how text is shown (U+200E, U+200F, U+202A-U+202E,
    /// U+2066-U+2069): it makes an address look like another (Trojan Source, CVE-2021-42574).
    case bidiControl(Unicode.Scalar)
    case invalidAddressLiteral(String)

    /// A sentence for API clients and logs.
    public var message: String {
        switch self {
        case .empty: return "address is empty"
        case .tooLong(let n): return "address is \(n) octets; the limit is 254 (RFC 5321)"
        case .controlCharacter: return "address contains a control character (CR, LF, NUL...)"
        case .missingAt: return "address has no @"
        case .emptyLocalPart: return "address has nothing before the @"
        case .localPartTooLong(let n):
            return "local part is \(n) octets; the limit is 64 (RFC 5321)"
        case .whitespace: return "address contains a space outside quotes"
        case .invalidLocalPartCharacter(let c):
            return "local part contains \"\(c)\", which is only allowed inside quotes"
        case .misplacedDot:
            return "local part starts or ends with a dot, or has two dots in a row"
        case .unterminatedQuote: return "quoted local part has no closing quote"
        case .textAfterQuote: return "text follows the closing quote of the local part"
        case .emptyDomain: return "address has nothing after the @"
        case .domainTooLong(let n): return "domain is \(n) octets; the limit is 255 (RFC 5321)"
        case .emptyLabel: return "domain starts or ends with a dot, or has two dots in a row"
        case .labelTooLong(let l): return "domain label \"\(l)\" is longer than 63 octets"
        case .labelHyphen(let l): return "domain label \"\(l)\" starts or ends with a hyphen"
        case .invalidDomainCharacter(let c): return "domain contains \"\(c)\""
        case .symbolInDomain(let c):
            return "domain contains \"\(c)\", a symbol, which internationalised domain "
                + "names do not allow (IDNA2008)"
        case .invalidALabel(let l):
            return "domain label \"\(l)\" is not valid Punycode for an internationalised name"
        case .bidiControl(let s):
            return "address contains the invisible bidirectional control U+"
                + String(s.value, radix: 16, uppercase: true)
        case .invalidAddressLiteral(let l): return "\"\(l)\" is not an IPv4 or IPv6 literal"
        }
    }

    public var description: String { message }
}

/// A validated envelope address.
public struct EmailAddress: Sendable, Hashable, CustomStringConvertible {
    // RFC 5321 §4.5.3.1: 64 octets of local part, 255 of domain, 256 of path ("<" and ">"
    // included, so 254 for the mailbox itself).
    public static let maxLocalPart = 64
    public static let maxDomain = 255
    public static let maxMailbox = 254

    /// The local part exactly as given, quotes included when it was quoted.
    public let localPart: String
    /// The domain, lowercased (Unicode lowercase and NFC for internationalised names), used to
    /// group messages per destination. An address literal keeps its brackets.
    public let domain: String
    /// The domain in A-label ("xn--") form for DNS; equal to `domain` when that is ASCII.
    public let asciiDomain: String
    /// True when the address contains non-ASCII text and may only be sent to a server that
    /// offers SMTPUTF8 (RFC 6531) -- unless `asciiForm` exists and is used instead.
    public let needsSMTPUTF8: Bool
    /// True when the domain is an address literal such as "[192.0.2.1]".
    public let isAddressLiteral: Bool

    /// The address as it goes between "<" and ">" in MAIL FROM and RCPT TO.
    public var description: String { localPart + "@" + domain }

    /// The address as suppression lists and recorded engagement key it: the local part
    /// lowercased and the domain in A-labels, so "Dan@BÜCHER.example" and
    /// "dan@xn--bcher-kva.example" are one mailbox there. (RFC 5321 leaves local parts
    /// case-sensitive; no mailbox provider we know of uses that, and a suppression that
    /// matches too much is the safe side.)
    public var listKey: String { localPart.lowercased() + "@" + asciiDomain }

    /// `listKey` of an address kept as text (a record's recipient); text that does not parse
    /// is only lowercased.
    public static func listKey(of text: String) -> String {
        (try? EmailAddress(text))?.listKey ?? text.lowercased()
    }

    /// What a suppression list may hold for this address: its `listKey`, then, when it
    /// differs, the address lowercased as given, the form lists held before.
    public var suppressionMembers: [String] {
        let key = listKey, given = description.lowercased()
        return key == given ? [key] : [key, given]
    }

    /// `suppressionMembers` of an address kept as text (a record's recipient); text that does
    /// not parse is only lowercased.
    public static func suppressionMembers(of text: String) -> [String] {
        (try? EmailAddress(text))?.suppressionMembers ?? [text.lowercased()]
    }

    /// The address with its domain in A-label form, for servers without SMTPUTF8; nil when the
    /// local part itself is non-ASCII, which no ASCII form can express.
    public var asciiForm: String? {
        localPart.utf8.allSatisfy({ $0 < 0x80 }) ? localPart + "@" + asciiDomain : nil
    }

    public init(_ text: String) throws(EmailAddressError) {
        guard !text.isEmpty else { throw .empty }
        if text.unicodeScalars.contains(where: EmailAddress.isControl) {
            throw .controlCharacter
        }
        if let bidi = text.unicodeScalars.first(where: EmailAddress.isBidiControl) {
            throw .bidiControl(bidi)
        }
        let octets = text.utf8.count
        guard octets <= EmailAddress.maxMailbox else { throw .tooLong(octets: octets) }

        let scalars = Array(text.unicodeScalars)
        let at = try EmailAddress.scanLocalPart(scalars)
        let local = String(String.UnicodeScalarView(scalars[..<at]))
        let rawDomain = String(String.UnicodeScalarView(scalars[(at + 1)...]))
        guard local.utf8.count <= EmailAddress.maxLocalPart else {
            throw .localPartTooLong(octets: local.utf8.count)
        }
        guard !rawDomain.isEmpty else { throw .emptyDomain }
        guard rawDomain.utf8.count <= EmailAddress.maxDomain else {
            throw .domainTooLong(octets: rawDomain.utf8.count)
        }

        localPart = local
        if rawDomain.hasPrefix("[") {
            try EmailAddress.checkAddressLiteral(rawDomain)
            domain = rawDomain.lowercased()
            asciiDomain = domain
            isAddressLiteral = true
        } else {
            // NFC changes nothing in ASCII, and Foundation's takes a while to say so.
            let lower = rawDomain.lowercased()
            domain = lower.utf8.allSatisfy { $0 < 0x80 }
                ? lower : lower.precomposedStringWithCanonicalMapping
            asciiDomain = try EmailAddress.checkDomain(domain)
            isAddressLiteral = false
        }
        needsSMTPUTF8 = !text.utf8.allSatisfy { $0 < 0x80 }
    }

    /// Parses without throwing, for callers that collect errors.
    public static func parse(_ text: String) -> Result<EmailAddress, EmailAddressError> {
        do throws(EmailAddressError) { return .success(try EmailAddress(text)) } catch {
            return .failure(error)
        }
    }

    // MARK: - Local part

    /// C0 controls, DEL and C1 controls: none may appear anywhere in an address.
    static func isControl(_ s: Unicode.Scalar) -> Bool { s.isControlCharacter }

    static func isBidiControl(_ s: Unicode.Scalar) -> Bool { s.isBidiControl }

    /// Non-ASCII characters allowed by RFC 6531's UTF8-non-ascii, minus separators and
    /// unassigned code points, which have no business in an address.
    static func isAllowedNonASCII(_ s: Unicode.Scalar) -> Bool {
        switch s.properties.generalCategory {
        case .spaceSeparator, .lineSeparator, .paragraphSeparator, .control, .unassigned,
             .surrogate, .privateUse:
            return false
        default:
            return true
        }
    }

    /// RFC 5322 §3.2.3 atext.
    static func isAtext(_ s: Unicode.Scalar) -> Bool {
        switch s {
        case "a"..."z", "A"..."Z", "0"..."9": return true
        case "!", "#", "$", "%", "&", "'", "*", "+", "-", "/", "=", "?", "^", "_", "`", "{",
             "|", "}", "~":
            return true
        default: return s.value >= 0x80 && isAllowedNonASCII(s)
        }
    }

    /// Validates the local part and returns the index of the "@" that ends it.
    private static func scanLocalPart(_ s: [Unicode.Scalar]) throws(EmailAddressError) -> Int {
        if s.first == "\"" { return try scanQuoted(s) }
        var i = 0
        var previousDot = true  // a leading dot is as wrong as a doubled one
        while i < s.count, s[i] != "@" {
            let c = s[i]
            if c == "." {
                if previousDot { throw .misplacedDot }
                previousDot = true
            } else if c == " " {
                throw .whitespace
            } else if isAtext(c) {
                previousDot = false
            } else {
                throw .invalidLocalPartCharacter(Character(c))
            }
            i += 1
        }
        guard i < s.count else { throw .missingAt }
        guard i > 0 else { throw .emptyLocalPart }
        if previousDot { throw .misplacedDot }
        return i
    }

    /// RFC 5321 §4.1.2 Quoted-string: qtextSMTP is printable ASCII except `"` and `\`, plus
    /// UTF-8 under RFC 6531; quoted-pairSMTP is `\` followed by printable ASCII.
    private static func scanQuoted(_ s: [Unicode.Scalar]) throws(EmailAddressError) -> Int {
        var i = 1
        while true {
            guard i < s.count else { throw .unterminatedQuote }
            let c = s[i]
            if c == "\"" { break }
            if c == "\\" {
                guard i + 1 < s.count else { throw .unterminatedQuote }
                let escaped = s[i + 1]
                guard (0x20...0x7E).contains(escaped.value) else {
                    throw .invalidLocalPartCharacter(Character(escaped))
                }
                i += 2
                continue
            }
            guard (0x20...0x7E).contains(c.value) || (c.value >= 0x80 && isAllowedNonASCII(c))
            else { throw .invalidLocalPartCharacter(Character(c)) }
            i += 1
        }
        // `""` is valid grammar but names nobody; refuse it like an empty dot-atom.
        guard i > 1 else { throw .emptyLocalPart }
        let at = i + 1
        guard at < s.count else { throw .missingAt }
        guard s[at] == "@" else { throw .textAfterQuote }
        return at
    }

    // MARK: - Domain

    /// Checks a lowercased domain name label by label and returns its A-label form.
    private static func checkDomain(_ domain: String) throws(EmailAddressError) -> String {
        var asciiLabels: [String] = []
        for label in domain.split(separator: ".", omittingEmptySubsequences: false) {
            guard !label.isEmpty else { throw .emptyLabel }
            if label.hasPrefix("-") || label.hasSuffix("-") {
                throw .labelHyphen(String(label))
            }
            try checkLabelCharacters(label)
            let isASCII = label.utf8.allSatisfy { $0 < 0x80 }
            if isASCII && label.hasPrefix("xn--") { try checkALabel(String(label)) }
            guard let ascii = isASCII ? String(label) : Punycode.encode(String(label))
                .map({ "xn--" + $0 })
            else { throw .labelTooLong(String(label)) }
            guard ascii.utf8.count <= 63 else { throw .labelTooLong(String(label)) }
            asciiLabels.append(ascii)
        }
        let ascii = asciiLabels.joined(separator: ".")
        guard ascii.utf8.count <= maxDomain else {
            throw .domainTooLong(octets: ascii.utf8.count)
        }
        return ascii
    }

    private static func checkLabelCharacters(_ label: Substring) throws(EmailAddressError) {
        for c in label.unicodeScalars {
            switch c {
            case "a"..."z", "0"..."9", "-": continue
            case " ": throw .whitespace
            default:
                guard c.value >= 0x80 && isAllowedNonASCII(c) else {
                    throw .invalidDomainCharacter(Character(c))
                }
                switch c.properties.generalCategory {
                case .mathSymbol, .currencySymbol, .modifierSymbol, .otherSymbol:
                    throw .symbolInDomain(Character(c))
                default: continue
                }
            }
        }
    }

    /// An A-label must decode to a lowercase NFC U-label with non-ASCII in it that encodes
    /// back to the same text, and the U-label's characters must pass the checks above.
    private static func checkALabel(_ label: String) throws(EmailAddressError) {
        let encoded = String(label.dropFirst(4))
        guard let unicode = Punycode.decode(encoded), !unicode.isEmpty,
              !unicode.utf8.allSatisfy({ $0 < 0x80 }),
              unicode == unicode.lowercased().precomposedStringWithCanonicalMapping,
              Punycode.encode(unicode) == encoded,
              !unicode.hasPrefix("-"), !unicode.hasSuffix("-")
        else { throw .invalidALabel(label) }
        if let bidi = unicode.unicodeScalars.first(where: isBidiControl) {
            throw .bidiControl(bidi)
        }
        do throws(EmailAddressError) {
            try checkLabelCharacters(Substring(unicode))
        } catch .symbolInDomain(let c) {
            throw .symbolInDomain(c)
        } catch {
            throw .invalidALabel(label)
        }
    }

    /// RFC 5321 §4.1.3: "[" IPv4 "]" or "[IPv6:" IPv6 "]". General address literals are
    /// refused: no receiving server Tern talks to would route them.
    private static func checkAddressLiteral(_ literal: String) throws(EmailAddressError) {
        guard literal.hasSuffix("]"), literal.count >= 3 else {
            throw .invalidAddressLiteral(literal)
        }
        let inner = literal.dropFirst().dropLast()
        if inner.lowercased().hasPrefix("ipv6:") {
            guard isIPv6(inner.dropFirst(5)) else { throw .invalidAddressLiteral(literal) }
        } else {
            guard isIPv4(inner) else { throw .invalidAddressLiteral(literal) }
        }
    }

    /// Dotted quad, each part 1-3 digits with value at most 255 (RFC 5321 §4.1.3 Snum).
    static func isIPv4(_ text: Substring) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return false }
        return parts.allSatisfy { part in
            part.count >= 1 && part.count <= 3 && part.allSatisfy { $0.isASCII && $0.isNumber }
                && Int(part)! <= 255
        }
    }

    /// RFC 4291 §2.2 text forms: eight groups, or fewer with one "::", optionally ending in
    /// a dotted quad that counts as two groups.
    static func isIPv6(_ text: Substring) -> Bool {
        guard !text.isEmpty, text.count <= 45 else { return false }
        var groups = 0
        let halves = text.components(separatedBy: "::")
        guard halves.count <= 2 else { return false }
        let sawDoubleColon = halves.count == 2
        for (h, half) in halves.enumerated() where !half.isEmpty {
            let parts = half.split(separator: ":", omittingEmptySubsequences: false)
            for (p, part) in parts.enumerated() {
                let isLast = h == halves.count - 1 && p == parts.count - 1
                if isLast && part.contains(".") {
                    guard isIPv4(part) else { return false }
                    groups += 2
                } else {
                    guard (1...4).contains(part.count),
                          part.allSatisfy({ $0.isASCII && $0.isHexDigit })
                    else { return false }
                    groups += 1
                }
            }
        }
        return sawDoubleColon ? groups <= 7 : groups == 8
    }
}
