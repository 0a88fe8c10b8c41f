// The addresses of a mailbox-list header field (From, Sender, Reply-To; RFC 5322 §3.4), read
// strictly: the API checks a raw message's From against the organisation's domains, and
// DKIM signs for the same address, so text that readers might take two ways is no address.
//
//     mailbox-list = mailbox *("," mailbox)
//     mailbox      = name-addr / addr-spec
//     name-addr    = [display-name] "<" addr-spec ">"      with CFWS around each part
//
// Not read: group syntax ("undisclosed-recipients:;"), obsolete routes ("<@a,@b:x@y>") and
// empty list members; a field holding them has no address here.

public enum MailboxList {
    /// The mailboxes of a field value, unfolded or folded with CRLF (§2.2.3); nil when the
    /// value is not a mailbox-list.
    public static func parse(_ value: String) -> [EmailAddress]? {
        // Unfolding removes each CRLF that comes before white space; any other CR or LF
        // has no place in a field.
        let input = Array(value.unicodeScalars)
        var scalars: [Unicode.Scalar] = []
        scalars.reserveCapacity(input.count)
        var k = 0
        while k < input.count {
            let s = input[k]
            k += 1
            guard s == "\r" || s == "\n" else { scalars.append(s); continue }
            guard s == "\r", k + 1 < input.count, input[k] == "\n",
                  input[k + 1] == " " || input[k + 1] == "\t" else { return nil }
            k += 1
        }
        guard let members = split(scalars) else { return nil }
        var out: [EmailAddress] = []
        for member in members {
            guard let address = mailbox(member) else { return nil }
            out.append(address)
        }
        return out.isEmpty ? nil : out
    }

    /// The values of the fields called `name` (any case) in a message's header section, in
    /// order and unfolded; empty when there is none or the section does not parse.
    public static func fieldValues(_ name: String, in message: [UInt8]) -> [String] {
        guard let section = HeaderSection.parse(message[...]) else { return [] }
        return section.fields.filter { $0.name.caseInsensitiveCompare(name) == .orderedSame }
            .map(\.value)
    }

    /// The list's members with comments removed, split at the commas outside quoted
    /// strings, comments and angle brackets; nil when a quote, comment or bracket is left
    /// open.
    static func split(_ s: [Unicode.Scalar]) -> [[Unicode.Scalar]]? {
        var members: [[Unicode.Scalar]] = [], current: [Unicode.Scalar] = []
        var quoted = false, escaped = false, depth = 0, angle = false
        for c in s {
            if escaped {
                escaped = false
                if depth == 0 { current.append(c) }
            } else if c == "\\" && (quoted || depth > 0) {
                escaped = true
                if depth == 0 { current.append(c) }
            } else if quoted {
                if c == "\"" { quoted = false }
                current.append(c)
            } else if c == "(" {
                depth += 1
            } else if depth > 0 {
                // A comment is CFWS: it stands for a space (§3.2.2).
                if c == ")" {
                    depth -= 1
                    if depth == 0 { current.append(" ") }
                }
            } else if c == "\"" {
                quoted = true
                current.append(c)
            } else if c == "<" {
                guard !angle else { return nil }
                angle = true
                current.append(c)
            } else if c == ">" {
                guard angle else { return nil }
                angle = false
                current.append(c)
            } else if c == "," && !angle {
                members.append(current)
                current = []
            } else {
                current.append(c)
            }
        }
        guard !quoted, !escaped, depth == 0, !angle else { return nil }
        members.append(current)
        return members
    }

    /// One member, comments already gone: `addr-spec` or `[phrase] <addr-spec>`.
    static func mailbox(_ member: [Unicode.Scalar]) -> EmailAddress? {
        let text = trimmed(member)
        guard !text.isEmpty else { return nil }
        let spec: [Unicode.Scalar]
        if text.last == ">" {
            guard let open = lastOpen(text), open < text.count - 1 else { return nil }
            guard isPhrase(Array(text[..<open])) else { return nil }
            spec = trimmed(Array(text[(open + 1)..<(text.count - 1)]))
        } else {
            spec = text
        }
        var string = ""
        string.unicodeScalars.append(contentsOf: spec)
        return try? EmailAddress(string)
    }

    /// The "<" outside quoted strings (split lets only one through).
    private static func lastOpen(_ s: [Unicode.Scalar]) -> Int? {
        var quoted = false, escaped = false, found: Int?
        for (i, c) in s.enumerated() {
            if escaped { escaped = false } else if quoted && c == "\\" { escaped = true }
            else if c == "\"" { quoted.toggle() } else if !quoted && c == "<" { found = i }
        }
        return found
    }

    /// A display name: empty, or words (atoms, with "." as obs-phrase allows, and quoted
    /// strings) separated by white space. RFC 6532 lets the words be UTF-8.
    static func isPhrase(_ s: [Unicode.Scalar]) -> Bool {
        var quoted = false, escaped = false
        for c in s {
            if escaped {
                escaped = false
            } else if quoted {
                if c == "\\" { escaped = true } else if c == "\"" { quoted = false }
            } else if c == "\"" {
                quoted = true
            } else if !(c == " " || c == "\t" || c == "." || EmailAddress.isAtext(c)) {
                return false
            }
        }
        return !quoted
    }

    private static func trimmed(_ s: [Unicode.Scalar]) -> [Unicode.Scalar] {
        let isSpace = { (c: Unicode.Scalar) in c == " " || c == "\t" }
        guard let first = s.firstIndex(where: { !isSpace($0) }),
              let last = s.lastIndex(where: { !isSpace($0) })
        else { return [] }
        return Array(s[first...last])
    }
}
