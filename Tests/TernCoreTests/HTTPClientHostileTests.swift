// The HTTP client's kept connections against receivers that misbehave: answers in pieces,
// stray or late octets, odd framing, half-closes and resets, silence, TLS records between
// answers. The server runs each connection on a thread of its own with a blocking socket, so
// that a script can write byte by byte, sleep, shut down one side or reset.

import COpenSSL
import Foundation
import Synchronization
import Testing
@testable import TernCore
import TernTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// One accepted connection of a `HostileHTTPServer`, in plain TCP or TLS.
final class HostilePeer: @unchecked Sendable {
    let fd: Int32
    let index: Int
    private let server: HostileHTTPServer
    private(set) var ssl: OpaquePointer?
    private var buffer: [UInt8] = []

    init(fd: Int32, index: Int, server: HostileHTTPServer) {
        self.fd = fd
        self.index = index
        self.server = server
    }

    deinit { if let ssl { SSL_free(ssl) } }

    /// The next request's line, with its body read; nil when the client closed.
    func readRequest() -> String? {
        guard let (line, length) = readHead(), readBody(length) else { return nil }
        return line
    }

    /// Reads and drops a body of `length` octets; false when the client closed first.
    func readBody(_ length: Int) -> Bool {
        while buffer.count < length {
            guard fill() else { return false }
        }
        buffer.removeFirst(length)
        return true
    }

    /// The next request's line and its Content-Length, leaving the body unread.
    func readHead() -> (String, Int)? {
        while true {
            let end = Array("\r\n\r\n".utf8)
            if let at = buffer.indices.first(where: { buffer[$0...].starts(with: end) }) {
                let head = String(decoding: buffer[..<at], as: UTF8.self)
                buffer.removeFirst(at + 4)
                let lines = head.components(separatedBy: "\r\n")
                let length = lines.dropFirst().compactMap { line -> Int? in
                    guard line.lowercased().hasPrefix("content-length:") else { return nil }
                    return Int(line.dropFirst(15).trimmingCharacters(in: .whitespaces))
                }.first ?? 0
                server.record("\(index) \(lines[0])")
                return (lines[0], length)
            }
            guard fill() else { return nil }
        }
    }

    /// Reads and drops what the client sends until it closes or `limit` passes.
    func drain(for limit: Duration = .seconds(10)) {
        var tv = timeval(tv_sec: Int(limit.components.seconds), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        while fill() { buffer.removeAll() }
    }

    private func fill() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 16384)
        let n: Int
        if let ssl {
            n = Int(SSL_read(ssl, &chunk, Int32(chunk.count)))
        } else {
            n = Glibc.read(fd, &chunk, chunk.count)
        }
        if n <= 0 { return false }
        buffer += chunk[..<n]
        return true
    }

    func write(_ text: String) { write(Array(text.utf8)) }

    func write(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        if let ssl {
            _ = bytes.withUnsafeBytes { SSL_write(ssl, $0.baseAddress, Int32($0.count)) }
        } else {
            _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }
    }

    /// Writes `text` one octet at a time, pausing between octets.
    func trickle(_ text: String, pause: Duration = .microseconds(300)) {
        for byte in text.utf8 {
            write([byte])
            Thread.sleep(forTimeInterval: pause.seconds)
        }
    }

    func sleep(_ time: Duration) { Thread.sleep(forTimeInterval: time.seconds) }

    /// Tells the test the script got here (`HostileHTTPServer.marks`).
    func mark() { server.mark() }

    func shutdownWrite() { _ = Glibc.shutdown(fd, Int32(SHUT_WR)) }

    /// Makes the close that ends the script a reset (RST) rather than a FIN.
    func resetOnClose() {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
    }

    /// Sends close_notify (the TCP connection stays open).
    func closeNotify() { if let ssl { _ = SSL_shutdown(ssl) } }

    /// Sends a TLS 1.3 session ticket now, long after the handshake.
    func lateTicket() {
        guard let ssl else { return }
        _ = SSL_new_session_ticket(ssl)
        _ = SSL_do_handshake(ssl)
    }

    /// Updates the server's keys and asks the client to update its own (TLS 1.3).
    func keyUpdate() {
        guard let ssl else { return }
        _ = SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED)
        _ = SSL_do_handshake(ssl)
    }

    /// Sends a HelloRequest: the client is asked to renegotiate (TLS 1.2).
    func renegotiate() {
        guard let ssl else { return }
        _ = SSL_renegotiate(ssl)
        _ = SSL_do_handshake(ssl)
    }

    /// The server's TLS handshake; false when it fails.
    func startTLS(_ context: TLSContext) -> Bool {
        guard let ssl = SSL_new(context.ctx) else { return false }
        self.ssl = ssl
        SSL_set_fd(ssl, fd)
        return SSL_accept(ssl) == 1
    }
}

/// Accepts on 127.0.0.1 and runs `script` on a thread per connection.
final class HostileHTTPServer: @unchecked Sendable {
    let listener: Int32
    let address: SocketAddress
    private let script: @Sendable (HostilePeer) -> Void
    private let seen = Mutex<[String]>([])
    /// Open connection descriptors, closed under the lock so `stop` never hits a reused one.
    private let open = Mutex<Set<Int32>>([])
    private let threads = Atomic<Int>(0)
    private let count = Atomic<Int>(0)
    /// `HostilePeer.mark`s so far: a test waits for the server to have written something
    /// rather than for a time that a loaded machine may overrun.
    private let marked = Atomic<Int>(0)

    init(_ script: @escaping @Sendable (HostilePeer) -> Void) throws {
        // OpenSSL writes with write(2): a client that left must not kill the test process.
        signal(SIGPIPE, SIG_IGN)
        let (fd, port) = try loopbackSocket(SOCK_STREAM)
        listener = fd
        address = SocketAddress("127.0.0.1:\(port)")!
        self.script = script
        threads.add(1, ordering: .relaxed)
        Thread.detachNewThread { self.acceptLoop() }
    }

    var requests: [String] { seen.withLock { $0 } }

    func record(_ line: String) { seen.withLock { $0.append(line) } }

    func mark() { marked.add(1, ordering: .sequentiallyConsistent) }

    /// Waits until the scripts have made `count` marks in all, for 10 s at most (a script
    /// that failed early makes none, and the test's own checks then say what went wrong).
    func marks(_ count: Int) async {
        let end = ContinuousClock.now + .seconds(10)
        while marked.load(ordering: .sequentiallyConsistent) < count, .now < end {
            try? await Task.sleep(for: .milliseconds(2))
        }
    }

    private func acceptLoop() {
        defer { threads.add(-1, ordering: .relaxed) }
        while true {
            let fd = accept(listener, nil, nil)
            if fd < 0 {
                if errno == EINTR { continue }
                return
            }
            // Close-on-exec: a test that spawns openssl meanwhile must not hold our sockets
            // open (the client would see their close late). accept4 would do it at once, but
            // it is declared only by CLinux, and importing that module here hides
            // <sys/socket.h>'s names from the other files of this target in a clean build.
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            open.withLock { _ = $0.insert(fd) }
            let index = count.add(1, ordering: .relaxed).oldValue
            threads.add(1, ordering: .relaxed)
            Thread.detachNewThread {
                let peer = HostilePeer(fd: fd, index: index, server: self)
                self.script(peer)
                self.open.withLock {
                    $0.remove(fd)
                    Glibc.close(fd)
                }
                self.threads.add(-1, ordering: .relaxed)
            }
        }
    }

    /// Stops accepting, cuts the connections still open and waits for every thread.
    func stop() async {
        Glibc.shutdown(listener, Int32(SHUT_RDWR))
        // Again until every thread ends: one may have accepted just before the shutdown.
        while threads.load(ordering: .relaxed) > 0 {
            open.withLock { $0.forEach { Glibc.shutdown($0, Int32(SHUT_RDWR)) } }
            try? await Task.sleep(for: .milliseconds(5))
        }
        Glibc.close(listener)
    }

    /// Client sockets of this process still open to this server (not yet closed: a closed
    /// one is gone or in TIME_WAIT, which has no inode).
    var clientSocketsOpen: Int {
        // Read to the end: the file is made a page at a time.
        let data = FileHandle(forReadingAtPath: "/proc/net/tcp")?.readDataToEndOfFile()
        let text = String(decoding: data ?? Data(), as: UTF8.self)
        let port = String(format: ":%04X", address.port)
        return text.split(separator: "\n").dropFirst().filter { line in
            let f = line.split(separator: " ")
            return f.count > 9 && f[2].hasSuffix(port) && f[9] != "0"
        }.count
    }
}

extension Duration {
    fileprivate var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}

@Suite struct HTTPClientHostileTests {
    static let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    static let stray = "HTTP/1.1 500 Stray\r\nContent-Length: 5\r\n\r\nstray"

    func post(_ server: HostileHTTPServer, _ path: String = "/", pool: HTTPConnectionPool?,
              timeout: Duration = .seconds(5), body: [UInt8] = Array("{}".utf8))
        async throws(HTTPClientError) -> HTTPClientResponse
    {
        let target = HTTPTarget(url: "http://\(server.address)\(path)")!
        return try await HTTPClient.post(target, headers: ["X-Test": "1"], body: body,
                                         timeout: timeout, tls: nil, pool: pool)
    }

    /// Answers every request with `answer` until the client closes.
    static func answering(_ answer: String) -> @Sendable (HostilePeer) -> Void {
        { peer in
            while peer.readRequest() != nil { peer.write(answer) }
        }
    }

    @Test func anAnswerInOneOctetWritesIsReadWholeAndKeepsItsConnection() async throws {
        let server = try HostileHTTPServer { peer in
            while peer.readRequest() != nil {
                peer.trickle("HTTP/1.1 201 Created\r\nX-A: b\r\nContent-Length: 5\r\n\r\nhello")
            }
        }
        let pool = HTTPConnectionPool(maxIdle: 2)
        for _ in 0..<3 {
            let response = try await post(server, pool: pool)
            #expect(response.status == 201)
            #expect(String(decoding: response.body, as: UTF8.self) == "hello")
        }
        #expect(pool.connectionsOpened == 1)
        pool.closeAll()
        await server.stop()
    }

    /// A stray answer that has arrived by the next post is seen before it (one that crosses
    /// the next request cannot be told from its answer: HTTP/1.1 has no request ids).
    @Test func aStrayAnswerThatArrivesLaterIsNeverTakenForTheNextOnes() async throws {
        let server = try HostileHTTPServer { peer in
            while peer.readRequest() != nil {
                peer.write(Self.ok)
                peer.sleep(.milliseconds(30))
                peer.write(Self.stray)
                peer.mark()
            }
        }
        let pool = HTTPConnectionPool(maxIdle: 2)
        for n in 1...3 {
            let response = try await post(server, pool: pool)
            #expect(response.status == 200)
            // Written: give loopback a moment to hand it over.
            await server.marks(n)
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(pool.connectionsOpened == 3)
        pool.closeAll()
        await server.stop()
    }

    @Test(arguments: [
        "HTTP/1.1 100 Continue\r\n\r\n" + ok,
        "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" + ok,
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"
            + "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ok,
    ])
    func interimAnswersComeBeforeTheFinalOne(_ answer: String) async throws {
        let server = try HostileHTTPServer { peer in
            while peer.readRequest() != nil { peer.trickle(answer, pause: .microseconds(50)) }
        }
        let pool = HTTPConnectionPool(maxIdle: 2)
        for _ in 0..<3 {
            let response = try await post(server, pool: pool)
            #expect(response.status == 200)
            #expect(String(decoding: response.body, as: UTF8.self) == "ok")
        }
        #expect(pool.connectionsOpened == 1)
        pool.closeAll()
        await server.stop()
    }

    /// Content-Length values: whether the answer may keep its connection. RFC 9110 §8.6:
    /// Content-Length = 1*DIGIT; anything else is invalid framing (RFC 9112 §6.3).
    @Test(arguments: [
        ("Content-Length:  2 \t", true),
        ("Content-Length: 002", true),
        ("content-length: 2", true),
        ("Content-Length: +2", false),
        ("Content-Length: \u{A0}2", false),
        ("Content-Length: -2", false),
        ("Content-Length: 2, 2", false),
        ("Content-Length: 2 2", false),
        ("Content-Length: 0x2", false),
        ("Content-Length: 99999999999999999999999999", false),
        ("Content-Length: 2\r\nContent-Length: 3", false),
        ("Content-Length: 2\r\nTransfer-Encoding: identity", false),
        ("Transfer-Encoding: chunked\r\nContent-Length: 2", false),
        ("Content-Length : 2", false),
    ])
    func contentLengthFraming(_ field: String, _ keeps: Bool) async throws {
        let server = try HostileHTTPServer(Self.answering("HTTP/1.1 200 OK\r\n\(field)\r\n\r\nok"))
        let pool = HTTPConnectionPool(maxIdle: 2)
        for _ in 0..<2 {
            #expect(try await post(server, pool: pool).status == 200)
        }
        #expect(pool.connectionsOpened == (keeps ? 1 : 2), "\(field)")
        pool.closeAll()
        await server.stop()
    }

    @Test func aServerThatAnswersBeforeReadingTheBody() async throws {
        let server = try HostileHTTPServer { peer in
            while let (_, length) = peer.readHead() {
                peer.write(Self.ok)
                peer.sleep(.milliseconds(20))
                guard peer.readBody(length) else { return }
            }
        }
        let pool = HTTPConnectionPool(maxIdle: 2)
        let body = [UInt8](repeating: 0x61, count: 20000)
        for _ in 0..<3 {
            #expect(try await post(server, pool: pool, body: body).status == 200)
        }
        #expect(pool.connectionsOpened == 1)
        pool.closeAll()
        await server.stop()
    }

    @Test func aServerThatHalfClosesAfterAnswering() async throws {
        let server = try HostileHTTPServer { peer in
            guard peer.readRequest() != nil else { return }
            peer.write(Self.ok)
            peer.shutdownWrite()
            peer.mark()
            // Still reads: a request sent now would get no answer.
            while peer.readRequest() != nil {}
        }
        let pool = HTTPConnectionPool(maxIdle: 2)
        for n in 1...3 {
            #expect(try await post(server, pool: pool).status == 200)
            await server.marks(n)
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(pool.connectionsOpened == 3)
        #expect(server.requests.count == 3)
        pool.closeAll()
        await server.stop()
    }

    @Test func aServerThatResetsAfterAnswering() async throws {
        let server = try HostileHTTPServer { peer in
            guard peer.readRequest() != nil else { return }
            peer.write(Self.ok)
            peer.sleep(.milliseconds(10))
            peer.resetOnClose()
        }
        let pool = HTTPConnectionPool(maxIdle: 2)
        for _ in 0..<3 {
            #expect(try await post(server, pool: pool).status == 200)
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(pool.connectionsOpened == 3)
        #expect(server.requests.count == 3)
        pool.closeAll()
        await server.stop()
    }

    @Test func aKeptConnectionThatNeverAnswersTimesOutWithoutAnotherTry() async throws {
        let server = try HostileHTTPServer { peer in
            guard peer.readRequest() != nil else { return }
            peer.write(Self.ok)
            guard peer.readRequest() != nil else { return }
            peer.drain(for: .seconds(5))
        }
        let pool = HTTPConnectionPool(maxIdle: 2)
        #expect(try await post(server, pool: pool).status == 200)
        let started = ContinuousClock.now
        do {
            _ = try await post(server, pool: pool, timeout: .milliseconds(400))
            Issue.record("a silent server answered")
        } catch {
            #expect(error == .timedOut)
        }
        #expect(ContinuousClock.now - started >= .milliseconds(390))
        #expect(server.requests == ["0 POST / HTTP/1.1", "0 POST / HTTP/1.1"])
        #expect(pool.idleCount == 0)
        await server.stop()
    }

    /// The retry on a new connection has only what is left of the post's one deadline.
    @Test func oneDeadlineCoversThePostAndItsRetry() async throws {
        let server = try HostileHTTPServer { peer in
            guard peer.readRequest() != nil else { return }
            if peer.index == 0 {
                peer.write(Self.ok)
                guard peer.readRequest() != nil else { return }
                peer.sleep(.milliseconds(1000))
                return
            }
            peer.drain(for: .seconds(5))
        }
        let pool = HTTPConnectionPool(maxIdle: 2)
        #expect(try await post(server, pool: pool).status == 200)
        let started = ContinuousClock.now
        do {
            _ = try await post(server, pool: pool, timeout: .seconds(2))
            Issue.record("a silent server answered")
        } catch {
            #expect(error == .timedOut)
        }
        // The drop comes at 1 s, leaving the retry 1 s on a loaded machine; a retry with a
        // deadline of its own would end at 3 s.
        let took = ContinuousClock.now - started
        #expect(took >= .milliseconds(1990) && took < .milliseconds(2700), "\(took)")
        #expect(server.requests == ["0 POST / HTTP/1.1", "0 POST / HTTP/1.1",
                                    "1 POST / HTTP/1.1"])
        await server.stop()
    }

    /// 204 and 304 have no body whatever their fields say (RFC 9112 §6.3).
    @Test(arguments: [
        "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
    ])
    func aBodylessStatusIgnoresItsFraming(_ answer: String) async throws {
        let server = try HostileHTTPServer { peer in
            guard peer.readRequest() != nil else { return }
            peer.write(answer)
            while peer.readRequest() != nil { peer.write(Self.ok) }
        }
        let pool = HTTPConnectionPool(maxIdle: 2)
        #expect(try await post(server, pool: pool).status != 200)
        let next = try await post(server, pool: pool)
        #expect(next.status == 200 && String(decoding: next.body, as: UTF8.self) == "ok")
        #expect(pool.connectionsOpened == 1)
        pool.closeAll()
        await server.stop()
    }

    /// A kept connection whose answer started, then broke: the server has the request, so
    /// it is not posted again (only an answer that never started allows that).
    @Test(arguments: [
        "HTTP/1.1 2",
        "HTTP/1.1 200 OK",
        "HTTP/1.1 200 OK\r\nContent-",
        "A*9000",
    ])
    func aKeptConnectionWhoseAnswerStartedIsNotTriedAgain(_ part: String) async throws {
        // "A*9000": a status line longer than the client reads.
        let part = part == "A*9000" ? String(repeating: "A", count: 9000) : part
        let server = try HostileHTTPServer { peer in
            guard peer.readRequest() != nil else { return }
            peer.write(Self.ok)
            guard peer.readRequest() != nil else { return }
            peer.write(part)
            peer.sleep(.milliseconds(20))
        }
        let pool = HTTPConnectionPool(maxIdle: 2)
        #expect(try await post(server, pool: pool).status == 200)
        do {
            _ = try await post(server, pool: pool)
            Issue.record("a broken answer was taken, or the post went again")
        } catch {
            #expect(error != .timedOut)
        }
        #expect(server.requests == ["0 POST / HTTP/1.1", "0 POST / HTTP/1.1"],
                "\(part.prefix(20))")
        await server.stop()
    }

    @Test func manyPostsAtOnceKeepAtMostMaxIdle() async throws {
        let server = try HostileHTTPServer { peer in
            while peer.readRequest() != nil {
                peer.sleep(.milliseconds(20))
                peer.write(Self.ok)
            }
        }
        let pool = HTTPConnectionPool(maxIdle: 3)
        let statuses = await withTaskGroup(of: Int.self) { group in
            for _ in 0..<40 {
                group.addTask { (try? await self.post(server, pool: pool).status) ?? 0 }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(statuses == Array(repeating: 200, count: 40))
        #expect(pool.idleCount <= 3)
        try await Task.sleep(for: .milliseconds(50))
        #expect(server.clientSocketsOpen == pool.idleCount)
        pool.closeAll()
        try await Task.sleep(for: .milliseconds(50))
        #expect(server.clientSocketsOpen == 0)
        await server.stop()
    }

    /// Servers that close in every way a connection can end: no client socket stays open.
    @Test func noSocketOutlivesItsConnection() async throws {
        let server = try HostileHTTPServer { peer in
            switch peer.index % 5 {
            case 0:
                guard peer.readRequest() != nil else { return }
                peer.write(Self.ok)
            case 1:
                guard peer.readRequest() != nil else { return }
                peer.write(Self.ok)
                guard peer.readRequest() != nil else { return }
            case 2:
                guard peer.readRequest() != nil else { return }
                peer.write(Self.ok)
                peer.resetOnClose()
                guard peer.readRequest() != nil else { return }
            case 3:
                guard peer.readRequest() != nil else { return }
                peer.write("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nok")
            default:
                while peer.readRequest() != nil { peer.write(Self.ok) }
            }
        }
        let pool = HTTPConnectionPool(maxIdle: 2)
        for _ in 0..<200 {
            _ = try? await post(server, pool: pool, timeout: .seconds(2))
        }
        try await Task.sleep(for: .milliseconds(100))
        #expect(server.clientSocketsOpen <= 2)
        pool.closeAll()
        try await Task.sleep(for: .milliseconds(50))
        #expect(server.clientSocketsOpen == 0)
        await server.stop()
    }

    @Test func aNewAddressForTheSameURLIsNeverSentOnTheOldOnesConnection() async throws {
        let old = try HostileHTTPServer(Self.answering(Self.ok))
        let new = try HostileHTTPServer(Self.answering(Self.ok))
        let target = try #require(HTTPTarget(url: "http://hooks.test.example/in"))
        let pool = HTTPConnectionPool(maxIdle: 2)
        for address in [old.address, old.address, new.address, new.address, old.address] {
            _ = try await HTTPClient.post(target, at: address, headers: [:], body: [],
                                          timeout: .seconds(5), tls: nil, pool: pool)
        }
        #expect(old.requests == ["0 POST /in HTTP/1.1", "0 POST /in HTTP/1.1",
                                 "0 POST /in HTTP/1.1"])
        #expect(new.requests == ["0 POST /in HTTP/1.1", "0 POST /in HTTP/1.1"])
        pool.closeAll()
        await old.stop()
        await new.stop()
    }

    // MARK: TLS

    /// Certificates for hooks.test.example, and a server context limited to `maxVersion`.
    static func tls(maxVersion: Int32 = TLS1_3_VERSION) async throws
        -> (TestCertificates, server: TLSContext, client: TLSContext)
    {
        let certs = try await TestCertificates.make()
        let leaf = try await certs.leaf("hooks.test.example")
        let server = try TLSContext.server(certificateFile: leaf.certificate, keyFile: leaf.key)
        SSL_CTX_ctrl(server.ctx, SSL_CTRL_SET_MAX_PROTO_VERSION, Int(maxVersion), nil)
        return (certs, server, try TLSContext.client(caFile: certs.caFile))
    }

    func postTLS(_ server: HostileHTTPServer, _ client: TLSContext, pool: HTTPConnectionPool)
        async throws(HTTPClientError) -> HTTPClientResponse
    {
        let target = HTTPTarget(url: "https://hooks.test.example:\(server.address.port)/in",
                                connect: "127.0.0.1")!
        return try await HTTPClient.post(target, headers: [:], body: Array("{}".utf8),
                                         timeout: .seconds(5), tls: client, pool: pool)
    }

    /// What a TLS server does between its answers; whether the connection still carries the
    /// next post afterwards.
    enum Between: String, CaseIterable, Sendable {
        case nothing, lateTicket, keyUpdate, renegotiate, closeNotify, closeNotifyAtOnce
        case strayAnswer, strayAnswerAtOnce
        /// The answer itself in records of one octet each.
        case trickled

        /// The connection can carry no other request afterwards.
        var closes: Bool {
            switch self {
            case .nothing, .lateTicket, .keyUpdate, .renegotiate, .trickled: return false
            default: return true
            }
        }
    }

    @Test(arguments: Between.allCases)
    func tlsBetweenAnswers(_ between: Between) async throws {
        let (certs, context, client) = try await Self.tls(
            maxVersion: between == .renegotiate ? TLS1_2_VERSION : TLS1_3_VERSION)
        defer { certs.remove() }
        let server = try HostileHTTPServer { peer in
            guard peer.startTLS(context) else { return }
            while peer.readRequest() != nil {
                if between == .trickled {
                    peer.trickle(Self.ok, pause: .microseconds(50))
                    peer.mark()
                    continue
                }
                peer.write(Self.ok)
                switch between {
                case .closeNotifyAtOnce:
                    peer.closeNotify()
                    peer.mark()
                    peer.sleep(.milliseconds(300))
                    return
                case .strayAnswerAtOnce: peer.write(Self.stray)
                default: break
                }
                peer.sleep(.milliseconds(20))
                switch between {
                case .nothing, .closeNotifyAtOnce, .strayAnswerAtOnce, .trickled: break
                case .strayAnswer: peer.write(Self.stray)
                case .lateTicket: peer.lateTicket()
                case .keyUpdate: peer.keyUpdate()
                case .renegotiate: peer.renegotiate()
                case .closeNotify:
                    peer.closeNotify()
                    peer.mark()
                    peer.sleep(.milliseconds(300))
                    return
                }
                peer.mark()
            }
        }
        let pool = HTTPConnectionPool(maxIdle: 2)
        for n in 1...3 {
            do {
                #expect(try await postTLS(server, client, pool: pool).status == 200)
            } catch {
                Issue.record("\(between): \(error)")
            }
            // What the server does between answers is sent before the next post goes.
            await server.marks(n)
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(pool.connectionsOpened == (between.closes ? 3 : 1), "\(between)")
        #expect(server.requests.count == 3, "\(server.requests)")
        pool.closeAll()
        await server.stop()
    }
}
