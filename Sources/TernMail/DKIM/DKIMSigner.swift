// DKIM signing (RFC 6376, Ed25519-SHA256 from RFC 8463): one DKIM-Signature field per key of
// the From domain, put in front of the message. The API signs each message once, when it
// accepts it, and every attempt sends exactly those bytes.
//
// Signatures are relaxed/relaxed, carry t= and no l= (a length limit would let anyone append
// to the body), and cover the fields in `signedFields` that the message has, every instance
// of each; From is listed once more than it occurs, so that a From added on the way breaks
// the signature (RFC 6376 §8.15).

import Foundation
import TernCore

public struct DKIMSigner: Sendable {
    /// Field names signed when present, in the order h= lists them.
    public static let signedFields = [
        "from", "to", "cc", "subject", "date", "message-id", "reply-to", "mime-version",
        "content-type", "content-transfer-encoding", "list-unsubscribe",
        "list-unsubscribe-post", "list-id", "in-reply-to", "references", "feedback-id",
        "cfbl-address", "cfbl-feedback-id",
    ]
    /// RFC 5322 §2.1.1: lines of the signature field stay within 78 octets.
    static let lineLimit = 78

    public enum Outcome: Equatable, Sendable {
        /// Signed as d=`domain` with these selectors.
        case signed(domain: String, selectors: [String])
        /// No key for the From domain (nil when the message has no readable From address).
        case unsigned(fromDomain: String?)

        public var isSigned: Bool {
            if case .signed = self { return true }
            return false
        }
    }

    public let keys: DKIMKeyTable

    public init(keys: DKIMKeyTable) { self.keys = keys }

    /// The message with its DKIM-Signature fields in front, and what was done. A message
    /// that does not end in CRLF gets one first, as the sender would add it on the wire.
    public func sign(_ message: [UInt8], at time: Date) -> (message: [UInt8], outcome: Outcome) {
        var message = message
        // elementsEqual: comparing `suffix(2)` with an array literal would pick Sequence's
        // suffix, which copies the whole message to find its last two octets.
        if !message.isEmpty && !message.suffix(2).elementsEqual([0x0D, 0x0A]) {
            message += [0x0D, 0x0A]
        }
        let (fields, bodyStart) = DKIMSigner.headerFields(message)
        guard let from = DKIMSigner.fromDomain(fields, of: message) else {
            return (message, .unsigned(fromDomain: nil))
        }
        let signing = keys.keys(for: from)
        guard let domain = signing.first?.domain else {
            return (message, .unsigned(fromDomain: from))
        }

        let body = DKIMCanonicalization.relaxedBody(message[bodyStart...])
        let bodyHash = Data(Crypto.sha256(body)).base64EncodedString()
        let names = DKIMSigner.signedNames(fields)
        let hashedFields = DKIMSigner.selected(names, from: fields).flatMap {
            DKIMCanonicalization.relaxedHeader(message[$0])
        }
        let seconds = Int64(time.timeIntervalSince1970.rounded(.down))

        var out: [UInt8] = []
        for key in signing {
            var field = FieldWriter()
            field.tag("v=1;")
            field.tag("a=" + key.algorithm.rawValue + ";")
            field.tag("c=relaxed/relaxed;")
            field.tag("d=" + key.domain + ";")
            field.tag("s=" + key.selector + ";")
            field.tag("t=" + String(seconds) + ";")
            for (i, name) in names.enumerated() {
                let piece = name + (i == names.count - 1 ? ";" : ":")
                if i == 0 { field.tag("h=" + piece) } else { field.joined(piece) }
            }
            field.tag("bh=" + bodyHash + ";")
            field.tag("b=")
            // §3.7: the signature field itself is hashed last, b= empty and without CRLF.
            let unsigned = Array(field.text.utf8)
            let data = hashedFields
                + DKIMCanonicalization.relaxedHeader(unsigned[...], terminated: false)
            // RFC 8463 §3: Ed25519 signs the SHA-256 digest; RSA hashes inside the signature.
            let signature = key.algorithm == .ed25519SHA256
                ? key.key.sign(Crypto.sha256(data)) : key.key.sign(data)
            field.broken(Data(signature).base64EncodedString())
            out += Array((field.text + "\r\n").utf8)
        }
        return (out + message, .signed(domain: domain, selectors: signing.map(\.selector)))
    }

    // MARK: - Header fields

    /// A field of the header section: lowercased name and its bytes, CRLFs included.
    struct Field {
        var name: String
        var range: Range<Int>
    }

    /// The header fields in order and where the body starts (after the empty line).
    static func headerFields(_ message: [UInt8]) -> ([Field], Int) {
        var fields: [Field] = []
        var i = 0
        let n = message.count
        while i < n {
            let lineEnd = nextLineEnd(message, from: i)
            if lineEnd == i + 2 && message[i] == 0x0D { return (fields, lineEnd) }   // empty
            let b = message[i]
            if (b == 0x20 || b == 0x09), !fields.isEmpty {
                fields[fields.count - 1].range = fields[fields.count - 1].range.lowerBound
                    ..< lineEnd
            } else if let colon = message[i..<lineEnd].firstIndex(of: 0x3A) {
                let name = text(message[i..<colon]).trimmingSpaces().lowercased()
                fields.append(Field(name: name, range: i..<lineEnd))
            } else {
                // Not a field: the API only signs messages whose header section parsed, so
                // this is a body without the empty line in front of it.
                return (fields, i)
            }
            i = lineEnd
        }
        return (fields, n)
    }

    /// Index just after the CRLF ending the line that starts at `start` (or the end).
    private static func nextLineEnd(_ message: [UInt8], from start: Int) -> Int {
        var i = start
        while i < message.count {
            if message[i] == 0x0A { return i + 1 }
            i += 1
        }
        return message.count
    }

    /// The h= list: each signed name once per instance present, From once more.
    static func signedNames(_ fields: [Field]) -> [String] {
        var counts: [String: Int] = [:]
        for field in fields { counts[field.name, default: 0] += 1 }
        return signedFields.flatMap { name in
            let count = (counts[name] ?? 0) + (name == "from" ? 1 : 0)
            return [String](repeating: name, count: count)
        }
    }

    /// The ranges hashed for `names`: RFC 6376 §5.4.2 takes repeated names from the bottom
    /// of the header up; a name listed more often than it occurs adds nothing.
    static func selected(_ names: [String], from fields: [Field]) -> [Range<Int>] {
        var used: [String: Int] = [:]
        var out: [Range<Int>] = []
        for name in names {
            let instances = fields.filter { $0.name == name }
            let taken = used[name, default: 0]
            used[name] = taken + 1
            if taken < instances.count { out.append(instances[instances.count - 1 - taken].range) }
        }
        return out
    }

    /// The domain of a message's first From field as `sign` reads it (lowercase A-labels);
    /// nil without one. The API checks it against the organisation's sending domains.
    public static func fromDomain(ofMessage message: [UInt8]) -> String? {
        fromDomain(headerFields(message).0, of: message)
    }

    /// The same, from the message's fields as `headerFields` found them.
    static func fromDomain(_ fields: [Field], of message: [UInt8]) -> String? {
        fields.first { $0.name == "from" }.flatMap { fromDomain(text(message[$0.range])) }
    }

    /// Octets of the message as text, through a pointer: the generic reading of a slice
    /// goes a slower way.
    static func text(_ octets: ArraySlice<UInt8>) -> String {
        octets.withUnsafeBufferPointer { String(decoding: $0, as: UTF8.self) }
    }

    /// The domain of the (first) address in a From field, in lowercase A-labels; nil when
    /// it holds no address. A field MailboxList cannot read is read leniently after.
    static func fromDomain(_ field: String) -> String? {
        guard let colon = field.firstIndex(of: ":") else { return nil }
        // A strict reading first: the API's sending-domain check reads a From field the
        // same way (MailboxList) and refuses it unless it holds exactly this one mailbox.
        if let first = MailboxList.parse(String(field[field.index(after: colon)...]))?.first {
            return first.asciiDomain
        }
        let value = field[field.index(after: colon)...]
            .replacingOccurrences(of: "\r\n", with: "")
        // The first "<" outside a quoted display name: `"a <x@other>" <me@here>` is from here.
        var open: String.Index?
        var quoted = false, escaped = false
        for i in value.indices {
            let c = value[i]
            if escaped {
                escaped = false
            } else if quoted && c == "\\" {
                escaped = true
            } else if c == "\"" {
                quoted.toggle()
            } else if !quoted && c == "<" {
                open = i
                break
            }
        }
        let address: Substring
        if let open, let close = value[open...].firstIndex(of: ">") {
            address = value[value.index(after: open)..<close]
        } else {
            address = value.split(separator: ",").first ?? ""
        }
        let mailbox = address.trimmingSpaces()
        if let parsed = try? EmailAddress(mailbox) { return parsed.asciiDomain }
        // Not a plain addr-spec (a comment after it, say): the domain runs to the first
        // character that cannot be in one.
        guard let at = mailbox.lastIndex(of: "@") else { return nil }
        let domain = mailbox[mailbox.index(after: at)...]
            .prefix { !$0.isWhitespace && !"()<>,;\"".contains($0) }.lowercased()
        if let parsed = try? EmailAddress("x@" + domain) { return parsed.asciiDomain }
        return domain.isEmpty ? nil : domain
    }
}

/// Writes the DKIM-Signature field folded (RFC 5322 §2.2.3) so no line passes 78 octets:
/// tags are separated by a space, h= may fold after a colon, and the b= value wherever,
/// since RFC 6376 §3.5 allows FWS in all three places.
private struct FieldWriter {
    private(set) var text = "DKIM-Signature:"
    private var lineLength = 15

    /// A tag, after a space or on a new line.
    mutating func tag(_ piece: String) { add(piece, glue: " ") }

    /// A piece that follows the previous one directly, or on a new line.
    mutating func joined(_ piece: String) { add(piece, glue: "") }

    private mutating func add(_ piece: String, glue: String) {
        if lineLength + glue.count + piece.count > DKIMSigner.lineLimit {
            text += "\r\n "
            lineLength = 1
        } else {
            text += glue
            lineLength += glue.count
        }
        text += piece
        lineLength += piece.count
    }

    /// A base64 value cut across as many lines as it needs.
    mutating func broken(_ value: String) {
        var rest = Substring(value)
        while !rest.isEmpty {
            var room = DKIMSigner.lineLimit - lineLength
            if room < 8 {
                text += "\r\n "
                lineLength = 1
                room = DKIMSigner.lineLimit - 1
            }
            let chunk = rest.prefix(room)
            text += chunk
            lineLength += chunk.count
            rest = rest.dropFirst(chunk.count)
        }
    }
}
