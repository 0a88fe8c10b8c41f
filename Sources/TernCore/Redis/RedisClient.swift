// A small pool of Redis connections shared by a daemon's tasks, with the stream and script
// operations the daemons use. A connection that failed is dropped, never reused.

import COpenSSL
import Foundation
import Synchronization

public final class RedisClient: Sendable {
    public let address: SocketAddress
    private let password: String?
    private let db: Int
    private let idle = Mutex<[RedisConnection]>([])
    private let maxIdle: Int
    private let connectTimeout: Duration

    /// `url`: `redis://[:password@]host:port[/db]`, numeric host only (RedisURL).
    public init(url: String, maxIdle: Int = 32, connectTimeout: Duration = .seconds(5)) throws {
        let parsed = try RedisURL(url)
        self.address = parsed.address
        self.password = parsed.password
        self.db = parsed.db
        self.maxIdle = maxIdle
        self.connectTimeout = connectTimeout
    }

    /// Runs `body` with a connection of its own; returns the connection to the pool after.
    public func withConnection<R: Sendable>(
        _ body: (RedisConnection) async throws -> R
    ) async throws -> R {
        let conn = try await checkout()
        do {
            let r = try await body(conn)
            checkin(conn)
            return r
        } catch {
            conn.close()
            throw error
        }
    }

    /// One command; an error reply is thrown.
    @discardableResult
    public func run(_ args: String...) async throws -> RedisValue {
        try await run(args)
    }

    @discardableResult
    public func run(_ args: [String]) async throws -> RedisValue {
        try await withConnection { try await $0.command(args, deadline: self.deadline()) }.get()
    }

    /// Pipelined commands with binary-safe arguments; replies in order, errors as values.
    public func pipeline(_ commands: [[RedisArg]]) async throws -> [RedisValue] {
        try await withConnection { try await $0.send(commands, deadline: self.deadline()) }
    }

    /// Pipelined commands that must answer within `timeout` (scrapes, health checks), so a
    /// slow Redis makes a scrape fail fast instead of hanging it.
    public func pipeline(_ commands: [[RedisArg]], within timeout: Duration) async throws
        -> [RedisValue]
    {
        try await withConnection { try await $0.send(commands, deadline: .now + timeout) }
    }

    /// MULTI … EXEC: every command or none. Returns EXEC's replies.
    public func transaction(_ commands: [[RedisArg]]) async throws -> [RedisValue] {
        var all: [[RedisArg]] = [["MULTI"]]
        all.append(contentsOf: commands)
        all.append(["EXEC"])
        let replies = try await pipeline(all)
        for r in replies.dropLast() {
            if case .error(let e) = r { throw RedisError.server(e) }
        }
        guard case .array(let results) = try replies.last!.get() else {
            throw RedisError.server("transaction aborted")
        }
        return results
    }

    /// Runs a Lua script by its SHA, loading it on NOSCRIPT.
    public func eval(_ script: RedisScript, keys: [String], args: [RedisArg]) async throws
        -> RedisValue
    {
        var cmd: [RedisArg] = ["EVALSHA", .text(script.sha), .text(String(keys.count))]
        cmd += keys.map { RedisArg.text($0) }
        cmd += args
        let r = try await pipeline([cmd])[0]
        if case .error(let e) = r, e.hasPrefix("NOSCRIPT") {
            cmd[0] = "EVAL"
            cmd[1] = .text(script.source)
            return try await pipeline([cmd])[0].get()
        }
        return try r.get()
    }

    public func ping() async -> Bool {
        (try? await run("PING"))?.string == "PONG"
    }

    private func deadline() -> ContinuousClock.Instant { .now + .seconds(10) }

    private func checkout() async throws -> RedisConnection {
        if let c = idle.withLock({ $0.popLast() }) { return c }
        return try await RedisConnection.open(
            address, password: password, db: db, deadline: .now + connectTimeout)
    }

    private func checkin(_ conn: RedisConnection) {
        guard !conn.broken else { return }
        let keep = idle.withLock { pool -> Bool in
            guard pool.count < maxIdle else { return false }
            pool.append(conn)
            return true
        }
        if !keep { conn.close() }
    }
}

/// An argument of a Redis command: text or raw bytes (a message body).
public enum RedisArg: Sendable, ExpressibleByStringLiteral {
    case text(String)
    case data([UInt8])

    public init(stringLiteral value: String) { self = .text(value) }

    public var bytes: [UInt8] {
        switch self {
        case .text(let s): return Array(s.utf8)
        case .data(let d): return d
        }
    }
}

/// A Lua script with its SHA1, computed once.
public struct RedisScript: Sendable {
    public let source: String
    public let sha: String

    public init(_ source: String) {
        self.source = source
        var digest = [UInt8](repeating: 0, count: 20)
        let bytes = Array(source.utf8)
        _ = SHA1(bytes, bytes.count, &digest)
        self.sha = digest.map { String(format: "%02x", $0) }.joined()
    }
}
