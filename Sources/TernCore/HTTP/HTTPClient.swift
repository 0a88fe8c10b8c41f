// A small HTTP/1.1 client for the API's webhooks, over TCP or TLS, on the event loop like
// every other socket. It POSTs a `Content-Length` body and reads the status line, the header
// fields and a bounded prefix of the body, which is all a webhook sender needs to know what
// became of a post. The whole exchange has one deadline, so a slow endpoint cannot hold a
// task longer.
//
// With an `HTTPConnectionPool` a connection stays open for the next post to the same address
// while the server lets it (RFC 9112 §9.3): an answer in HTTP/1.1, without `Connection:
// close`, its body framed by `Content-Length` and read whole. A kept connection the server
// has closed meanwhile is found before the post, or, when the close crosses the request, by
// the answer never starting: then the post goes once more on a new connection. Without a
// pool every post has a connection of its own and says `Connection: close` (§9.6).
//
// Known limits: a stray answer that arrives just as the next request goes is taken as its
// answer (HTTP/1.1 gives no way to tell); a 408 sent on an idle kept connection fails the post
// it crosses (the caller retries later); a server's `Keep-Alive: timeout` is not read.
//
// Names are never resolved here (nothing may ask the system's resolver): a target holds an
// IP literal, an address given with the URL (`connect`), or the caller passes the address it
// resolved through its own configured resolver.

import Foundation
import Synchronization

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

    public var description: String { origin + target }

    /// Scheme, host and port: what a kept connection must match besides its address.
    public var origin: String { (secure ? "https://" : "http://") + hostField }
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

/// One open connection to one target, between posts. Used by one post at a time: the pool
/// hands it to one task, which gives it back or closes it.
final class HTTPConnection: @unchecked Sendable {
    let address: SocketAddress
    /// The URL's scheme, host and port: a connection serves only posts to the same origin.
    let origin: String
    let channel: any ByteStream
    let reader: LineReader
    /// Read and written only under the pool's lock.
    var idleSince = ContinuousClock.now

    init(address: SocketAddress, origin: String, channel: any ByteStream) {
        self.address = address
        self.origin = origin
        self.channel = channel
        reader = LineReader(channel)
    }

    /// Still open and silent: a server says nothing between answers, so anything it sent
    /// (its close, most often) means the connection cannot carry another request.
    var isQuiet: Bool {
        guard reader.buffered == 0 else { return false }
        do {
            return try channel.readIfReady(max: 1) == nil
        } catch {
            return false
        }
    }

    func close() { channel.close() }
}

/// The idle connections kept for one endpoint. Posts take the most recently used one first,
/// so that a burst reuses few connections and the rest time out.
public final class HTTPConnectionPool: Sendable {
    /// Connections kept idle at most; more are closed as their posts end.
    public let maxIdle: Int
    /// How long an idle connection is kept. Below the 5 s that common servers keep one, so
    /// that a post rarely meets a connection the server is closing at that moment.
    public let idleTimeout: Duration
    private let idle = Mutex<[HTTPConnection]>([])
    private let opened = Atomic<Int>(0)

    public init(maxIdle: Int, idleTimeout: Duration = .seconds(4)) {
        self.maxIdle = maxIdle
        self.idleTimeout = idleTimeout
    }

    deinit { closeAll() }

    /// Connections opened through this pool so far.
    public var connectionsOpened: Int { opened.load(ordering: .relaxed) }

    public var idleCount: Int { idle.withLock { $0.count } }

    func countOpened() { opened.add(1, ordering: .relaxed) }

    /// An idle connection to `address` for `origin` that is still open, if any.
    func take(_ origin: String, _ address: SocketAddress) -> HTTPConnection? {
        closeExpired()
        while let connection = idle.withLock({ list -> HTTPConnection? in
            guard let i = list.lastIndex(where: { $0.origin == origin && $0.address == address })
            else { return nil }
            return list.remove(at: i)
        }) {
            if connection.isQuiet { return connection }
            connection.close()
        }
        return nil
    }

    func giveBack(_ connection: HTTPConnection) {
        let kept = idle.withLock { list -> Bool in
            guard list.count < maxIdle else { return false }
            connection.idleSince = .now
            list.append(connection)
            return true
        }
        if !kept { connection.close() }
    }

    /// Closes the connections idle for longer than `idleTimeout`.
    public func closeExpired() {
        let oldest = ContinuousClock.now - idleTimeout
        let expired = idle.withLock { list -> [HTTPConnection] in
            let out = list.filter { $0.idleSince < oldest }
            list.removeAll { $0.idleSince < oldest }
            return out
        }
        expired.forEach { $0.close() }
    }

    public func closeAll() {
        idle.withLock { list in
            list.forEach { $0.close() }
            list.removeAll()
        }
    }
}

public enum HTTPClient {
    /// The body prefix kept from a response.
    public static let bodyLimit = 1024
    /// The longest body read whole so that its connection can carry the next request; a
    /// longer one is cut at `bodyLimit` and its connection closed.
    static let drainLimit = 65536
    /// Longest status or header line read (RFC 9112 §2.3 leaves it to the client).
    static let lineLimit = 8192
    static let fieldLimit = 100
    /// The white space around a field value: SP and HTAB only (RFC 9110 §5.6.3).
    static let ows = CharacterSet(charactersIn: " \t")

    /// POSTs `body` to `target` (at `address`, when the caller resolved its host) and returns
    /// the final response. `tls` is the client context for https; the certificate must
    /// verify for the URL's host or the post fails. With a `pool`, the post goes on a kept
    /// connection to the same address when one is open, and leaves its own there when the
    /// server allows.
    public static func post(_ target: HTTPTarget, at address: SocketAddress? = nil,
                            headers: HTTPHeaders, body: [UInt8], timeout: Duration,
                            tls: TLSContext?, pool: HTTPConnectionPool? = nil)
        async throws(HTTPClientError) -> HTTPClientResponse
    {
        guard let address = address ?? target.address else {
            throw .connect("no address for \(target.host)")
        }
        let deadline = ContinuousClock.now + timeout
        let request = request(target, headers: headers, body: body, keepAlive: pool != nil)
        let origin = target.origin
        if let pool, let kept = pool.take(origin, address),
           let response = try await exchange(kept, request, kept: true, pool: pool,
                                             deadline: deadline) {
            return response
        }
        // No kept connection, or the server closed it as the request went: it has not
        // answered, so the post goes (again) on a new connection.
        let connection = try await open(target, address, tls: tls, deadline: deadline)
        pool?.countOpened()
        guard let response = try await exchange(connection, request, kept: false, pool: pool,
                                                deadline: deadline) else {
            throw .exchange("the connection closed before a response")
        }
        return response
    }

    /// The connection closed, or was reset, before the first octet of an answer.
    struct ClosedBeforeAnswer: Error {}

    /// A new connection to `address`, with TLS for an https target.
    static func open(_ target: HTTPTarget, _ address: SocketAddress, tls: TLSContext?,
                     deadline: ContinuousClock.Instant)
        async throws(HTTPClientError) -> HTTPConnection
    {
        let stream: any ByteStream
        do {
            stream = try await TCPConnection.connect(to: address, deadline: deadline)
        } catch IOError.timedOut {
            throw .timedOut
        } catch {
            throw .connect("\(error)")
        }
        guard target.secure else {
            return HTTPConnection(address: address, origin: target.origin, channel: stream)
        }
        guard let tls else {
            stream.close()
            throw .tls("no TLS context for an https URL")
        }
        do {
            let session = try await TLSStream.connect(over: stream, context: tls,
                                                      host: target.host, deadline: deadline)
            guard session.info.verified else {
                throw HTTPClientError.tls("the certificate of \(target.host) does not "
                                          + "verify: \(session.info.verifyError)")
            }
            return HTTPConnection(address: address, origin: target.origin, channel: session)
        } catch {
            stream.close()
            switch error {
            case let e as HTTPClientError: throw e
            case IOError.timedOut: throw .timedOut
            default: throw .tls("\(error)")
            }
        }
    }

    /// One request and its answer on `connection`, which then goes back to `pool` when the
    /// answer allows, else is closed. Nil when the connection ended before any answer came.
    static func exchange(_ connection: HTTPConnection, _ request: [UInt8], kept: Bool,
                         pool: HTTPConnectionPool?, deadline: ContinuousClock.Instant)
        async throws(HTTPClientError) -> HTTPClientResponse?
    {
        do {
            let (response, reusable) = try await send(connection, request, kept: kept,
                                                      deadline: deadline)
            if let pool, reusable {
                pool.giveBack(connection)
            } else {
                connection.close()
            }
            return response
        } catch {
            connection.close()
            switch error {
            case let e as HTTPClientError: throw e
            case IOError.timedOut: throw .timedOut
            case is ClosedBeforeAnswer: return nil
            default: throw .exchange("\(error)")
            }
        }
    }

    /// The request's octets: request line, Host, the caller's fields, Content-Length,
    /// `Connection: close` unless the connection is to be kept, then the body.
    static func request(_ target: HTTPTarget, headers: HTTPHeaders, body: [UInt8],
                        keepAlive: Bool = false) -> [UInt8] {
        var head = "POST \(target.target) HTTP/1.1\r\nHost: \(target.hostField)\r\n"
        for (name, value) in headers {
            head += "\(name): \(value)\r\n"
        }
        head += "Content-Length: \(body.count)\r\n"
        head += keepAlive ? "\r\n" : "Connection: close\r\n\r\n"
        return Array(head.utf8) + body
    }

    /// Writes the request and reads the final answer; says too whether the connection can
    /// carry another request. On a `kept` connection a failure before the answer starts
    /// (other than the deadline) throws `ClosedBeforeAnswer`.
    static func send(_ connection: HTTPConnection, _ request: [UInt8], kept: Bool,
                     deadline: ContinuousClock.Instant)
        async throws -> (response: HTTPClientResponse, reusable: Bool)
    {
        do {
            try await connection.channel.write(request, deadline: deadline)
        } catch IOError.timedOut {
            throw IOError.timedOut
        } catch {
            if kept { throw ClosedBeforeAnswer() }
            throw error
        }
        return try await readResponse(connection.reader, kept: kept, deadline: deadline)
    }

    /// Reads responses until a final one (1xx are interim, RFC 9110 §15.2).
    static func readResponse(_ reader: LineReader, kept: Bool = false,
                             deadline: ContinuousClock.Instant)
        async throws -> (response: HTTPClientResponse, reusable: Bool)
    {
        var first = true
        while true {
            let line: [UInt8]?
            do {
                line = try await reader.readLine(limit: lineLimit, deadline: deadline)
            } catch let e as IOError where e == .timedOut || e == .cancelled {
                throw e
            } catch {
                // Octets of an answer (a cut or overlong status line) mean the server has
                // the request: only a connection that ended silent lets it go again.
                if kept && first && reader.buffered == 0 { throw ClosedBeforeAnswer() }
                throw error
            }
            guard let line else {
                if kept && first { throw ClosedBeforeAnswer() }
                throw HTTPClientError.exchange("the connection closed before a response")
            }
            first = false
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
                headers.add(name, value.trimmingCharacters(in: ows))
            }
            if (100...199).contains(status) { continue }
            let (body, whole) = await readBody(reader, status: status, headers, deadline)
            let persistent = line.starts(with: Array("HTTP/1.1 ".utf8))
                && !headers.values("Connection").contains { value in
                    value.split(separator: ",").contains {
                        $0.trimmingCharacters(in: .whitespaces).lowercased() == "close"
                    }
                }
            return (HTTPClientResponse(status: status, headers: headers, body: body),
                    persistent && whole && reader.buffered == 0)
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

    /// Up to `bodyLimit` octets of the body, and whether all of it was read, so that the
    /// next answer on the connection starts where this one ends (RFC 9112 §6.3). A body of
    /// more than `drainLimit` octets, a chunked one and one that runs to the close are not
    /// read whole (the connection closes anyway); a failure here loses only the text.
    static func readBody(_ reader: LineReader, status: Int, _ headers: HTTPHeaders,
                         _ deadline: ContinuousClock.Instant) async -> ([UInt8], whole: Bool) {
        if status == 204 || status == 304 { return ([], true) }
        // Framed by exactly one Content-Length of digits only, read as the server reads a
        // request's.
        let lengths = headers.values("Content-Length")
        guard !headers.contains("Transfer-Encoding"), !lengths.isEmpty,
              let length = try? HTTPParser.contentLength(lengths)
        else { return ([], false) }
        if length == 0 { return ([], true) }
        if length > drainLimit {
            let prefix = try? await reader.readExactly(bodyLimit, deadline: deadline)
            return (prefix ?? [], false)
        }
        guard let body = try? await reader.readExactly(length, deadline: deadline) else {
            return ([], false)
        }
        return (Array(body.prefix(bodyLimit)), true)
    }
}
