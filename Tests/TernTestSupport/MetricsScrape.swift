// Reads a daemon's /metrics or /health over a real loopback socket, as Prometheus would.

import Foundation
import TernCore

public struct ScrapeReply: Sendable {
    public let status: Int
    public let head: String
    public let body: String

    /// The value of the sample whose series is exactly `series`, e.g.
    /// `tern_stream_length{stream="submit"}`; nil when there is no such line.
    public func sample(_ series: String) -> Double? {
        for line in body.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1))
        }
        return nil
    }
}

/// GET `path` from 127.0.0.1:`port` with Connection: close, reading to the end.
public func scrape(port: Int, path: String = "/metrics") async throws -> ScrapeReply {
    let address = SocketAddress("127.0.0.1:\(port)")!
    let deadline = ContinuousClock.now + .seconds(10)
    let connection = try await TCPConnection.connect(to: address, deadline: deadline)
    defer { connection.close() }
    let request = "GET \(path) HTTP/1.1\r\nHost: tern.test\r\nConnection: close\r\n\r\n"
    try await connection.write(Array(request.utf8), deadline: deadline)
    var bytes: [UInt8] = []
    while true {
        let chunk = try await connection.read(deadline: deadline)
        if chunk.isEmpty { break }
        bytes += chunk
    }
    let text = String(decoding: bytes, as: UTF8.self)
    let parts = text.components(separatedBy: "\r\n\r\n")
    let head = parts.first ?? ""
    let status = head.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
    return ScrapeReply(status: status, head: head,
                       body: parts.dropFirst().joined(separator: "\r\n\r\n"))
}

/// Scrapes `path` until something answers on `port` (a daemon still starting), for up to
/// five seconds, without blocking a thread of the cooperative pool.
public func scrapeWhenUp(port: Int, path: String = "/metrics") async throws -> ScrapeReply {
    for _ in 0..<200 {
        if let reply = try? await scrape(port: port, path: path) { return reply }
        try await Task.sleep(for: .milliseconds(25))
    }
    return try await scrape(port: port, path: path)
}

/// Scrapes until `series` has `value` (work finishing in another task), for up to five
/// seconds; returns the last scrape either way, for the test's own expectations.
public func scrapeUntil(port: Int, _ series: String, is value: Double) async throws
    -> ScrapeReply
{
    var reply = try await scrape(port: port)
    for _ in 0..<200 where reply.sample(series) != value {
        try await Task.sleep(for: .milliseconds(25))
        reply = try await scrape(port: port)
    }
    return reply
}
