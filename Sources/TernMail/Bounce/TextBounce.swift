// Bounces without a machine-readable part: the text that Exim, qmail, sendmail, Postfix with
// DSN off, Exchange, Lotus Domino and the big mailbox providers write for people.
//
// They differ in wording but share a shape: a failed address alone on a line (or leading a
// line, followed by ":"), then the remote server's reply with its 3-digit code somewhere in
// the lines after it. Where no address leads a line, the first address the text names in a
// sentence is taken. The copy of the original message is cut off first, so that its
// addresses and words are never mistaken for the report's.

import Foundation

struct TextBounce {
    struct Entry: Equatable {
        var recipient: String
        var reply = ""
        var remoteMTA = ""
    }

    var entries: [Entry]
    /// True when the text says delivery is still being tried.
    var delayed: Bool

    /// Lines that start the copy of the original message in text bounces.
    static let copyMarkers = [
        "--- below this line is a copy of the message", "------ this is a copy of the message",
        "----- original message", "original message follows", "-----original message-----",
        "--- original message", "------ original message headers", "original message headers",
        "---------- forwarded message", "----- the following is a copy", "------- returned message",
        "----- unsent message below", "--- the header of the original message",
        "this is a copy of the headers",
    ]

    static let delayPhrases = [
        "will continue trying", "will keep trying", "still trying", "not yet been delivered",
        "will be retried", "could not send message for past", "delivery delayed",
        "delayed mail", "still being retried", "will try again", "message delayed",
        "has been delayed", "delivery is delayed", "(delay)", "will retry",
    ]

    /// The part of `text` before the copy of the original message.
    static func report(of text: String) -> Substring {
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let probe = line.prefix(200).trimmingCharacters(in: .whitespaces).lowercased()
            if copyMarkers.contains(where: { probe.hasPrefix($0) }) {
                return text[..<line.startIndex]
            }
        }
        return text[...]
    }

    /// Reads `text` (the human-readable part, without the original message). `ignored`
    /// are addresses that are never the failed recipient (our return path, postmaster).
    static func parse(_ text: Substring, subject: String, ignored: (String) -> Bool)
        -> TextBounce
    {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
            .prefix(2000).map { line in
                String(line.prefix(1000).trimmingSuffix { $0 == "\r" || $0 == " " })
            }
        let lowered = (subject + "\n" + text).lowercased()
        let delayed = delayPhrases.contains { lowered.contains($0) }
        var entries: [Entry] = []

        // Blocks that an address opens: the address leads its line.
        var starts: [(line: Int, address: String, rest: String)] = []
        for (n, line) in lines.enumerated() {
            // A Tern message has one recipient; a report naming more is cut short.
            // The same address again (a wrapped reply quoting it, Exchange's second list)
            // continues the block it opened.
            if starts.count < 50, let (address, rest) = leadingAddress(line), !ignored(address),
               starts.last?.address.lowercased() != address.lowercased() {
                starts.append((n, address, rest))
            }
        }
        for (k, start) in starts.enumerated() {
            let end = k + 1 < starts.count ? starts[k + 1].line : min(lines.count, start.line + 40)
            var block = [start.rest]
            if start.line + 1 < end { block += lines[(start.line + 1)..<end] }
            let reply = replyText(in: block)
            let mta = remoteHost(in: block)
            if let i = entries.firstIndex(where: { $0.recipient.lowercased()
                                                   == start.address.lowercased() }) {
                if entries[i].reply.isEmpty || !hasCode(entries[i].reply) && hasCode(reply) {
                    entries[i].reply = reply
                }
                if entries[i].remoteMTA.isEmpty { entries[i].remoteMTA = mta }
            } else {
                entries.append(Entry(recipient: start.address, reply: reply, remoteMTA: mta))
            }
        }
        if entries.isEmpty {
            // The address inside a sentence: "Your message to x@y couldn't be delivered."
            for (n, line) in lines.enumerated() {
                guard let address = AddressScan.addresses(in: line).first(where: { !ignored($0) })
                else { continue }
                var reply = replyText(in: Array(lines[n...]))
                if reply.isEmpty { reply = paragraph(lines, around: n) }
                entries.append(Entry(recipient: address, reply: reply,
                                     remoteMTA: remoteHost(in: Array(lines[n...]))))
                break
            }
        }
        let anywhere = replyText(in: lines)
        for i in entries.indices where entries[i].reply.isEmpty && hasCode(anywhere) {
            entries[i].reply = anywhere
        }
        return TextBounce(entries: entries, delayed: delayed)
    }

    /// "<a@b>", "a@b", "a@b:", "<a@b>: host said ...", "a@b (a@b)": the address and what
    /// follows its colon.
    static func leadingAddress(_ line: String) -> (String, String)? {
        var s = Substring(line).drop { $0 == " " || $0 == "\t" }
        guard !s.isEmpty else { return nil }
        let bracketed = s.first == "<"
        if bracketed { s = s.dropFirst() }
        let end = s.firstIndex { c in
            c == " " || c == "\t" || c == ">" || c == ":" || c == "(" || c == ","
        } ?? s.endIndex
        let candidate = String(s[..<end])
        guard AddressScan.isAddress(candidate) else { return nil }
        var rest = s[end...]
        if bracketed {
            guard rest.first == ">" else { return nil }
            rest = rest.dropFirst()
        }
        rest = rest.drop { $0 == " " || $0 == "\t" }
        if rest.isEmpty { return (candidate, "") }
        if rest.first == ":" { return (candidate, String(rest.dropFirst())) }
        if rest.first == "(" && rest.last == ")" { return (candidate, "") }
        return nil
    }

    static func hasCode(_ s: String) -> Bool { codeStart(in: s) != nil }

    /// Where an SMTP reply starts in a line: a 4xx/5xx code or an enhanced status.
    static func codeStart(in line: String) -> String.Index? {
        let chars = Array(line)
        func isDigit(_ i: Int) -> Bool { i >= 0 && i < chars.count && chars[i].isASCII
                                         && chars[i].isNumber }
        for i in chars.indices where chars[i] == "4" || chars[i] == "5" {
            if isDigit(i - 1) || (i > 0 && chars[i - 1] == ".") { continue }
            // "550 ", "550-", "550:" (Yahoo's "554:"), or the code ending the line.
            if isDigit(i + 1), isDigit(i + 2), !isDigit(i + 3),
               i + 3 == chars.count || " -:".contains(chars[i + 3]) {
                return line.index(line.startIndex, offsetBy: i)
            }
            if i + 1 < chars.count, chars[i + 1] == ".", let status = enhancedAt(chars, i),
               status.count >= 5 {
                return line.index(line.startIndex, offsetBy: i)
            }
        }
        return nil
    }

    /// "5.1.1" at position i, bounded by non-digits and non-dots.
    static func enhancedAt(_ chars: [Character], _ i: Int) -> String? {
        var j = i
        var dots = 0
        var out = ""
        while j < chars.count, chars[j].isASCII, chars[j].isNumber || chars[j] == "." {
            if chars[j] == "." { dots += 1 }
            out.append(chars[j])
            j += 1
        }
        while out.hasSuffix(".") {
            out.removeLast()
            dots -= 1
        }
        return dots == 2 && EnhancedStatus(out) != nil ? out : nil
    }

    /// The first enhanced status written in a reply, as "5.1.1".
    static func enhancedStatus(in reply: String) -> EnhancedStatus? {
        let chars = Array(reply.prefix(400))
        for i in chars.indices where chars[i] == "4" || chars[i] == "5" || chars[i] == "2" {
            if i > 0, chars[i - 1].isNumber || chars[i - 1] == "." { continue }
            if let s = enhancedAt(chars, i) { return EnhancedStatus(s) }
        }
        return nil
    }

    /// The first line of `block` that carries a reply code, from the code on, with the
    /// lines that continue it (indented at least as far, or repeating its code, as the
    /// lines of a multi-line reply do). Without a code: the first paragraph of the block
    /// that is not a label ("because:").
    static func replyText(in block: [String]) -> String {
        for (n, line) in block.enumerated() {
            guard let start = codeStart(in: line) else { continue }
            let first = String(line[start...]).trimmingCharacters(in: .whitespaces)
            var parts = [first]
            let code = String(first.prefix(3))
            let indent = line.prefix { $0 == " " || $0 == "\t" }.count
            for next in block.dropFirst(n + 1).prefix(10) {
                let nextIndent = next.prefix { $0 == " " || $0 == "\t" }.count
                var text = next.trimmingCharacters(in: .whitespaces)
                let repeated = text.hasPrefix(code + "-") || text.hasPrefix(code + " ")
                guard !text.isEmpty, repeated || nextIndent > 0 && nextIndent >= indent,
                      nextIndent > indent || leadingAddress(next) == nil
                else { break }
                if repeated {
                    // "550-5.1.1 more text": the code and status were said on the first line.
                    text = String(text.dropFirst(4)).trimmingCharacters(in: .whitespaces)
                    if let s = enhancedStatus(in: text), text.hasPrefix(s.description) {
                        text = String(text.dropFirst(s.description.count))
                            .trimmingCharacters(in: .whitespaces)
                    }
                }
                parts.append(text)
            }
            return cleanReply(parts.joined(separator: " "))
        }
        var paragraph: [String] = []
        for line in block.prefix(40) {
            let text = line.trimmingCharacters(in: .whitespaces)
            if text.isEmpty {
                if !paragraph.isEmpty { break }
                continue
            }
            if paragraph.isEmpty && text.hasSuffix(":") && text.count < 40 { continue }
            paragraph.append(text)
            if paragraph.count == 5 { break }
        }
        return cleanReply(paragraph.joined(separator: " "))
    }

    /// Drops the wrapping that some MTAs add around the reply.
    static func cleanReply(_ reply: String) -> String {
        var r = reply
        if let range = r.range(of: " (in reply to ", options: .backwards), r.hasSuffix(")") {
            r = String(r[..<range.lowerBound])
        }
        r = r.trimmingCharacters(in: CharacterSet(charactersIn: " '\".#"))
        if r.hasSuffix(")") && r.filter({ $0 == ")" }).count > r.filter({ $0 == "(" }).count {
            r.removeLast()
        }
        return String(r.prefix(1000))
    }

    /// "host mx.example[192.0.2.1]" or "host mx.example [192.0.2.1]" in a block.
    static func remoteHost(in block: [String]) -> String {
        for line in block.prefix(12) {
            guard let range = line.range(of: "host ") else { continue }
            let name = line[range.upperBound...].prefix { c in
                c.isLetter || c.isNumber || c == "." || c == "-"
            }
            if name.contains("."), name.first?.isLetter == true,
               line[range.upperBound...].dropFirst(name.count).first.map({ " [".contains($0) })
                == true {
                return String(name).lowercased()
            }
        }
        return ""
    }

    /// The paragraph holding line n, joined into one line.
    static func paragraph(_ lines: [String], around n: Int) -> String {
        var first = n
        while first > 0, !lines[first - 1].trimmingCharacters(in: .whitespaces).isEmpty {
            first -= 1
        }
        var last = n
        while last + 1 < lines.count,
              !lines[last + 1].trimmingCharacters(in: .whitespaces).isEmpty { last += 1 }
        let text = lines[first...last].map { $0.trimmingCharacters(in: .whitespaces) }
            .joined(separator: " ")
        return String(text.prefix(1000))
    }
}

/// Finding e-mail addresses in free text, without a full RFC 5322 parser: good enough to
/// spot the failed recipient in a report, never trusted for anything more.
enum AddressScan {
    static let localChars = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                + ".!#$%&'*+/=?^_`{|}~-")
    static let domainChars = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                 + ".-")

    static func isAddress(_ s: String) -> Bool {
        guard let at = s.lastIndex(of: "@"), s.utf8.count <= 254 else { return false }
        let local = s[..<at]
        let domain = s[s.index(after: at)...]
        return !local.isEmpty && local.allSatisfy { localChars.contains($0) }
            && domain.contains(".") && !domain.hasSuffix(".") && !domain.hasPrefix(".")
            && domain.allSatisfy { domainChars.contains($0) }
    }

    /// Addresses in a line, in order.
    static func addresses(in line: String) -> [String] {
        let chars = Array(line.prefix(4000))
        var found: [String] = []
        for i in chars.indices where chars[i] == "@" {
            var a = i
            while a > 0, localChars.contains(chars[a - 1]), i - a < 64 { a -= 1 }
            var b = i + 1
            while b < chars.count, domainChars.contains(chars[b]), b - i < 255 { b += 1 }
            var candidate = String(chars[a..<b])
            while candidate.hasSuffix(".") || candidate.hasSuffix("-") { candidate.removeLast() }
            while candidate.hasPrefix(".") { candidate.removeFirst() }
            if isAddress(candidate) { found.append(candidate) }
        }
        return found
    }
}

extension Substring {
    func trimmingSuffix(while predicate: (Character) -> Bool) -> Substring {
        var s = self
        while let last = s.last, predicate(last) { s = s.dropLast() }
        return s
    }
}
