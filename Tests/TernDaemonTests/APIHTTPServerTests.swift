// The HTTP/1.1 server under the API (and every daemon's /metrics), driven through a real
// loopback socket: framing, keep-alive, each limit and refusal, timeouts, shutdown, and
// input mangled at random, after which it must still serve.

import Foundation
import Synchronization
import Testing
@testable import TernCore

/// Lets a test hold a handler in the middle of a request.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>(
        (false, []))

    func open() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.open = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume() }
    }

    func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.open { return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }
}

/// Requests inside the /hold handler now, and the most there have been at once.
final class HoldCount: Sendable {
    private let state = Mutex((now: 0, peak: 0))

    var now: Int { state.withLock { $0.now } }
    var peak: Int { state.withLock { $0.peak } }

    func enter() {
        state.withLock { s in
            s.now += 1
            s.peak = max(s.peak, s.now)
        }
    }

    func leave() { state.withLock { $0.now -= 1 } }
}

final class ServerHarness: Sendable {
    let server: HTTPServer
    let shutdown = Shutdown()
    let task: Task<Void, Never>
    let entered = Gate()
    let release = Gate()
    let holding = HoldCount()

    var address: SocketAddress { server.address }

    init(_ configure: (inout HTTPServerSettings) -> Void = { _ in }) throws {
        var settings = HTTPServerSettings(maxBody: 1000)
        configure(&settings)
        let listener = try TCPListener(address: SocketAddress("127.0.0.1:0")!)
        let entered = self.entered, release = self.release, holding = self.holding
        server = HTTPServer(listener: listener, settings: settings,
                            logger: Logger(label: "http-test", sink: MemoryLogSink())) { request in
            switch request.path {
            case "/hold":
                holding.enter()
                entered.open()
                await release.wait()
                holding.leave()
                return .text(200, "released")
            case "/split":
                return HTTPResponse(status: 200, headers: ["X-Evil": "a\r\nSet-Cookie: x=1",
                                                           "X-Fine": "ok"], body: [])
            default:
                return .json(200, [
                    "method": request.method, "path": request.path,
                    "query": request.query.map { $0 as Any } ?? NSNull(),
                    "test": request.headers["x-TEST"].map { $0 as Any } ?? NSNull(),
                    "body": String(decoding: request.body, as: UTF8.self),
                    "fields": request.headers.count,
                ])
            }
        }
        let server = self.server, shutdown = self.shutdown
        task = Task { await server.serve(until: shutdown) }
    }

    func stop() async {
        shutdown.request()
        release.open()
        await task.value
    }
}

func withServer(_ configure: (inout HTTPServerSettings) -> Void = { _ in },
                _ body: (ServerHarness) async throws -> Void) async throws {
    let harness = try ServerHarness(configure)
    do {
        try await body(harness)
    } catch {
        await harness.stop()
        throw error
    }
    await harness.stop()
}

@Suite struct APIHTTPServerTests {
    @Test func echoesMethodPathQueryHeadersAndBody() async throws {
        try await withServer { h in
            let reply = try await httpRequest(
                h.address, "POST", "/a/b%2Fc?x=1&y=%20", headers: [("X-Test", "  value  ")],
                body: Array("hello".utf8))
            #expect(reply.status == 200)
            #expect(reply.headers["content-type"] == "application/json")
            let j = reply.json
            #expect(j["method"] as? String == "POST")
            #expect(j["path"] as? String == "/a/b%2Fc")
            #expect(j["query"] as? String == "x=1&y=%20")
            #expect(j["test"] as? String == "value")
            #expect(j["body"] as? String == "hello")
            #expect(j["fields"] as? Int == 3)  // Host, X-Test, Content-Length
            let date = try #require(reply.headers["Date"])
            #expect(date.hasSuffix(" GMT") && date.count == 29, "IMF-fixdate: \(date)")
        }
    }

    @Test func absoluteFormTargetIsServedByItsPath() async throws {
        try await withServer { h in
            let reply = try await httpRequest(h.address, "GET", "http://tern.test/p?q")
            #expect(reply.json["path"] as? String == "/p")
            #expect(reply.json["query"] as? String == "q")
        }
    }

    @Test func httpDateIsIMFFixdate() {
        // RFC 9110 §5.6.7's own example.
        #expect(HTTPDate.string(secondsSinceEpoch: 784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HTTPDate.string(secondsSinceEpoch: 0) == "Thu, 01 Jan 1970 00:00:00 GMT")
        #expect(HTTPDate.string(secondsSinceEpoch: 951_825_600) == "Tue, 29 Feb 2000 12:00:00 GMT")
    }

    @Test func keepsConnectionsAliveAndAnswersPipelinedRequestsInOrder() async throws {
        try await withServer { h in
            let client = try await RawHTTP.connect(h.address)
            let first = try await client.request("GET", "/one")
            let second = try await client.request("GET", "/two")
            #expect(first.json["path"] as? String == "/one")
            #expect(second.json["path"] as? String == "/two")
            #expect(first.headers["Connection"] == nil)
            try await client.send("GET /three HTTP/1.1\r\nHost: t\r\n\r\n"
                + "POST /four HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
                + "GET /five HTTP/1.1\r\nHost: t\r\n\r\n")
            let paths = [try await client.response(), try await client.response(),
                         try await client.response()].map { $0.json["path"] as? String }
            #expect(paths == ["/three", "/four", "/five"])
            #expect(h.server.connectionCount == 1)
        }
    }

    @Test func closesWhenAskedAndAfterHTTP10() async throws {
        try await withServer { h in
            let client = try await RawHTTP.connect(h.address)
            let reply = try await client.request("GET", "/", headers: [("Connection", "close")])
            #expect(reply.status == 200)
            #expect(reply.headers["Connection"] == "close")
            #expect(await client.closedByServer())

            let old = try await RawHTTP.connect(h.address)
            try await old.send("GET /old HTTP/1.0\r\n\r\n")
            let oldReply = try await old.response()
            #expect(oldReply.json["path"] as? String == "/old")
            #expect(await old.closedByServer())
        }
    }

    @Test func headAnswerCarriesTheLengthButNoBody() async throws {
        try await withServer { h in
            let client = try await RawHTTP.connect(h.address)
            let head = try await client.request("HEAD", "/x")
            let length = try #require(Int(head.headers["Content-Length"] ?? ""))
            #expect(length > 10)
            #expect(head.body.isEmpty)
            // The connection is still in step: the next answer parses.
            let next = try await client.request("GET", "/y")
            #expect(next.json["path"] as? String == "/y")
        }
    }

    @Test(arguments: [
        ("no version", "GET /\r\n\r\n", 400),
        ("two spaces", "GET  / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("bad method", "G(T / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("lowercase version", "GET / http/1.1\r\nHost: t\r\n\r\n", 400),
        ("HTTP/2 text", "GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        ("relative target", "GET abc HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("fragment", "GET /a#b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("raw UTF-8 target", "GET /é HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("no Host", "GET / HTTP/1.1\r\n\r\n", 400),
        ("two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("space before colon", "GET / HTTP/1.1\r\nHost: t\r\nX-A : b\r\n\r\n", 400),
        ("no colon", "GET / HTTP/1.1\r\nHost: t\r\nX-A b\r\n\r\n", 400),
        ("obs-fold", "GET / HTTP/1.1\r\nHost: t\r\nX-A: b\r\n c\r\n\r\n", 400),
        ("bare CR in value", "GET / HTTP/1.1\r\nHost: t\r\nX-A: b\rc\r\n\r\n", 400),
        ("NUL in value", "GET / HTTP/1.1\r\nHost: t\r\nX-A: b\0c\r\n\r\n", 400),
        ("bad length", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n", 400),
        ("signed length", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +1\r\n\r\n", 400),
        ("two lengths", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n"
            + "Content-Length: 1\r\n\r\nx", 400),
        ("chunked", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "2\r\nhi\r\n0\r\n\r\n", 411),
        ("chunked and length", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
            + "Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", 411),
        ("gzip coding", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        ("odd expectation", "POST / HTTP/1.1\r\nHost: t\r\nExpect: 200-ok\r\n"
            + "Content-Length: 1\r\n\r\nx", 417),
    ])
    func refusesMalformedRequestsAndCloses(name: String, raw: String, status: Int) async throws {
        try await withServer { h in
            let client = try await RawHTTP.connect(h.address)
            try await client.send(raw)
            let reply = try await client.response()
            #expect(reply.status == status, "\(name)")
            #expect(reply.headers["Connection"] == "close", "\(name)")
            #expect((reply.error["detail"] as? String)?.isEmpty == false, "\(name)")
            #expect(await client.closedByServer(), "\(name)")
        }
    }

    @Test func enforcesLineHeaderAndFieldLimits() async throws {
        try await withServer { h in
            let longTarget = "/" + String(repeating: "a", count: 8200)
            let a = try await httpRequest(h.address, "GET", longTarget)
            #expect(a.status == 414)

            let big = (0..<40).map { ("X-Big-\($0)", String(repeating: "b", count: 2000)) }
            let b = try await httpRequest(h.address, "GET", "/", headers: big)
            #expect(b.status == 431)

            let many = (0..<101).map { ("X-F\($0)", "v") }
            let c = try await httpRequest(h.address, "GET", "/", headers: many)
            #expect(c.status == 431)

            // Just under the limits is served.
            let fine = (0..<98).map { ("X-F\($0)", "v") }
            let d = try await httpRequest(h.address, "GET", "/", headers: fine)
            #expect(d.status == 200)
            #expect(d.json["fields"] as? Int == 99)
        }
    }

    @Test func refusesAnOversizedBodyBeforeReadingIt() async throws {
        try await withServer { h in
            // The body is never sent: a 413 that arrives anyway was decided on the head.
            let client = try await RawHTTP.connect(h.address)
            try await client.send(
                "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000\r\n\r\n")
            let reply = try await client.response()
            #expect(reply.status == 413)
            #expect(await client.closedByServer())

            // At the limit exactly it is read.
            let body = [UInt8](repeating: UInt8(ascii: "z"), count: 1000)
            let ok = try await httpRequest(h.address, "POST", "/", body: body)
            #expect(ok.status == 200)
            #expect((ok.json["body"] as? String)?.count == 1000)
        }
    }

    @Test func answers100ContinueBeforeTheBody() async throws {
        try await withServer { h in
            let client = try await RawHTTP.connect(h.address)
            try await client.send("POST /c HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                + "Content-Length: 4\r\n\r\n")
            let interim = try await client.response(interim: true)
            #expect(interim.status == 100)
            try await client.send("data")
            let reply = try await client.response()
            #expect(reply.status == 200)
            #expect(reply.json["body"] as? String == "data")
        }
    }

    @Test func closesIdleConnectionsAndAnswersSlowRequestsWith408() async throws {
        try await withServer({ $0.idleTimeout = .milliseconds(200)
                               $0.requestTimeout = .milliseconds(200) }) { h in
            let idle = try await RawHTTP.connect(h.address)
            #expect(await idle.closedByServer())

            let slow = try await RawHTTP.connect(h.address)
            try await slow.send("GET / HTTP/1.1\r\nHost: t\r\n")
            let reply = try await slow.response()
            #expect(reply.status == 408)
            #expect(await slow.closedByServer())
        }
    }

    @Test func dropsResponseFieldsThatWouldSplitTheResponse() async throws {
        try await withServer { h in
            let reply = try await httpRequest(h.address, "GET", "/split")
            #expect(reply.status == 200)
            #expect(reply.headers["X-Evil"] == nil)
            #expect(reply.headers["Set-Cookie"] == nil)
            #expect(reply.headers["X-Fine"] == "ok")
        }
    }

    @Test func survivesMangledRequests() async throws {
        try await withServer { h in
            let valid = Array(("POST /v1/send?x=1 HTTP/1.1\r\nHost: t\r\nX-A: b\r\n"
                + "Content-Length: 5\r\nConnection: keep-alive\r\n\r\nhello").utf8)
            let alphabet: [UInt8] = [0, 9, 10, 13, 32, 58, 0x7F, 0xFF, 0x80] + Array("0a/?:#".utf8)
            var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
            func next() -> Int {
                seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return Int(seed >> 33)
            }
            var statuses: Set<Int> = []
            for _ in 0..<150 {
                var bytes = valid
                for _ in 0..<(1 + next() % 4) {
                    let i = next() % bytes.count
                    switch next() % 3 {
                    case 0: bytes[i] = alphabet[next() % alphabet.count]
                    case 1: bytes.remove(at: i)
                    default: bytes.insert(alphabet[next() % alphabet.count], at: i)
                    }
                }
                let client = try await RawHTTP.connect(h.address)
                // Close our side after sending: a request left incomplete must end, not hang.
                try await client.send(bytes)
                shutdown(client.connection.fd, Int32(SHUT_WR))
                if let reply = try? await client.response() {
                    statuses.insert(reply.status)
                    #expect([200, 400, 408, 411, 413, 414, 417, 431, 501, 505]
                        .contains(reply.status))
                }
            }
            #expect(statuses.contains(400))
            let after = try await httpRequest(h.address, "GET", "/still")
            #expect(after.status == 200)
            #expect(after.json["path"] as? String == "/still")
        }
    }

    @Test func connectionLimitHoldsWhenClientsArriveInABurst() async throws {
        try await withServer({ $0.maxConnections = 5 }) { h in
            // Fifty clients connect at once (the kernel completes every handshake) and each
            // asks for a request the handler holds; only five may be taken in.
            var clients: [RawHTTP] = []
            for _ in 0..<50 { clients.append(try await RawHTTP.connect(h.address)) }
            for client in clients {
                try await client.send("GET /hold HTTP/1.1\r\nHost: t\r\nConnection: close"
                                      + "\r\n\r\n")
            }
            var polls = 0
            while h.holding.now < 5 && polls < 500 {
                try await Task.sleep(for: .milliseconds(10))
                polls += 1
            }
            // Give an accept loop that ran ahead of its limit the time to show it.
            try await Task.sleep(for: .milliseconds(300))
            #expect(h.holding.now == 5)
            #expect(h.server.connectionCount == 5)

            h.release.open()
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for client in clients {
                    group.addTask {
                        // Closing at once frees the slot the server's lingering close holds.
                        defer { client.connection.close() }
                        return try await client.response().status
                    }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses == Array(repeating: 200, count: 50))
            #expect(h.holding.peak == 5)
        }
    }

    @Test func aFullServerShedsTheClientWaitingLongestForANewOne() async throws {
        try await withServer({ $0.maxConnections = 4
                               $0.idleTimeout = .seconds(120)
                               $0.requestTimeout = .seconds(120)
                               $0.shedAfter = .milliseconds(300) }) { h in
            // Slowloris: four clients take every connection, two with half a request head,
            // two saying nothing, one after another: each accepted before the next connects.
            var slow: [RawHTTP] = []
            for n in 0..<4 {
                let client = try await RawHTTP.connect(h.address)
                if n % 2 == 0 { try await client.send("GET / HTTP/1.1\r\nHost: t\r\n") }
                slow.append(client)
                for _ in 0..<500 where h.server.connectionCount <= n {
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
            #expect(h.server.connectionCount == 4)
            // A fifth is served long before any of them would time out: the one that has
            // waited longest makes room, unanswered.
            let client = try await RawHTTP.connect(h.address)
            try await client.send("GET /fresh HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            #expect(try await client.response().status == 200)
            #expect(await slow[0].closedByServer())
            // The others are still there to be served.
            try await slow[1].send("GET /second HTTP/1.1\r\nHost: t\r\nConnection: close"
                                   + "\r\n\r\n")
            #expect(try await slow[1].response().status == 200)
        }
    }

    /// A server that has accepted a connection but not served it yet, with the client's
    /// socket beside it.
    static func unserved(shedAfter: Duration, handled: HoldCount) async throws
        -> (HTTPServer, TCPListener, TCPConnection, TCPConnection, UInt64)
    {
        var settings = HTTPServerSettings(maxBody: 1000)
        settings.shedAfter = shedAfter
        let listener = try TCPListener(address: SocketAddress("127.0.0.1:0")!)
        let server = HTTPServer(listener: listener, settings: settings,
                                logger: Logger(label: "http-test", sink: MemoryLogSink())) { _ in
            handled.enter()
            handled.leave()
            return .text(200, "handled")
        }
        let client = try await TCPConnection.connect(to: listener.address)
        let accepted = try await listener.accept()
        let id = try #require(server.register(accepted))
        return (server, listener, client, accepted, id)
    }

    /// Shed while its request still lay in the kernel: the request is read all the same, but
    /// the client is cut off and would never see the answer, so it is not handled (a POST
    /// taken with its answer lost is a message the client sends again).
    @Test func aRequestOnAShedConnectionIsNotHandled() async throws {
        let handled = HoldCount()
        let (server, listener, client, accepted, id) = try await Self.unserved(
            shedAfter: .zero, handled: handled)
        defer { listener.close(); client.close() }
        try await client.write(Array("GET / HTTP/1.1\r\nHost: t\r\n\r\n".utf8))
        var arrived = pollfd(fd: accepted.fd, events: Int16(POLLIN), revents: 0)
        for _ in 0..<500 where poll(&arrived, 1, 0) == 0 {
            try await Task.sleep(for: .milliseconds(10))
        }
        server.shedLongestWaiting()
        await server.serveConnection(accepted, id: id)
        #expect(handled.peak == 0)
        #expect(server.connectionCount == 0)
        #expect(try await client.read(max: 100, deadline: .now + .seconds(5)) == [])
    }

    /// A connection waits from its accept: its task getting to run late, on a loaded
    /// server, does not make it new.
    @Test func aConnectionHasWaitedSinceItsAccept() async throws {
        let (server, listener, client, accepted, id) = try await Self.unserved(
            shedAfter: .milliseconds(100), handled: HoldCount())
        defer { listener.close(); client.close(); accepted.close() }
        try await Task.sleep(for: .milliseconds(150))
        #expect(server.mark(id, busy: false))   // what its task does first
        server.shedLongestWaiting()
        #expect(try await client.read(max: 100, deadline: .now + .seconds(5)) == [])
    }

    @Test func shutdownLetsTheRequestInProgressFinish() async throws {
        let h = try ServerHarness()
        let busy = try await RawHTTP.connect(h.address)
        let idle = try await RawHTTP.connect(h.address)
        _ = try await idle.request("GET", "/warm")
        try await busy.send("GET /hold HTTP/1.1\r\nHost: t\r\n\r\n")
        await h.entered.wait()

        h.shutdown.request()
        // The idle connection is closed; the busy one still gets its answer, then closes.
        #expect(await idle.closedByServer())
        h.release.open()
        let reply = try await busy.response()
        #expect(reply.status == 200)
        #expect(reply.text == "released")
        #expect(reply.headers["Connection"] == "close")
        #expect(await busy.closedByServer())
        await h.task.value
        #expect(h.server.connectionCount == 0)
        // Nothing listens any more.
        await #expect(throws: IOError.self) {
            _ = try await RawHTTP.connect(h.address)
        }
    }
}
