// The client against a server that offers STARTTLS and then breaks the handshake (it
// answers 220 and sends garbage): opportunistic delivery goes again in clear text at once
// and skips TLS for that host afterwards; required delivery defers.

import Foundation
import Synchronization
import Testing
import TernCore
import TernMail
@testable import TernSMTP

/// A server that serves one script per connection, in order, and records every line.
final class BrokenTLSPeer: Sendable {
    let listener: TCPListener
    let task: Task<[[String]], any Error>

    /// The first `broken` connections offer STARTTLS and answer the handshake with
    /// garbage; the ones after take a message in clear text without offering it.
    init(connections: Int, broken: Int) throws {
        let listener = try TCPListener(address: SocketAddress("127.0.0.1:0")!)
        self.listener = listener
        task = Task {
            var transcripts: [[String]] = []
            for n in 0..<connections {
                let conn = try await listener.accept()
                defer { conn.close() }
                transcripts.append(try await Self.serve(conn, breakTLS: n < broken))
            }
            return transcripts
        }
    }

    static func serve(_ conn: TCPConnection, breakTLS: Bool) async throws -> [String] {
        let reader = LineReader(conn)
        let deadline = ContinuousClock.now + .seconds(20)
        var lines: [String] = []
        func say(_ text: String) async throws {
            try await conn.write(Array((text + "\r\n").utf8), deadline: deadline)
        }
        try await say("220 broken.test ESMTP")
        while let raw = try? await reader.readLine(limit: 4096, deadline: deadline) {
            let line = String(decoding: raw, as: UTF8.self)
            lines.append(line)
            switch line.prefix(4).uppercased() {
            case "EHLO":
                try await say(breakTLS ? "250-broken.test\r\n250 STARTTLS" : "250 broken.test")
            case "STAR":
                try await say("220 2.0.0 go ahead")
                // Garbage in answer to the ClientHello (sent any earlier, the client would
                // rightly drop it unread with the 220, RFC 3207 §4.2).
                _ = try await conn.read(max: 16384, deadline: deadline)
                try await say("this is no TLS handshake \u{1}\u{2}\u{3}")
                return lines
            case "DATA":
                try await say("354 go")
                while let text = try await reader.readLine(limit: 4096, deadline: deadline),
                      text != [UInt8(ascii: ".")] {}
                try await say("250 2.0.0 queued")
            case "QUIT":
                try await say("221 bye")
                return lines
            default:
                try await say("250 ok")
            }
        }
        return lines
    }

    var address: SocketAddress { listener.address }

    func transcripts() async throws -> [[String]] {
        defer { listener.close() }
        return try await task.value
    }
}

@Suite struct ClientTLSFallbackTests {
    static func tls(_ policy: TLSPolicy,
                    cache: TLSFallbackCache = TLSFallbackCache(ttl: .seconds(3600)))
        throws -> SMTPClientTLS
    {
        SMTPClientTLS(context: try TLSContext.client(caFile: nil),
                      policies: TLSPolicies(default: policy), fallbacks: cache)
    }

    static func deliver(to peer: BrokenTLSPeer, tls: SMTPClientTLS) async -> DeliveryResult {
        await SMTPClient.deliver(ClientConnectionTests.message("Subject: t\r\n\r\nhi\r\n"),
                                 to: peer.address, mxHost: "broken.test", from: nil,
                                 helo: "out1.tern.example", tls: tls, domain: "inbox.example")
    }

    @Test func opportunisticFallsBackToClearTextAndRemembersTheHost() async throws {
        let cache = TLSFallbackCache(ttl: .seconds(3600))
        let tls = try Self.tls(.opportunistic, cache: cache)
        let peer = try BrokenTLSPeer(connections: 3, broken: 1)
        let first = await Self.deliver(to: peer, tls: tls)
        #expect(first.outcome == .delivered && first.tls == nil)
        #expect(first.text.hasPrefix("2.0.0 queued\nsent without TLS: STARTTLS with "
                                     + "broken.test failed: TLS handshake failed: "), "\(first)")
        #expect(cache.avoidsTLS("broken.test"))

        // The host is remembered: the next delivery does not even try STARTTLS.
        let second = await Self.deliver(to: peer, tls: tls)
        #expect(second.outcome == .delivered && second.text == "2.0.0 queued")
        let t = try await peer.transcripts()
        #expect(t.count == 3)
        #expect(t[0] == ["EHLO out1.tern.example", "STARTTLS"])
        for clear in t[1...] {
            #expect(clear.first == "EHLO out1.tern.example" && !clear.contains("STARTTLS"))
            #expect(clear.last == "QUIT")
        }
    }

    @Test func requiredDefersAndStaysOnTheHost() async throws {
        let cache = TLSFallbackCache(ttl: .seconds(3600))
        let peer = try BrokenTLSPeer(connections: 1, broken: 1)
        let result = await Self.deliver(to: peer, tls: try Self.tls(.required, cache: cache))
        #expect(result.outcome == .deferred && result.stage == .tls && result.code == 0)
        #expect(result.enhanced == "4.7.5" && result.fallback == DeliveryFallback.none)
        #expect(result.detail.hasPrefix("STARTTLS with broken.test failed: "
                                        + "TLS handshake failed: "), "\(result.detail)")
        #expect(!cache.avoidsTLS("broken.test"))
        #expect(try await peer.transcripts() == [["EHLO out1.tern.example", "STARTTLS"]])
    }

    @Test func requiredDefersWhenSTARTTLSIsNotOffered() async throws {
        let peer = try BrokenTLSPeer(connections: 1, broken: 0)
        let result = await Self.deliver(to: peer, tls: try Self.tls(.required))
        #expect(result.outcome == .deferred && result.stage == .tls)
        #expect(result.enhanced == "4.7.10")
        #expect(result.text == "TLS is required for this destination and broken.test does not "
                + "offer STARTTLS")
        #expect(try await peer.transcripts() == [["EHLO out1.tern.example", "QUIT"]])
    }
}
