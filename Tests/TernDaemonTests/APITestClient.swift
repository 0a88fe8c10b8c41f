// A raw HTTP/1.1 client for the API and HTTP server tests: it writes exactly the bytes a test
// gives (malformed ones included) over a real loopback socket and parses what comes back,
// so the tests see the server as any client would.

import Foundation
import TernCore

struct RawReply: Sendable {
    let status: Int
    let headers: HTTPHeaders
    let body: [UInt8]

    var text: String { String(decoding: body, as: UTF8.self) }

    var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:]
    }

    /// The problem document (RFC 9457) of an error answer; empty for any other answer.
    var error: [String: Any] {
        headers["Content-Type"] == "application/problem+json" ? json : [:]
    }
    var errorField: String? { error["field"] as? String }
}

struct RawHTTPError: Error, CustomStringConvertible {
    let description: String
}

final class RawHTTP: @unchecked Sendable {
    let connection: TCPConnection
    let reader: LineReader

    private init(_ connection: TCPConnection) {
        self.connection = connection
        self.reader = LineReader(connection)
    }

    static func connect(_ address: SocketAddress) async throws -> RawHTTP {
        RawHTTP(try await TCPConnection.connect(to: address, deadline: .now + .seconds(5)))
    }

    deinit { connection.close() }

    // Generous: tests run side by side on a loaded machine; a healthy answer takes ms.
    private var deadline: ContinuousClock.Instant { .now + .seconds(30) }

    func send(_ bytes: [UInt8]) async throws {
        try await connection.write(bytes, deadline: deadline)
    }

    func send(_ text: String) async throws { try await send(Array(text.utf8)) }

    /// One request with Host and Content-Length filled in (unless given).
    func request(_ method: String, _ target: String, headers: [(String, String)] = [],
                 body: [UInt8] = []) async throws -> RawReply {
        var head = "\(method) \(target) HTTP/1.1\r\n"
        if !headers.contains(where: { $0.0.lowercased() == "host" }) {
            head += "Host: tern.test\r\n"
        }
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if !body.isEmpty && !headers.contains(where: { $0.0.lowercased() == "content-length" }) {
            head += "Content-Length: \(body.count)\r\n"
        }
        try await send(Array((head + "\r\n").utf8) + body)
        return try await response(head: method == "HEAD")
    }

    /// The next final response (an interim 100 Continue is skipped unless asked for).
    func response(head: Bool = false, interim: Bool = false) async throws -> RawReply {
        while true {
            guard let line = try await reader.readLine(limit: 8192, deadline: deadline) else {
                throw RawHTTPError(description: "connection closed before a response")
            }
            let parts = line.split(separator: UInt8(ascii: " "), maxSplits: 2)
            guard parts.count >= 2, parts[0].starts(with: Array("HTTP/1.".utf8)),
                  let status = Int(String(decoding: parts[1], as: UTF8.self)) else {
                let text = String(decoding: line, as: UTF8.self)
                throw RawHTTPError(description: "bad status line \(text)")
            }
            var headers = HTTPHeaders()
            while let l = try await reader.readLine(limit: 65536, deadline: deadline),
                  !l.isEmpty {
                let text = String(decoding: l, as: UTF8.self)
                guard let colon = text.firstIndex(of: ":") else {
                    throw RawHTTPError(description: "bad header line \(text)")
                }
                headers.add(String(text[..<colon]),
                            text[text.index(after: colon)...].trimmingCharacters(in: .whitespaces))
            }
            if (100...199).contains(status) {
                if interim { return RawReply(status: status, headers: headers, body: []) }
                continue
            }
            let length = head ? 0 : Int(headers["Content-Length"] ?? "0") ?? 0
            let body = try await reader.readExactly(length, deadline: deadline)
            return RawReply(status: status, headers: headers, body: body)
        }
    }

    /// True when the server has closed the connection (reads reach the end of the stream);
    /// anything still arriving is read and dropped first.
    func closedByServer() async -> Bool {
        do {
            while true {
                if reader.buffered > 0 {
                    _ = try await reader.readExactly(reader.buffered, deadline: deadline)
                }
                let more = try await connection.read(max: 65536, deadline: deadline)
                if more.isEmpty { return true }
            }
        } catch IOError.system(_, let code) where code == ECONNRESET {
            return true
        } catch {
            return false
        }
    }
}

/// A request to `address` on a connection of its own.
func httpRequest(_ address: SocketAddress, _ method: String, _ target: String,
                 headers: [(String, String)] = [], body: [UInt8] = []) async throws -> RawReply {
    let client = try await RawHTTP.connect(address)
    return try await client.request(method, target, headers: headers, body: body)
}
