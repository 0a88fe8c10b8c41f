// HTTP requests and responses as a daemon's handler sees them: a request whose head has been
// checked and whose body has been read in full, and a response that the server frames
// (status line, Date, Content-Length, Connection). RFC 9110 is the semantics, RFC 9112 the
// HTTP/1.1 wire format.

import Foundation

/// Header fields in the order they came. Names compare case-insensitively (RFC 9110 §5.1).
public struct HTTPHeaders: Sendable, Sequence, ExpressibleByDictionaryLiteral {
    public typealias Element = (name: String, value: String)

    public private(set) var fields: [Element]

    public init(_ fields: [(String, String)] = []) {
        self.fields = fields.map { (name: $0.0, value: $0.1) }
    }

    public init(dictionaryLiteral elements: (String, String)...) {
        self.init(elements)
    }

    /// The first value of `name`, or nil.
    public subscript(_ name: String) -> String? {
        fields.first { Self.same($0.name, name) }?.value
    }

    /// Every value of `name`, in order (a field may be sent more than once).
    public func values(_ name: String) -> [String] {
        fields.filter { Self.same($0.name, name) }.map(\.value)
    }

    public func contains(_ name: String) -> Bool { self[name] != nil }

    public var count: Int { fields.count }

    public mutating func add(_ name: String, _ value: String) {
        fields.append((name: name, value: value))
    }

    /// Replaces every value of `name` with `value`.
    public mutating func set(_ name: String, _ value: String) {
        remove(name)
        add(name, value)
    }

    public mutating func remove(_ name: String) {
        fields.removeAll { Self.same($0.name, name) }
    }

    /// The comma-separated tokens of every `name` field, lowercased (Connection, Expect).
    public func tokens(_ name: String) -> [String] {
        values(name).flatMap { $0.split(separator: ",") }.map {
            $0.trimmingCharacters(in: .whitespaces).lowercased()
        }.filter { !$0.isEmpty }
    }

    public func makeIterator() -> IndexingIterator<[Element]> { fields.makeIterator() }

    static func same(_ a: String, _ b: String) -> Bool {
        a.utf8.count == b.utf8.count && a.lowercased() == b.lowercased()
    }
}

/// A complete request: head checked, body read.
public struct HTTPRequest: Sendable {
    /// The method as sent; methods are case-sensitive (RFC 9110 §9.1).
    public var method: String
    /// The path of the request target, still percent-encoded, so that an encoded "/" can
    /// never split one path segment into two.
    public var path: String
    /// Everything after "?" in the request target, still percent-encoded; nil without "?".
    public var query: String?
    public var headers: HTTPHeaders
    public var body: [UInt8]
    /// The peer, for logs.
    public var remote: SocketAddress?
    /// Names this request in logs and in the answer's X-Request-Id: the client's own
    /// X-Request-Id when it is a sane one, else one the server made.
    public var requestID: String

    public init(method: String, path: String, query: String? = nil,
                headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = [],
                remote: SocketAddress? = nil, requestID: String? = nil) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.remote = remote
        self.requestID = requestID ?? HTTPRequest.requestID(offered: headers["X-Request-Id"])
    }

    /// `offered` when it is 1 to 128 characters of letters, digits and `-._:@+=/` (it goes
    /// into logs and back into a header, so nothing else is taken); otherwise a new random
    /// 128-bit id in hex.
    public static func requestID(offered: String?) -> String {
        if let offered, (1...128).contains(offered.utf8.count), offered.utf8.allSatisfy({
            (48...57).contains($0) || (65...90).contains($0) || (97...122).contains($0)
                || Array("-._:@+=/".utf8).contains($0)
        }) {
            return offered
        }
        var generator = SystemRandomNumberGenerator()
        return (0..<2).map { _ in
            let n = generator.next() as UInt64
            let hex = String(n, radix: 16)
            return String(repeating: "0", count: 16 - hex.count) + hex
        }.joined()
    }
}

/// A response. The server adds Date, Content-Length and Connection itself and ignores those
/// fields if a handler sets them.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: [UInt8]

    public init(status: Int, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// `text`, a JSON document already written, as `application/json`.
    public static func json(_ status: Int, text: String, headers: HTTPHeaders = HTTPHeaders())
        -> HTTPResponse
    {
        var h = headers
        h.set("Content-Type", "application/json")
        return HTTPResponse(status: status, headers: h, body: Array(text.utf8))
    }

    /// `object` (a dictionary or array of JSON values; NSNull for null) as
    /// `application/json`, keys sorted so that answers are stable.
    public static func json(_ status: Int, _ object: Any, headers: HTTPHeaders = HTTPHeaders())
        -> HTTPResponse
    {
        // swift-corelibs-foundation traps on objects it cannot encode; check first.
        guard JSONSerialization.isValidJSONObject(object),
              let data = try? JSONSerialization.data(
                withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        else {
            return error(500, "the server built an answer it cannot encode")
        }
        var h = headers
        h.set("Content-Type", "application/json")
        return HTTPResponse(status: status, headers: h, body: Array(data))
    }

    /// The error document every Tern endpoint answers with, a problem document of RFC 9457
    /// as `application/problem+json`: `type` (about:blank: the status says what kind of
    /// problem it is, §4.2.1), `title` (the status's reason phrase), `status`, `detail` (what
    /// went wrong, for people), and the extension members `field` (the request field at
    /// fault: a JSON path such as `messages[3].to`, or a header name) when there is one, and
    /// whatever `extensions` adds (a batch's `errors`).
    public static func error(_ status: Int, _ message: String, field: String? = nil,
                             extensions: [String: Any] = [:],
                             headers: HTTPHeaders = HTTPHeaders()) -> HTTPResponse {
        var document = extensions
        document["type"] = "about:blank"
        document["title"] = reason(status)
        document["status"] = status
        document["detail"] = message
        if let field { document["field"] = field }
        let data = JSONSerialization.isValidJSONObject(document)
            ? try? JSONSerialization.data(withJSONObject: document,
                                          options: [.sortedKeys, .withoutEscapingSlashes])
            : nil
        var h = headers
        h.set("Content-Type", "application/problem+json")
        return HTTPResponse(status: status, headers: h, body: Array(data ?? Data(
            #"{"detail":"error","status":500,"title":"Internal Server Error","type":"about:blank"}"#
                .utf8)))
    }

    /// Plain text (the Prometheus exposition format is text/plain; version=0.0.4).
    public static func text(_ status: Int, _ text: String,
                            contentType: String = "text/plain; charset=utf-8") -> HTTPResponse {
        HTTPResponse(status: status, headers: ["Content-Type": contentType],
                     body: Array(text.utf8))
    }

    /// The reason phrase for a status code (RFC 9110 §15); clients must not rely on it.
    public static func reason(_ status: Int) -> String {
        switch status {
        case 100: return "Continue"
        case 200: return "OK"
        case 201: return "Created"
        case 202: return "Accepted"
        case 204: return "No Content"
        case 304: return "Not Modified"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 409: return "Conflict"
        case 411: return "Length Required"
        case 413: return "Content Too Large"
        case 414: return "URI Too Long"
        case 415: return "Unsupported Media Type"
        case 417: return "Expectation Failed"
        case 422: return "Unprocessable Content"
        case 429: return "Too Many Requests"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 503: return "Service Unavailable"
        case 505: return "HTTP Version Not Supported"
        default: return "Status \(status)"
        }
    }
}

/// What a server calls for each request. It cannot fail: every outcome is a response.
public typealias HTTPHandler = @Sendable (HTTPRequest) async -> HTTPResponse
