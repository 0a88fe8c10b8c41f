// The event loop and sockets: echo over loopback, source-address binding, deadlines,
// cancellation, many concurrent connections, and line reading limits.

import Glibc
import Testing
import TernCore

@Suite struct IOTests {
    /// Accepts connections and echoes each line back until the peer closes.
    static func echoServer() throws -> (TCPListener, Task<Void, Never>) {
        let listener = try TCPListener(address: SocketAddress("127.0.0.1:0")!)
        let task = Task {
            await withTaskGroup(of: Void.self) { group in
                while let conn = try? await listener.accept() {
                    group.addTask {
                        let reader = LineReader(conn)
                        while let line = try? await reader.readLine(limit: 1000) {
                            try? await conn.write(line + [0x0D, 0x0A])
                        }
                        conn.close()
                    }
                }
            }
        }
        return (listener, task)
    }

    @Test func echoFromAChosenSourceAddress() async throws {
        let (listener, server) = try Self.echoServer()
        defer { listener.close(); server.cancel() }
        let conn = try await TCPConnection.connect(
            to: listener.address, from: SocketAddress(host: "127.0.0.7", port: 0))
        #expect(conn.local?.host == "127.0.0.7")
        try await conn.write(Array("hello\r\nworld\n".utf8))
        let reader = LineReader(conn)
        #expect(try await reader.readLine(limit: 100) == Array("hello".utf8))
        #expect(try await reader.readLine(limit: 100) == Array("world".utf8))
        conn.close()
    }

    @Test func aThousandConcurrentConnections() async throws {
        let (listener, server) = try Self.echoServer()
        defer { listener.close(); server.cancel() }
        let ok = await withTaskGroup(of: Bool.self) { group in
            for i in 0..<1000 {
                group.addTask {
                    guard let c = try? await TCPConnection.connect(to: listener.address) else {
                        return false
                    }
                    defer { c.close() }
                    try? await c.write(Array("n\(i)\r\n".utf8))
                    let line = try? await LineReader(c).readLine(limit: 100)
                    return line == Array("n\(i)".utf8)
                }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(ok == 1000)
    }

    @Test func aSilentPeerTimesOut() async throws {
        let listener = try TCPListener(address: SocketAddress("127.0.0.1:0")!)
        defer { listener.close() }
        let conn = try await TCPConnection.connect(to: listener.address)
        defer { conn.close() }
        await #expect(throws: IOError.timedOut) {
            _ = try await conn.read(deadline: .now + .milliseconds(100))
        }
    }

    /// A short deadline set while a longer one waits fails only its own reader, and the
    /// reader with the longer deadline still gets its data.
    @Test func eachDeadlineFailsOnlyItsOwnWaiter() async throws {
        let (listener, server) = try Self.echoServer()
        defer { listener.close(); server.cancel() }
        let patient = try await TCPConnection.connect(to: listener.address)
        let hasty = try await TCPConnection.connect(to: listener.address)
        defer { patient.close(); hasty.close() }
        let waiting = Task { try await LineReader(patient).readLine(limit: 100) }
        try await Task.sleep(for: .milliseconds(20))
        await #expect(throws: IOError.timedOut) {
            _ = try await hasty.read(deadline: .now + .milliseconds(50))
        }
        try await patient.write(Array("still here\r\n".utf8))
        #expect(try await waiting.value == Array("still here".utf8))
        // A deadline that has already passed fails at once, and the loop keeps serving.
        await #expect(throws: IOError.timedOut) {
            _ = try await hasty.read(deadline: .now - .seconds(1))
        }
        try await hasty.write(Array("after\r\n".utf8))
        #expect(try await LineReader(hasty).readLine(limit: 100) == Array("after".utf8))
    }

    /// Closing a listener twice leaves alone the socket that took its descriptor's number.
    @Test func aListenerClosedTwiceClosesOnlyItsOwnDescriptor() throws {
        // Tests running beside this one open descriptors too, so the freed number may go to
        // one of theirs; a few tries get it.
        for _ in 0..<20 {
            let listener = try TCPListener(address: SocketAddress("127.0.0.1:0")!)
            listener.close()
            // Take descriptors until one gets the freed number (the lowest free is given).
            var taken: [Int32] = []
            defer { taken.forEach { _ = Glibc.close($0) } }
            while (taken.last ?? -1) < listener.fd {
                let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                try #require(fd >= 0)
                taken.append(fd)
            }
            guard taken.last == listener.fd else { continue }
            listener.close()
            #expect(fcntl(listener.fd, F_GETFD) != -1, "the second close closed another socket")
            return
        }
        Issue.record("no try got the listener's freed descriptor number")
    }

    /// A wait whose owner closed meanwhile fails at once and arms nothing: the descriptor's
    /// number may be a new socket's, and its own waiter must still be able to wait on it.
    @Test func aWaitOfAClosedOwnerArmsNothing() async throws {
        let (listener, server) = try Self.echoServer()
        defer { listener.close(); server.cancel() }
        let conn = try await TCPConnection.connect(to: listener.address)
        defer { conn.close() }
        await #expect(throws: IOError.closed) {
            try await EventLoop.shared.waitReadable(conn.fd, deadline: .now + .seconds(5)) {
                true
            }
        }
        // Were the refused wait armed, this one would trap: two readers of one descriptor.
        try await conn.write(Array("armed once\r\n".utf8))
        #expect(try await LineReader(conn).readLine(limit: 100) == Array("armed once".utf8))
    }

    /// A reader blocked on a connection another task closes fails with `closed`.
    @Test func closingAConnectionFailsItsReader() async throws {
        let listener = try TCPListener(address: SocketAddress("127.0.0.1:0")!)
        defer { listener.close() }
        let conn = try await TCPConnection.connect(to: listener.address)
        let reader = Task { try await conn.read(deadline: .now + .seconds(5)) }
        try await Task.sleep(for: .milliseconds(50))
        conn.close()
        await #expect(throws: IOError.closed) { _ = try await reader.value }
    }

    @Test func cancellingAReaderWakesIt() async throws {
        let listener = try TCPListener(address: SocketAddress("127.0.0.1:0")!)
        defer { listener.close() }
        let conn = try await TCPConnection.connect(to: listener.address)
        defer { conn.close() }
        let reader = Task { try await conn.read() }
        try await Task.sleep(for: .milliseconds(50))
        reader.cancel()
        await #expect(throws: IOError.cancelled) { _ = try await reader.value }
    }

    @Test func refusedConnectionIsAnError() async throws {
        let listener = try TCPListener(address: SocketAddress("127.0.0.1:0")!)
        let address = listener.address
        listener.close()
        await #expect(throws: IOError.self) {
            _ = try await TCPConnection.connect(to: address, deadline: .now + .seconds(2))
        }
    }

    @Test func lineReaderRefusesOverlongLinesAndHandlesEnd() async throws {
        let (listener, server) = try Self.echoServer()
        defer { listener.close(); server.cancel() }
        let conn = try await TCPConnection.connect(to: listener.address)
        try await conn.write(Array(String(repeating: "x", count: 50).utf8) + [13, 10])
        let reader = LineReader(conn)
        await #expect(throws: LineError.tooLong(limit: 10)) {
            _ = try await reader.readLine(limit: 10)
        }
        conn.close()
    }

    @Test func readAvailableTakesWhatIsThereWithoutWaiting() async throws {
        let (listener, server) = try Self.echoServer()
        defer { listener.close(); server.cancel() }
        let conn = try await TCPConnection.connect(to: listener.address)
        defer { conn.close() }
        let reader = LineReader(conn)
        // Nothing said yet: it returns at once with nothing.
        reader.readAvailable()
        #expect(reader.buffered == 0)
        try await conn.write(Array("one\r\ntwo\r\n".utf8))
        #expect(try await reader.readLine(limit: 100) == Array("one".utf8))
        // The echo of "two" comes with "one" or just after; once there, it is buffered.
        var tries = 0
        while reader.buffered < 5 && tries < 500 {
            try await Task.sleep(for: .milliseconds(10))
            reader.readAvailable()
            tries += 1
        }
        #expect(reader.buffered == 5)
        #expect(try await reader.readLine(limit: 100) == Array("two".utf8))
    }
}

@Suite struct SettingsTests {
    @Test(arguments: [("250ms", Duration.milliseconds(250)), ("30s", .seconds(30)),
                      ("5m", .seconds(300)), ("4h", .seconds(14_400)), ("3d", .seconds(259_200)),
                      ("12", .seconds(12))])
    func durations(text: String, expected: Duration) {
        #expect(parseDuration(text) == expected)
    }

    @Test(arguments: ["", "x", "-1s", "5 m", "1.5s"])
    func badDurations(text: String) {
        #expect(parseDuration(text) == nil)
    }

    @Test func errorsNameTheVariable() {
        let env = Environment(["TERN_X": "lots", "TERN_A": "nowhere"])
        #expect(throws: ConfigError.self) { try env.int("TERN_X", default: 1, range: 0...9) }
        do {
            _ = try env.address("TERN_A", default: "127.0.0.1:1")
            Issue.record("no error")
        } catch let e as ConfigError {
            #expect(e.variable == "TERN_A")
        } catch {
            Issue.record("wrong error \(error)")
        }
        #expect((try? env.int("TERN_MISSING", default: 7, range: 0...9)) == 7)
    }

    @Test func aRedisURLTheClientCannotParseIsASettingError() throws {
        let bad = Environment(["TERN_REDIS_URL": "redis://:pw-secret@localhost:6379"])
        do {
            _ = try CommonSettings(bad, role: "test")
            Issue.record("a named Redis host was accepted")
        } catch let e as ConfigError {
            #expect(e.description == "TERN_REDIS_URL: 'redis://:***@localhost:6379' is not "
                    + "redis://[:password@]host[:port][/db] with a numeric host")
        }
        // Left to the caller (ternctl config check reports it per daemon).
        let lenient = try CommonSettings(bad, role: "test", checkingRedisURL: false)
        #expect(lenient.redisURL == "redis://:pw-secret@localhost:6379")
        let good = try CommonSettings(Environment(["TERN_REDIS_URL": "redis://127.0.0.1:1/2"]),
                                      role: "test")
        #expect(good.redisURL == "redis://127.0.0.1:1/2")
    }

    @Test func socketAddresses() {
        #expect(SocketAddress("127.0.0.1:25")?.description == "127.0.0.1:25")
        #expect(SocketAddress("[::1]:2525")?.family == .inet6)
        #expect(SocketAddress("mx.example:25") == nil)
        #expect(SocketAddress("127.0.0.1") == nil)
        #expect(SocketAddress("::1:25") == nil)
    }
}

@Suite struct LoggerTests {
    @Test func fieldsAndLevels() {
        let sink = MemoryLogSink()
        let log = Logger(label: "t", level: .info, sink: sink).with(("message_id", "m1"))
        log.debug("hidden")
        log.info("shown", ("code", "250"))
        #expect(sink.records.count == 1)
        #expect(sink.records[0].fields == ["message_id": "m1", "code": "250"])
    }

    @Test func peerTextIsMadePrintable() {
        #expect(Logger.printable("ok\r\nevil=1\u{1b}[31m") == "ok\\x0d\\x0aevil=1\\x1b[31m")
        // C1 controls and the bidirectional overrides that reorder what a reader sees.
        #expect(Logger.printable("250 \u{85}ok\u{202E}kcab\u{2066}x\u{200F}é")
                == "250 \\x85ok\\u202ekcab\\u2066x\\u200fé")
        #expect(Logger.printable(String(repeating: "a", count: 10), limit: 4) == "aaaa…")
    }
}
