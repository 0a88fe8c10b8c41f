// The HTTP client's kept connections, against a server on loopback that answers each request
// as the test scripts it: which answers let a connection carry the next post, and what a post
// does when the server closes a kept connection before or while it is sent.

import Foundation
import Synchronization
import Testing
@testable import TernCore

/// What the scripted server does with one request.
enum ScriptedReply: Sendable {
    /// Writes these octets (status line, fields, body), then closes when `close` says so.
    case answer(String, close: Bool = false)
    /// Reads the request and closes without a word.
    case silentClose
}

/// Serves HTTP/1.1 on 127.0.0.1: each request read whole, answered by
/// `script(connection, request)`, both counted from 0.
final class ScriptedHTTPServer: Sendable {
    let listener: TCPListener
    let script: @Sendable (Int, Int) -> ScriptedReply
    /// One line per request seen: "<connection> <request line>".
    private let seen = Mutex<[String]>([])
    private let connections = Atomic<Int>(0)
    /// The index of each connection the server has closed, as it closes it.
    let closes: AsyncStream<Int>
    private let closed: AsyncStream<Int>.Continuation

    init(_ script: @escaping @Sendable (Int, Int) -> ScriptedReply) throws {
        listener = try TCPListener(address: SocketAddress("127.0.0.1:0")!)
        self.script = script
        (closes, closed) = AsyncStream.makeStream(of: Int.self)
    }

    var address: SocketAddress { listener.address }
    var requests: [String] { seen.withLock { $0 } }
    var accepted: Int { connections.load(ordering: .relaxed) }

    func start() -> Task<Void, Never> {
        Task {
            await withDiscardingTaskGroup { group in
                while let connection = try? await listener.accept() {
                    let index = connections.add(1, ordering: .relaxed).oldValue
                    group.addTask { await self.serve(connection, index) }
                }
            }
        }
    }

    func stop(_ task: Task<Void, Never>) async {
        listener.close()
        await task.value
        closed.finish()
    }

    private func serve(_ connection: TCPConnection, _ index: Int) async {
        defer {
            connection.close()
            closed.yield(index)
        }
        let reader = LineReader(connection)
        let deadline = ContinuousClock.now + .seconds(10)
        var number = 0
        while let line = try? await reader.readLine(limit: 8192, deadline: deadline) {
            var length = 0
            while let field = try? await reader.readLine(limit: 8192, deadline: deadline),
                  !field.isEmpty {
                let text = String(decoding: field, as: UTF8.self).lowercased()
                if text.hasPrefix("content-length:") {
                    length = Int(text.dropFirst(15).trimmingCharacters(in: .whitespaces)) ?? 0
                }
            }
            _ = try? await reader.readExactly(length, deadline: deadline)
            seen.withLock { $0.append("\(index) " + String(decoding: line, as: UTF8.self)) }
            switch script(index, number) {
            case .silentClose:
                return
            case .answer(let text, let close):
                try? await connection.write(Array(text.utf8), deadline: deadline)
                if close { return }
            }
            number += 1
        }
    }
}

@Suite struct HTTPClientConnectionTests {
    static let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    func post(_ server: ScriptedHTTPServer, _ path: String, pool: HTTPConnectionPool?)
        async throws(HTTPClientError) -> HTTPClientResponse
    {
        let target = HTTPTarget(url: "http://\(server.address)\(path)")!
        return try await HTTPClient.post(target, headers: ["X-Test": "1"],
                                         body: Array("{}".utf8), timeout: .seconds(5),
                                         tls: nil, pool: pool)
    }

    @Test func aKeptConnectionCarriesTheNextPosts() async throws {
        let server = try ScriptedHTTPServer { _, _ in .answer(Self.ok) }
        let task = server.start()
        let pool = HTTPConnectionPool(maxIdle: 4)
        for path in ["/a", "/b", "/c"] {
            let response = try await post(server, path, pool: pool)
            #expect(response.status == 200)
            #expect(String(decoding: response.body, as: UTF8.self) == "ok")
        }
        #expect(server.requests == ["0 POST /a HTTP/1.1", "0 POST /b HTTP/1.1",
                                    "0 POST /c HTTP/1.1"])
        #expect(pool.connectionsOpened == 1)
        #expect(pool.idleCount == 1)
        pool.closeAll()
        await server.stop(task)
    }

    /// Answers after which the connection cannot carry another request: the next post opens
    /// a new one, and nothing is left idle.
    @Test(arguments: [
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n" + String(repeating: "x", count: 70000),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n",
    ])
    func answersThatEndTheirConnection(_ answer: String) async throws {
        let server = try ScriptedHTTPServer { _, _ in .answer(answer) }
        let task = server.start()
        let pool = HTTPConnectionPool(maxIdle: 4)
        for _ in 0..<2 {
            #expect(try await post(server, "/", pool: pool).status == 200)
        }
        #expect(pool.connectionsOpened == 2)
        #expect(pool.idleCount == 0)
        #expect(server.requests == ["0 POST / HTTP/1.1", "1 POST / HTTP/1.1"])
        await server.stop(task)
    }

    @Test func aBodylessAnswerKeepsItsConnection() async throws {
        let server = try ScriptedHTTPServer { _, request in
            request == 0 ? .answer("HTTP/1.1 204 No Content\r\n\r\n")
                : .answer("HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
        }
        let task = server.start()
        let pool = HTTPConnectionPool(maxIdle: 4)
        #expect(try await post(server, "/", pool: pool).status == 204)
        #expect(try await post(server, "/", pool: pool).status == 202)
        #expect(try await post(server, "/", pool: pool).status == 202)
        #expect(pool.connectionsOpened == 1)
        pool.closeAll()
        await server.stop(task)
    }

    @Test func aKeptConnectionTheServerClosedIsNotUsed() async throws {
        // The server answers as if it kept the connection, then closes it.
        let server = try ScriptedHTTPServer { _, _ in .answer(Self.ok, close: true) }
        let task = server.start()
        var closes = server.closes.makeAsyncIterator()
        let pool = HTTPConnectionPool(maxIdle: 4)
        #expect(try await post(server, "/a", pool: pool).status == 200)
        #expect(await closes.next() == 0)
        #expect(pool.idleCount == 1)
        // The close has arrived: the pool sees it and hands the connection to no post.
        let origin = try #require(HTTPTarget(url: "http://\(server.address)/")).origin
        #expect(pool.take(origin, server.address) == nil)
        #expect(pool.idleCount == 0)
        #expect(try await post(server, "/b", pool: pool).status == 200)
        #expect(server.requests == ["0 POST /a HTTP/1.1", "1 POST /b HTTP/1.1"])
        #expect(pool.connectionsOpened == 2)
        await server.stop(task)
    }

    @Test func aPostTheServerDropsOnAKeptConnectionGoesOnceMoreOnANewOne() async throws {
        // The first connection answers its first request and drops its second unanswered, as
        // a server does that closes an idle connection just as a request arrives.
        let server = try ScriptedHTTPServer { connection, request in
            connection == 0 && request == 1 ? .silentClose : .answer(Self.ok)
        }
        let task = server.start()
        let pool = HTTPConnectionPool(maxIdle: 4)
        #expect(try await post(server, "/a", pool: pool).status == 200)
        #expect(try await post(server, "/b", pool: pool).status == 200)
        #expect(server.requests == ["0 POST /a HTTP/1.1", "0 POST /b HTTP/1.1",
                                    "1 POST /b HTTP/1.1"])
        #expect(pool.connectionsOpened == 2)
        pool.closeAll()
        await server.stop(task)
    }

    @Test func aNewConnectionDroppedUnansweredFailsWithoutAnotherTry() async throws {
        let server = try ScriptedHTTPServer { _, _ in .silentClose }
        let task = server.start()
        let pool = HTTPConnectionPool(maxIdle: 4)
        do {
            _ = try await post(server, "/", pool: pool)
            Issue.record("a dropped post succeeded")
        } catch {
            #expect(error == .exchange("the connection closed before a response"))
        }
        #expect(server.requests == ["0 POST / HTTP/1.1"])
        await server.stop(task)
    }

    @Test func idleConnectionsAreClosedAfterTheirTimeoutAndBeyondTheLimit() async throws {
        let server = try ScriptedHTTPServer { _, _ in .answer(Self.ok) }
        let task = server.start()
        let pool = HTTPConnectionPool(maxIdle: 1, idleTimeout: .milliseconds(50))
        // Two posts at once need two connections; only one stays idle after them.
        async let first = post(server, "/a", pool: pool)
        async let second = post(server, "/b", pool: pool)
        #expect(try await [first.status, second.status] == [200, 200])
        #expect(pool.connectionsOpened == 2)
        #expect(pool.idleCount == 1)
        try await Task.sleep(for: .milliseconds(100))
        pool.closeExpired()
        #expect(pool.idleCount == 0)
        #expect(try await post(server, "/c", pool: pool).status == 200)
        #expect(pool.connectionsOpened == 3)
        pool.closeAll()
        await server.stop(task)
    }

    @Test func withoutAPoolEveryPostSaysCloseAndHasItsOwnConnection() async throws {
        let server = try ScriptedHTTPServer { _, _ in .answer(Self.ok) }
        let task = server.start()
        #expect(try await post(server, "/a", pool: nil).status == 200)
        #expect(try await post(server, "/b", pool: nil).status == 200)
        #expect(server.requests == ["0 POST /a HTTP/1.1", "1 POST /b HTTP/1.1"])
        await server.stop(task)
        let target = try #require(HTTPTarget(url: "http://127.0.0.1:1/"))
        let kept = String(decoding: HTTPClient.request(target, headers: [:], body: [],
                                                       keepAlive: true), as: UTF8.self)
        let once = String(decoding: HTTPClient.request(target, headers: [:], body: []),
                          as: UTF8.self)
        #expect(kept == "POST / HTTP/1.1\r\nHost: 127.0.0.1:1\r\nContent-Length: 0\r\n\r\n")
        #expect(once == "POST / HTTP/1.1\r\nHost: 127.0.0.1:1\r\nContent-Length: 0\r\n"
                + "Connection: close\r\n\r\n")
    }
}
