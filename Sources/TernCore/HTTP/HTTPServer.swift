// A small HTTP/1.1 server for the daemons: the API's endpoints and every daemon's /metrics.
//
// One task per connection reads requests one after another (keep-alive, pipelining in
// order), with a limit on every part of a request and a deadline on every wait, so a client
// can cost only bounded memory and time. Bodies come with Content-Length only. A request the
// server refuses (malformed, too large, too slow) gets its status and a problem document
// (RFC 9457), and its connection is closed, since the server cannot know where the next
// request would begin. Every answer carries X-Request-Id: the client's own when it sent a
// sane one, else one the server makes; handlers put it in their log lines (`request_id`).
// On shutdown it stops accepting, closes idle connections, lets requests in progress finish
// for a bounded grace, then cancels what is left.
//
// A full server makes room rather than leave new clients in the kernel's queue behind
// clients that connect and then send nothing, or a byte now and then (slowloris): it closes
// the connection that has waited longest for a request that has not reached its handler.

import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Limits and timeouts of an `HTTPServer`.
public struct HTTPServerSettings: Sendable {
    /// Longest request line in octets; RFC 9112 §3 asks servers to take at least 8000.
    public var maxRequestLine = 8192
    /// Octets of all header lines together; more is 431 (RFC 6585 §5).
    public var maxHeaderBytes = 65536
    /// Header fields per request; more is 431.
    public var maxHeaderFields = 100
    /// Octets of one request body; a larger Content-Length is 413 before the body is read.
    public var maxBody: Int
    /// How long a kept-alive connection may wait for its next request.
    public var idleTimeout: Duration = .seconds(30)
    /// How long one request may take to arrive once its first line is in (slow clients).
    public var requestTimeout: Duration = .seconds(60)
    /// How long writing one response may take.
    public var writeTimeout: Duration = .seconds(30)
    /// Connections served at once; further clients wait in the kernel's accept queue, unless
    /// a connection may be shed for them (`shedAfter`).
    public var maxConnections = 1024
    /// With every connection taken, one whose request has not reached its handler after this
    /// long (an idle keep-alive, a head or body still arriving) is closed for a new client.
    public var shedAfter: Duration = .seconds(1)
    /// On shutdown, how long requests in progress may take to finish.
    public var shutdownGrace: Duration = .seconds(10)

    public init(maxBody: Int = 1 << 20) { self.maxBody = maxBody }
}

public final class HTTPServer: Sendable {
    public let address: SocketAddress
    private let listener: TCPListener
    private let settings: HTTPServerSettings
    private let logger: Logger
    private let handler: HTTPHandler
    private let registry = Mutex(Registry())

    private struct Entry {
        let connection: TCPConnection
        var busy: Bool
        /// Its request is with the handler, or its answer being written: never shed.
        var handling = false
        /// Since when it has waited for its request (accepted, or its last answer written).
        var waitingSince: ContinuousClock.Instant = .now
        var shed = false
    }

    private struct Registry {
        var draining = false
        var next: UInt64 = 0
        var connections: [UInt64: Entry] = [:]
        /// Connections shed whose tasks have not yet left: their places count as free.
        var shedLeaving = 0
        /// Connections shed since the last log line about it, and when that was.
        var shedSinceLog = 0
        var loggedShedAt: ContinuousClock.Instant?
    }

    /// Serves on `listener` (bound already, or adopted from systemd); the server closes it
    /// when it stops.
    public init(listener: TCPListener, settings: HTTPServerSettings, logger: Logger,
                handler: @escaping HTTPHandler) {
        self.listener = listener
        self.address = listener.address
        self.settings = settings
        self.logger = logger
        self.handler = handler
    }

    /// Connections open right now.
    public var connectionCount: Int { registry.withLock { $0.connections.count } }

    /// Accepts and serves until `shutdown` is requested; returns once every connection is
    /// done or the grace has run out.
    public func serve(until shutdown: Shutdown) async {
        let (accepted, sink) = AsyncStream.makeStream(of: (TCPConnection, UInt64).self)
        await withDiscardingTaskGroup { group in
            group.addTask {
                await withDiscardingTaskGroup { inner in
                    inner.addTask { await self.acceptLoop(into: sink) }
                    await shutdown.wait()
                    inner.cancelAll()
                }
                sink.finish()
            }
            for await (connection, id) in accepted {
                group.addTask { await self.serveConnection(connection, id: id) }
            }
            listener.close()
            await drain()
            group.cancelAll()
        }
    }

    // MARK: Accepting and draining

    private func acceptLoop(into sink: AsyncStream<(TCPConnection, UInt64)>.Continuation)
        async
    {
        while !Task.isCancelled {
            // Back-pressure: past the limit, clients wait in the listen backlog. A connection
            // counts from the moment it is accepted, not when its task starts, so a burst
            // queued between the two cannot go past the limit.
            if registry.withLock({ $0.connections.count - $0.shedLeaving })
                >= settings.maxConnections
            {
                if listener.hasWaitingClient { shedLongestWaiting() }
                try? await Task.sleep(for: .milliseconds(10))
                continue
            }
            do {
                let connection = try await listener.accept()
                guard let id = register(connection) else {
                    connection.close()
                    continue
                }
                sink.yield((connection, id))
            } catch IOError.cancelled {
                return
            } catch {
                if Task.isCancelled { return }
                logger.error("accept failed: \(error)", ("listen", address.description))
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    func register(_ connection: TCPConnection) -> UInt64? {
        registry.withLock { r -> UInt64? in
            guard !r.draining else { return nil }
            r.next += 1
            r.connections[r.next] = Entry(connection: connection, busy: false)
            return r.next
        }
    }

    /// Closes the connection that has waited longest, at least `shedAfter`, for a request
    /// that has not reached its handler; its own task sees the end of the stream and leaves.
    func shedLongestWaiting() {
        let now = ContinuousClock.now
        let report = registry.withLock { r -> Int? in
            let candidates = r.connections.filter {
                !$0.value.handling && !$0.value.shed
                    && now - $0.value.waitingSince >= settings.shedAfter
            }
            guard let (id, entry) = candidates.min(by: {
                $0.value.waitingSince < $1.value.waitingSince
            }) else { return nil }
            // shutdown(2), as in `drain`: the connection's task owns the descriptor.
            Glibc.shutdown(entry.connection.fd, Int32(SHUT_RDWR))
            r.connections[id]?.shed = true
            r.shedLeaving += 1
            r.shedSinceLog += 1
            // One line a minute at most: a flood of slow clients must not flood the journal.
            if let last = r.loggedShedAt, now - last < .seconds(60) { return nil }
            defer { r.shedSinceLog = 0; r.loggedShedAt = now }
            return r.shedSinceLog
        }
        if let report {
            logger.warning("every connection taken: closed \(report) that waited longest "
                           + "for a request, to make room for new clients",
                           ("listen", address.description),
                           ("max_connections", String(settings.maxConnections)))
        }
    }

    private func unregister(_ id: UInt64) {
        registry.withLock { r in
            if r.connections.removeValue(forKey: id)?.shed == true { r.shedLeaving -= 1 }
        }
    }

    /// Marks a connection busy (a request has begun) or idle. Returns false for idle when
    /// the server is draining: the connection should close instead of waiting.
    func mark(_ id: UInt64, busy: Bool) -> Bool {
        registry.withLock { r in
            r.connections[id]?.busy = busy
            // Its wait starts when it is accepted or answered, not when its task gets to run:
            // on a loaded server the two can be far apart.
            if !busy, r.connections[id]?.handling == true {
                r.connections[id]?.handling = false
                r.connections[id]?.waitingSince = .now
            }
            return busy || !r.draining
        }
    }

    /// The request is with its handler from now on: the connection is not to be shed. False
    /// when it was shed already: the request may still have been read from what the kernel
    /// held, but the client is cut off and would never see the answer.
    func markHandling(_ id: UInt64) -> Bool {
        registry.withLock { r in
            guard r.connections[id]?.shed == false else { return false }
            r.connections[id]?.handling = true
            return true
        }
    }

    private var draining: Bool { registry.withLock { $0.draining } }

    /// Closes idle connections and waits, up to the grace, for busy ones to finish.
    private func drain() async {
        registry.withLock { r in
            r.draining = true
            // shutdown(2), not close(2): the connection's task still owns the descriptor and
            // closes it; its pending read simply sees the end of the stream.
            for entry in r.connections.values where !entry.busy {
                Glibc.shutdown(entry.connection.fd, Int32(SHUT_RDWR))
            }
        }
        let deadline = ContinuousClock.now + settings.shutdownGrace
        while connectionCount > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let left = registry.withLock { r -> Int in
            for entry in r.connections.values {
                Glibc.shutdown(entry.connection.fd, Int32(SHUT_RDWR))
            }
            return r.connections.count
        }
        if left > 0 {
            logger.warning("cutting \(left) connection(s) short at shutdown")
        }
    }

    // MARK: One connection

    private enum Incoming {
        case request(HTTPRequest, keepAlive: Bool, head: Bool)
        case refused(HTTPProblem)
        case gone
    }

    func serveConnection(_ connection: TCPConnection, id: UInt64) async {
        let reader = LineReader(connection)
        while mark(id, busy: false) {
            switch await readRequest(reader, connection: connection, id: id) {
            case .gone:
                finish(connection, id: id)
                return
            case .refused(let problem):
                logger.debug("refused request: \(problem.message)",
                             ("status", String(problem.status)),
                             ("peer", connection.remote?.description ?? ""))
                // A request refused before its head was read has no id of its own.
                let response = HTTPResponse.error(
                    problem.status, problem.message,
                    headers: ["X-Request-Id": HTTPRequest.requestID(offered: nil)])
                if await write(response, to: connection, head: false, close: true) {
                    await lingeringClose(connection)
                }
                finish(connection, id: id)
                return
            case .request(let request, let keepAlive, let head):
                let started = ContinuousClock.now
                guard markHandling(id) else {
                    finish(connection, id: id)
                    return
                }
                var response = await handler(request)
                response.headers.set("X-Request-Id", request.requestID)
                let close = !keepAlive || draining
                let written = await write(response, to: connection, head: head, close: close)
                logger.debug("\(request.method) \(Logger.printable(request.path, limit: 200))",
                             ("request_id", request.requestID),
                             ("status", String(response.status)),
                             ("ms", String((ContinuousClock.now - started).milliseconds)))
                if !written || close {
                    if written { await lingeringClose(connection) }
                    finish(connection, id: id)
                    return
                }
            }
        }
        finish(connection, id: id)
    }

    private func finish(_ connection: TCPConnection, id: UInt64) {
        unregister(id)
        connection.close()
    }

    /// Reads one request. A refusal is returned, never thrown, so every path answers.
    private func readRequest(_ reader: LineReader, connection: TCPConnection, id: UInt64)
        async -> Incoming
    {
        // The request line. RFC 9112 §2.2: ignore at least one empty line before it.
        let idleDeadline = ContinuousClock.now + settings.idleTimeout
        var first: [UInt8] = []
        var emptyLines = 0
        while first.isEmpty {
            do {
                guard let line = try await reader.readLine(
                    limit: settings.maxRequestLine, deadline: idleDeadline) else { return .gone }
                first = line
            } catch LineError.tooLong {
                return .refused(HTTPProblem(414, "the request line is longer than "
                    + "\(settings.maxRequestLine) octets"))
            } catch IOError.timedOut {
                return reader.buffered > 0 ? .refused(HTTPProblem(408, "request too slow")) : .gone
            } catch {
                return .gone
            }
            if first.isEmpty {
                emptyLines += 1
                if emptyLines > 8 { return .refused(HTTPProblem(400, "empty lines, no request")) }
            }
        }
        _ = mark(id, busy: true)
        let deadline = ContinuousClock.now + settings.requestTimeout
        let line: HTTPRequestLine
        do throws(HTTPProblem) {
            line = try HTTPParser.requestLine(first)
        } catch {
            return .refused(error)
        }

        // Header fields, within a budget of octets and of fields.
        var headers = HTTPHeaders()
        var budget = settings.maxHeaderBytes
        while true {
            let raw: [UInt8]
            do {
                guard let l = try await reader.readLine(limit: max(0, budget), deadline: deadline)
                else { return .gone }
                raw = l
            } catch LineError.tooLong {
                return .refused(HTTPProblem(431, "the header section is larger than "
                    + "\(settings.maxHeaderBytes) octets"))
            } catch IOError.timedOut {
                return .refused(HTTPProblem(408, "the request head took too long"))
            } catch {
                return .gone
            }
            if raw.isEmpty { break }
            budget -= raw.count + 2
            guard headers.count < settings.maxHeaderFields else {
                return .refused(HTTPProblem(431, "more than \(settings.maxHeaderFields) "
                    + "header fields"))
            }
            do throws(HTTPProblem) {
                let (name, value) = try HTTPParser.field(raw)
                headers.add(name, value)
            } catch {
                return .refused(error)
            }
        }

        let http11 = line.minor >= 1
        // RFC 9112 §3.2: an HTTP/1.1 request needs exactly one Host field.
        if http11 && headers.values("Host").count != 1 {
            return .refused(HTTPProblem(400, "an HTTP/1.1 request needs exactly one Host field"))
        }
        // RFC 9112 §6.1: Transfer-Encoding overrides Content-Length; this server frames
        // bodies by Content-Length only, so any transfer coding ends the connection.
        if headers.contains("Transfer-Encoding") {
            let codings = headers.tokens("Transfer-Encoding")
            if codings.last == "chunked" {
                return .refused(HTTPProblem(411, "chunked request bodies are not accepted; "
                    + "send the body with a Content-Length"))
            }
            return .refused(HTTPProblem(501, "transfer coding \(codings.joined(separator: ", ")) "
                + "is not implemented"))
        }
        let length: Int
        do throws(HTTPProblem) {
            length = try HTTPParser.contentLength(headers.values("Content-Length"))
        } catch {
            return .refused(error)
        }
        // RFC 9110 §15.5.14: refuse before reading; the client is told by the 413 (and, if it
        // waits for 100-continue, never sends the body at all).
        if length > settings.maxBody {
            return .refused(HTTPProblem(413, "the request body is \(length) octets; the limit "
                + "is \(settings.maxBody)"))
        }
        if let expect = headers["Expect"] {
            // RFC 9110 §10.1.1: 100-continue is the only expectation; others get 417.
            guard expect.lowercased() == "100-continue" else {
                return .refused(HTTPProblem(417, "only Expect: 100-continue is understood"))
            }
            if http11 && length > 0 && reader.buffered < length {
                let interim = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)
                do {
                    try await connection.write(interim, deadline: .now + settings.writeTimeout)
                } catch {
                    return .gone
                }
            }
        }
        var body: [UInt8] = []
        if length > 0 {
            do {
                body = try await reader.readExactly(length, deadline: deadline)
            } catch IOError.timedOut {
                return .refused(HTTPProblem(408, "the request body took too long"))
            } catch {
                return .gone
            }
        }
        // RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 is answered and closed.
        let keepAlive = http11 && !headers.tokens("Connection").contains("close")
        let request = HTTPRequest(method: line.method, path: line.path, query: line.query,
                                  headers: headers, body: body, remote: connection.remote)
        return .request(request, keepAlive: keepAlive, head: line.method == "HEAD")
    }

    // MARK: Writing

    /// Frames and writes `response`; false if the client is gone.
    private func write(_ response: HTTPResponse, to connection: TCPConnection, head: Bool,
                       close: Bool) async -> Bool {
        let bytes = HTTPServer.encode(response, head: head, close: close,
                                      now: Int64(time(nil)))
        do {
            try await connection.write(bytes, deadline: .now + settings.writeTimeout)
            return true
        } catch {
            return false
        }
    }

    /// The response on the wire. Fields a handler might set that the server owns are
    /// replaced, and a field that could split the response (a CR or LF in it) is dropped.
    static func encode(_ response: HTTPResponse, head: Bool, close: Bool, now: Int64)
        -> [UInt8]
    {
        var status = response.status
        if !(200...599).contains(status) { status = 500 }
        var out = "HTTP/1.1 \(status) \(HTTPResponse.reason(status))\r\n"
        out += "Date: \(HTTPDate.string(secondsSinceEpoch: now))\r\n"
        let owned: Set<String> = ["date", "content-length", "transfer-encoding", "connection"]
        for (name, value) in response.headers {
            guard HTTPParser.isToken(Array(name.utf8)[...]), !owned.contains(name.lowercased()),
                  !value.utf8.contains(where: { $0 < 0x20 && $0 != 0x09 || $0 == 0x7F })
            else { continue }
            out += "\(name): \(value)\r\n"
        }
        // RFC 9110 §8.6: no Content-Length in 204 or 304; a HEAD answer carries the length
        // the GET answer would have.
        let bodiless = status == 204 || status == 304
        if !bodiless { out += "Content-Length: \(response.body.count)\r\n" }
        if close { out += "Connection: close\r\n" }
        out += "\r\n"
        var bytes = Array(out.utf8)
        if !head && !bodiless { bytes += response.body }
        return bytes
    }

    /// RFC 9112 §9.6: close our side, then read and discard what the client still sends
    /// (say the rest of a refused body) for a while, so that our answer is not lost to a
    /// reset caused by unread data.
    private func lingeringClose(_ connection: TCPConnection) async {
        Glibc.shutdown(connection.fd, Int32(SHUT_WR))
        let deadline = ContinuousClock.now + .seconds(2)
        var discarded = 0
        while discarded < 64 << 20 {
            guard let bytes = try? await connection.read(max: 65536, deadline: deadline),
                  !bytes.isEmpty else { return }
            discarded += bytes.count
        }
    }
}
