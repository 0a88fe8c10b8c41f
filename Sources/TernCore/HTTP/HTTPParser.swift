// Parsing of an HTTP/1.1 request head, line by line, strictly: whatever RFC 9112 lets a
// server reject is rejected rather than guessed at, because a lenient guess that differs
// from a proxy's guess is how requests get smuggled.

/// A request the server refuses before any handler sees it: the status and why.
struct HTTPProblem: Error, Equatable {
    let status: Int
    let message: String

    init(_ status: Int, _ message: String) {
        self.status = status
        self.message = message
    }
}

struct HTTPRequestLine: Equatable {
    var method: String
    var path: String
    var query: String?
    var major: Int
    var minor: Int
}

enum HTTPParser {
    /// tchar (RFC 9110 §5.6.2): the characters of methods and field names.
    static func isTokenChar(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "z"),
             UInt8(ascii: "A")...UInt8(ascii: "Z"):
            return true
        default:
            return Array("!#$%&'*+-.^_`|~".utf8).contains(c)
        }
    }

    static func isToken(_ bytes: ArraySlice<UInt8>) -> Bool {
        !bytes.isEmpty && bytes.allSatisfy(isTokenChar)
    }

    /// request-line = method SP request-target SP HTTP-version (RFC 9112 §3).
    static func requestLine(_ line: [UInt8]) throws(HTTPProblem) -> HTTPRequestLine {
        let parts = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard parts.count == 3 else {
            throw HTTPProblem(400, "the request line must be: method, one space, target, "
                + "one space, HTTP version")
        }
        guard isToken(parts[0]) else { throw HTTPProblem(400, "the method is not a token") }
        let (major, minor) = try version(parts[2])
        let (path, query) = try target(parts[1])
        return HTTPRequestLine(method: String(decoding: parts[0], as: UTF8.self), path: path,
                               query: query, major: major, minor: minor)
    }

    /// HTTP-version = "HTTP/" DIGIT "." DIGIT (RFC 9112 §2.3); only major version 1 here.
    static func version(_ v: ArraySlice<UInt8>) throws(HTTPProblem) -> (Int, Int) {
        let b = Array(v)
        let digit = { (c: UInt8) in c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }
        guard b.count == 8, b[0..<5] == Array("HTTP/".utf8)[...], digit(b[5]),
              b[6] == UInt8(ascii: "."), digit(b[7])
        else { throw HTTPProblem(400, "the HTTP version is malformed") }
        let major = Int(b[5] - UInt8(ascii: "0"))
        guard major == 1 else {
            throw HTTPProblem(505, "only HTTP/1.x is served on this port")
        }
        return (major, Int(b[7] - UInt8(ascii: "0")))
    }

    /// origin-form ("/path?query"), absolute-form ("http://host/path", which RFC 9112 §3.2.2
    /// says a server must accept) or asterisk-form ("*"). Bytes must be visible ASCII: RFC
    /// 3986 has everything else percent-encoded, and a fragment is never part of a request.
    static func target(_ t: ArraySlice<UInt8>) throws(HTTPProblem) -> (String, String?) {
        guard !t.isEmpty, t.allSatisfy({ $0 > 0x20 && $0 < 0x7F }), !t.contains(0x23) else {
            throw HTTPProblem(400, "the request target has characters that must be "
                + "percent-encoded")
        }
        var text = String(decoding: t, as: UTF8.self)
        if text == "*" { return ("*", nil) }
        let lower = text.lowercased()
        if lower.hasPrefix("http://") || lower.hasPrefix("https://") {
            let afterScheme = text[text.index(text.firstIndex(of: ":")!, offsetBy: 3)...]
            guard let slash = afterScheme.firstIndex(where: { $0 == "/" || $0 == "?" }) else {
                return ("/", nil)
            }
            text = String(afterScheme[slash...])
            if text.hasPrefix("?") { text = "/" + text }
        }
        guard text.hasPrefix("/") else {
            throw HTTPProblem(400, "the request target must start with /")
        }
        guard let q = text.firstIndex(of: "?") else { return (text, nil) }
        return (String(text[..<q]), String(text[text.index(after: q)...]))
    }

    /// field-line = field-name ":" OWS field-value OWS (RFC 9112 §5).
    static func field(_ line: [UInt8]) throws(HTTPProblem) -> (String, String) {
        if let first = line.first, first == 0x20 || first == 0x09 {
            // RFC 9112 §5.2: obsolete line folding may be rejected with 400.
            throw HTTPProblem(400, "header field folding (obs-fold) is not accepted")
        }
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else {
            throw HTTPProblem(400, "a header line has no colon")
        }
        // RFC 9112 §5.1: whitespace between name and colon MUST be rejected with 400.
        guard isToken(line[..<colon]) else {
            throw HTTPProblem(400, "a header field name is not a token")
        }
        var value = line[(colon + 1)...]
        while let f = value.first, f == 0x20 || f == 0x09 { value = value.dropFirst() }
        while let l = value.last, l == 0x20 || l == 0x09 { value = value.dropLast() }
        // RFC 9110 §5.5: CR, LF and NUL in a value must be rejected (or replaced); the
        // other controls but HTAB are not field-vchars either.
        if value.contains(where: { ($0 < 0x20 && $0 != 0x09) || $0 == 0x7F }) {
            throw HTTPProblem(400, "a header field value contains a control character")
        }
        return (String(decoding: line[..<colon], as: UTF8.self),
                String(decoding: value, as: UTF8.self))
    }

    /// Content-Length = 1*DIGIT (RFC 9110 §8.6); any other form, or two fields, is an error
    /// the server cannot recover from (RFC 9112 §6.3 item 5).
    static func contentLength(_ values: [String]) throws(HTTPProblem) -> Int {
        guard values.count <= 1 else {
            throw HTTPProblem(400, "more than one Content-Length field")
        }
        guard let v = values.first else { return 0 }
        guard (1...15).contains(v.utf8.count),
              v.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
              let n = Int(v)
        else { throw HTTPProblem(400, "Content-Length is not a number of octets") }
        return n
    }
}

/// Dates in the IMF-fixdate form of RFC 9110 §5.6.7, for the Date field.
enum HTTPDate {
    private static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug",
                                 "Sep", "Oct", "Nov", "Dec"]

    static func string(secondsSinceEpoch: Int64) -> String {
        // Days since 1970-01-01 to a civil date (proleptic Gregorian), UTC.
        let days = secondsSinceEpoch >= 0
            ? secondsSinceEpoch / 86400 : (secondsSinceEpoch - 86399) / 86400
        let secs = secondsSinceEpoch - days * 86400
        let weekday = Int((days % 7 + 11) % 7)  // 1970-01-01 was a Thursday
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        func two(_ n: Int64) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(Self.days[weekday]), \(two(day)) \(months[Int(month) - 1]) \(year) "
            + "\(two(secs / 3600)):\(two(secs % 3600 / 60)):\(two(secs % 60)) GMT"
    }
}
