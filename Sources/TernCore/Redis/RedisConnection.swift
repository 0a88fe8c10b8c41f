// One connection to Redis over the event loop; hiredis only parses the replies.
//
// Commands are written as RESP arrays of bulk strings (binary safe) and may be pipelined:
// `send` writes every command, then reads exactly as many replies.

import CHiredis

public final class RedisConnection: @unchecked Sendable {
    private let socket: TCPConnection
    private let reader: UnsafeMutablePointer<redisReader>
    public private(set) var broken = false

    public static func open(_ address: SocketAddress, password: String?, db: Int,
                            deadline: ContinuousClock.Instant?) async throws -> RedisConnection {
        let socket = try await TCPConnection.connect(to: address, deadline: deadline)
        let conn = RedisConnection(socket: socket)
        if let password {
            _ = try await conn.command(["AUTH", password]).get()
        }
        if db != 0 {
            _ = try await conn.command(["SELECT", String(db)]).get()
        }
        return conn
    }

    private init(socket: TCPConnection) {
        self.socket = socket
        self.reader = redisReaderCreate()
    }

    deinit {
        redisReaderFree(reader)
        socket.close()
    }

    public func close() {
        broken = true
        socket.close()
    }

    /// Sends one command and returns its reply (error replies come back as values).
    public func command(_ args: [String], deadline: ContinuousClock.Instant? = nil)
        async throws -> RedisValue
    {
        try await send([args.map { RedisArg.text($0) }], deadline: deadline)[0]
    }

    /// Pipelines `commands` and returns their replies in order.
    public func send(_ commands: [[RedisArg]], deadline: ContinuousClock.Instant? = nil)
        async throws -> [RedisValue]
    {
        do {
            var out: [UInt8] = []
            out.reserveCapacity(64 * commands.count)
            for args in commands { RedisConnection.encode(args, into: &out) }
            try await socket.write(out, deadline: deadline)
            var replies: [RedisValue] = []
            replies.reserveCapacity(commands.count)
            while replies.count < commands.count {
                if let reply = try nextBuffered() {
                    replies.append(reply)
                    continue
                }
                let bytes = try await socket.read(max: 65536, deadline: deadline)
                if bytes.isEmpty { throw IOError.closed }
                bytes.withUnsafeBufferPointer { p in
                    p.withMemoryRebound(to: CChar.self) {
                        _ = redisReaderFeed(reader, $0.baseAddress, bytes.count)
                    }
                }
            }
            return replies
        } catch {
            broken = true
            throw error
        }
    }

    private func nextBuffered() throws -> RedisValue? {
        var raw: UnsafeMutableRawPointer?
        guard redisReaderGetReply(reader, &raw) == REDIS_OK else {
            let message = withUnsafeBytes(of: reader.pointee.errstr) {
                String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            throw RedisError.protocolError(message)
        }
        guard let raw else { return nil }
        let reply = raw.assumingMemoryBound(to: redisReply.self)
        defer { freeReplyObject(raw) }
        return RedisValue(reply)
    }

    /// One command as a RESP array of bulk strings, written straight into `out`: no array
    /// per argument (the scheduler sends a few dozen arguments for every message).
    static func encode(_ args: [RedisArg], into out: inout [UInt8]) {
        header(UInt8(ascii: "*"), args.count, into: &out)
        for a in args {
            switch a {
            case .text(let text):
                header(UInt8(ascii: "$"), text.utf8.count, into: &out)
                out.append(contentsOf: text.utf8)
            case .data(let bytes):
                header(UInt8(ascii: "$"), bytes.count, into: &out)
                out.append(contentsOf: bytes)
            }
            out.append(0x0D)
            out.append(0x0A)
        }
    }

    /// `*3\r\n` or `$12\r\n`.
    private static func header(_ kind: UInt8, _ count: Int, into out: inout [UInt8]) {
        out.append(kind)
        if count < 10 {
            out.append(UInt8(ascii: "0") + UInt8(count))
        } else {
            out.append(contentsOf: String(count).utf8)
        }
        out.append(0x0D)
        out.append(0x0A)
    }
}

extension RedisValue {
    /// The value, or the server's error thrown.
    public func get() throws -> RedisValue {
        if case .error(let message) = self { throw RedisError.server(message) }
        return self
    }
}
