// Splitting the argument of MAIL and RCPT into the path and its ESMTP parameters
// (RFC 5321 §4.1.2: "FROM:" Reverse-path [SP Mail-parameters], "TO:" Forward-path
// [SP Rcpt-parameters]). Only the shape is checked here; what the mailbox may be is the
// session's business.

/// One ESMTP parameter, `KEYWORD` or `KEYWORD=value` (RFC 5321 §4.1.2 esmtp-param).
public struct SMTPParameter: Sendable, Hashable {
    /// Uppercased: keywords are case-insensitive.
    public var keyword: String
    public var value: String?

    public init(keyword: String, value: String?) {
        self.keyword = keyword
        self.value = value
    }
}

/// A path argument taken apart.
struct PathArgument: Equatable {
    /// Between the angle brackets, any source route removed; "" for the null path `<>`.
    var mailbox: String
    var parameters: [SMTPParameter]
}

enum PathSyntaxError: Error, Equatable {
    /// No "FROM:" or "TO:" in front of the path.
    case missingPrefix
    /// The path is not enclosed in "<" and ">".
    case missingBrackets
    /// Text after the path that is not a list of esmtp-params.
    case badParameter(String)
}

enum PathParser {
    /// Parses `FROM:<a@b> SIZE=10` (prefix "FROM:") or `TO:<a@b>` (prefix "TO:").
    /// Case-insensitive prefix; spaces after the colon are tolerated, since widespread
    /// clients send them although the grammar does not allow them.
    static func parse(_ argument: Substring, prefix: String)
        -> Result<PathArgument, PathSyntaxError>
    {
        guard argument.count >= prefix.count,
              argument.prefix(prefix.count).uppercased() == prefix
        else { return .failure(.missingPrefix) }
        let rest = argument.dropFirst(prefix.count).drop { $0 == " " }
        guard rest.first == "<" else { return .failure(.missingBrackets) }
        guard let close = closingBracket(rest) else { return .failure(.missingBrackets) }
        var mailbox = rest[rest.index(after: rest.startIndex)..<close]
        // RFC 5321 §4.1.1.3 and Appendix C: a source route "@a,@b:" is accepted and ignored.
        if mailbox.first == "@" {
            guard let colon = mailbox.firstIndex(of: ":") else {
                return .failure(.missingBrackets)
            }
            mailbox = mailbox[mailbox.index(after: colon)...]
        }
        let tail = rest[rest.index(after: close)...]
        guard tail.isEmpty || tail.first == " " else {
            return .failure(.badParameter(String(tail)))
        }
        var parameters: [SMTPParameter] = []
        for word in tail.split(separator: " ") {
            guard let p = parameter(word) else { return .failure(.badParameter(String(word))) }
            parameters.append(p)
        }
        return .success(PathArgument(mailbox: String(mailbox), parameters: parameters))
    }

    /// The ">" that ends the path: not inside a quoted local part, not escaped.
    private static func closingBracket(_ text: Substring) -> Substring.Index? {
        var quoted = false
        var escaped = false
        var i = text.index(after: text.startIndex)
        while i < text.endIndex {
            let c = text[i]
            if escaped {
                escaped = false
            } else if c == "\\" && quoted {
                escaped = true
            } else if c == "\"" {
                quoted.toggle()
            } else if c == ">" && !quoted {
                return i
            }
            i = text.index(after: i)
        }
        return nil
    }

    /// esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"); esmtp-value = 1*(%d33-60 /
    /// %d62-126), widened to UTF-8 by RFC 6531 §3.3.
    private static func parameter(_ word: Substring) -> SMTPParameter? {
        let parts = word.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        let keyword = parts[0]
        guard let first = keyword.unicodeScalars.first, isAlnum(first),
              keyword.unicodeScalars.allSatisfy({ isAlnum($0) || $0 == "-" })
        else { return nil }
        var value: String?
        if parts.count == 2 {
            let v = parts[1]
            guard !v.isEmpty,
                  v.unicodeScalars.allSatisfy({ (33...126).contains($0.value) && $0 != "="
                      || $0.value >= 0x80 })
            else { return nil }
            value = String(v)
        }
        return SMTPParameter(keyword: keyword.uppercased(), value: value)
    }

    private static func isAlnum(_ s: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(s) || ("A"..."Z").contains(s) || ("0"..."9").contains(s)
    }
}
