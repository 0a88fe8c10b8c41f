// A small HTTP/1.1 client for the API's webhooks: one POST per connection, over TCP or TLS,
// on the event loop like every other socket. It sends a `Content-Length` body with
// `Connection: close` (RFC 9112 §9.6) and reads the status line, the header fields and a
// bounded prefix of the body, which is all a webhook sender needs to know what became of a
// post. The whole exchange has one deadline, so a slow endpoint cannot hold a task longer.
//
// Names are never resolved here (nothing may ask the system's resolver): a target holds an
// IP literal, an address given with the URL (`connect`), or the caller passes the address it
// resolved through its own configured resolver.

import Foundation

/// Where a request goes: the URL's parts and the address to connect to.
public struct HTTPTarget: Sendable, Equatable, CustomStringConvertible {
    public let secure: Bool
    /// The name in the URL: the Host field, the TLS server name and the certificate's name.
    public let host: String
    public let port: UInt16
    /// The address to connect to: the host itself when it is an IP literal, else `connect`;
    /// nil when the host is a name the caller must resolve.
    public let address: SocketAddress?
    /// Path and query, as sent in the request line (origin-form, RFC 9112 §3.2.1).
    public let target: String

    /// Parses an `http://` or `https://` URL; `connect`, when given, is the IP to connect to
    /// whatever the host. Nil when the URL is not one of these, or `connect` is no IP.
    public init?(url: String, connect: String? = nil) {
        guard let u = URLComponents(string: url), let scheme = u.scheme?.lowercased(),
              scheme == "http" || scheme == "https", let host = u.host, !host.isEmpty,
              u.user == nil, u.password == nil, u.fragment == nil
        else { return nil }
        secure = scheme == "https"
        let port = UInt16(u.port ?? (secure ? 443 : 80))
        guard port > 0 else { return nil }
        if let connect {
            guard let given = SocketAddress(host: connect, port: port) else { return nil }
            address = given
        } else {
            address = SocketAddress(host: host, port: port)
        }
        self.host = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        self.port = port
        var path = u.percentEncodedPath.isEmpty ? "/" : u.percentEncodedPath
        if let q = u.percentEncodedQuery { path += "?" + q }
        target = path
    }

    /// The Host field value (RFC 9110 §7.2): the name, bracketed when IPv6, with the port
    /// unless it is the scheme's default.
    public var hostField: String {
        let name = host.contains(":") ? "[\(host)]" : host
        return port == (secure ? 443 : 80) ? name : "\(name):\(port)"
    }

    public var description: String {
        (secure ? "https://" : "http://") + hostField + target
    }
}

/// What came back: the final status, its fields and the first octets of its body.
public struct HTTPClientResponse: Sendable {
    public let status: Int
    public let headers: HTTPHeaders
    /// At most `HTTPClient.bodyLimit` octets: enough to show an error's text.
    public let body: [UInt8]
}

/// Why a request got no response.
public enum HTTPClientError: Error, Equatable, CustomStringConvertible {
    /// The deadline passed (connecting, sending or waiting for the answer).
    case timedOut
    /// Connecting failed (refused, unreachable).
    case connect(String)
    /// The TLS handshake failed, or the certificate did not verify for the host.
    case tls(String)
    /// The connection broke, or the peer's answer is not HTTP/1.x.
    case exchange(String)

    public var description: String {
        switch self {
        case .timedOut: return "timed out"
        case .connect(let why): return "cannot connect: \(why)"
        case .tls(let why): return "TLS: \(why)"
        case .exchange(let why): return why
        }
    }
}

public enum HTTPClient {
    /// The body prefix kept from a response.
    public static let bodyLimit = 1024
    /// Longest status or header line read (RFC 9112 §2.3 leaves it to the client).
    static let lineLimit = 8192
    static let fieldLimit = 100

    /// POSTs `body` to `target` (at `address`, when the caller resolved its host) and returns
    /// the final response. `tls` is the client context for https; the certificate must
    /// verify for the URL's host or the post fails.
    public static func post(_ target: HTTPTarget, at address: SocketAddress? = nil,
                            headers: HTTPHeaders, body: [UInt8], timeout: Duration,
                            tls: TLSContext?) async throws(HTTPClientError) -> HTTPClientResponse
    {
        guard let address = address ?? target.address else {
            throw .connect("no address for \(target.host)")
        }
        let deadline = ContinuousClock.now + timeout
        let stream: any ByteStream
        do {
            stream = try await TCPConnection.connect(to: address, deadline: deadline)
        } catch IOError.timedOut {
            throw .timedOut
        } catch {
            throw .connect("\(error)")
        }
        defer { stream.close() }
        var channel: any ByteStream = stream
        if target.secure {
            guard let tls else { throw .tls("no TLS context for an https URL") }
            do {
                let session = try await TLSStream.connect(over: stream, context: tls,
                                                          host: target.host, deadline: deadline)
                guard session.info.verified else {
                    throw HTTPClientError.tls("the certificate of \(target.host) does not "
                                              + "verify: \(session.info.verifyError)")
                }
                channel = session
            } catch let e as HTTPClientError {
                throw e
            } catch IOError.timedOut {
                throw .timedOut
            } catch {
                throw .tls("\(error)")
            }
        }
        do {
            try await channel.write(request(target, headers: headers, body: body),
                                    deadline: deadline)
            return try await readResponse(LineReader(channel), deadline: deadline)
        } catch let e as HTTPClientError {
            throw e
        } catch IOError.timedOut {
            throw .timedOut
        } catch {
            throw .exchange("\(error)")
        }
    }

    /// The request's octets: request line, Host, the caller's fields, Content-Length,
    /// Connection: close, then the body.
    static func request(_ target: HTTPTarget, headers: HTTPHeaders, body: [UInt8]) -> [UInt8] {
        var head = "POST \(target.target) HTTP/1.1\r\nHost: \(target.hostField)\r\n"
        for (name, value) in headers {
            head += "\(name): \(value)\r\n"
        }
        head += "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        return Array(head.utf8) + body
    }

    /// Reads responses until a final one (1xx are interim, RFC 9110 §15.2).
    static func readResponse(_ reader: LineReader, deadline: ContinuousClock.Instant)
        async throws -> HTTPClientResponse
    {
        while true {
            guard let line = try await reader.readLine(limit: lineLimit, deadline: deadline)
            else { throw HTTPClientError.exchange("the connection closed before a response") }
            let status = try statusCode(line)
            var headers = HTTPHeaders()
            while true {
                guard let field = try await reader.readLine(limit: lineLimit, deadline: deadline)
                else { throw HTTPClientError.exchange("the connection closed in the header") }
                if field.isEmpty { break }
                guard headers.count < fieldLimit,
                      let colon = field.firstIndex(of: UInt8(ascii: ":")) else {
                    throw HTTPClientError.exchange("the response header is malformed")
                }
                let name = String(decoding: field[..<colon], as: UTF8.self)
                let value = String(decoding: field[(colon + 1)...], as: UTF8.self)
                headers.add(name, value.trimmingCharacters(in: .whitespaces))
            }
            if (100...199).contains(status) { continue }
            return HTTPClientResponse(status: status, headers: headers,
                                      body: await bodyPrefix(reader, headers, deadline))
        }
    }

    /// status-line = HTTP-version SP status-code SP [ reason-phrase ] (RFC 9112 §4).
    static func statusCode(_ line: [UInt8]) throws -> Int {
        let parts = line.split(separator: UInt8(ascii: " "), maxSplits: 2,
                               omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0].starts(with: Array("HTTP/1.".utf8)),
              parts[1].count == 3, let code = Int(String(decoding: parts[1], as: UTF8.self)),
              (100...599).contains(code)
        else {
            let shown = Logger.printable(String(decoding: line.prefix(80), as: UTF8.self))
            throw HTTPClientError.exchange("not an HTTP/1.x status line: \(shown)")
        }
        return code
    }

    /// Up to `bodyLimit` octets of a body with a Content-Length; a chunked or unframed body
    /// is not read (the connection closes anyway), and a failure here loses only the text.
    static func bodyPrefix(_ reader: LineReader, _ headers: HTTPHeaders,
                           _ deadline: ContinuousClock.Instant) async -> [UInt8] {
        guard let length = headers["Content-Length"].flatMap(Int.init), length > 0 else {
            return []
        }
        return (try? await reader.readExactly(min(length, bodyLimit), deadline: deadline)) ?? []
    }
}
