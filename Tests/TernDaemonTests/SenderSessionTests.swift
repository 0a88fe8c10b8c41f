// The sender's sessions against testworld/peer.py on loopback: connection reuse counted at
// the peer, RSET after a refused RCPT, a 421 mid-session, a second answer to the final dot
// (a session out of step), SIZE and SMTPUTF8 refused locally,
// a stalled server beside a working one, the group connection limit held across two
// senders sharing one Redis, and STARTTLS on pooled sessions (the policy in the session key,
// the clear-text fall-back after a broken handshake).

import Foundation
import Testing
import TernCore
import TernMail
import TernSender

@Suite(.serialized) struct SenderSessionTests {
    /// Domain -> (MX address, peer profile).
    static let peers: [String: (String, String)] = [
        "reuse.example": ("127.0.0.41", "plain"),
        "small.example": ("127.0.0.42", "size:100"),
        "ascii.example": ("127.0.0.43", "noutf8"),
        "closing.example": ("127.0.0.44", "close421"),
        "stall.example": ("127.0.0.45", "stall"),
        "serial.example": ("127.0.0.46", "nopipe"),
        "held.example": ("127.0.0.47", "delay:0.3"),
        "lost.example": ("127.0.0.49", "dropdot"),
        "closed.example": ("127.0.0.50", "greet554"),
        "badtls.example": ("127.0.0.52", "badtls"),
        "twice.example": ("127.0.0.54", "twice"),
        "quitstall.example": ("127.0.0.55", "quitstall"),
    ]

    static var records: [String: Any] {
        var r: [String: Any] = [:]
        for (domain, (addr, _)) in peers {
            r[domain] = ["MX": [[10, "mx." + domain]]]
            r["mx." + domain] = ["A": [addr]]
        }
        // Another domain on reuse.example's MX host, for a policy of its own.
        r["strict.example"] = ["MX": [[10, "mx.reuse.example"]]]
        return r
    }

    /// A harness whose world also points the peer domains at a running peer.
    static func start(_ env: [String: String], daemon: Bool = true) async throws
        -> (SenderHarness, TestPeer)
    {
        let h = try await SenderHarness(env: env, start: false, records: records)
        let peer = try await TestPeer(port: h.world.smtpPort, dir: h.world.dir,
                                      hosts: Dictionary(uniqueKeysWithValues:
                                          peers.values.map { ($0.0, $0.1) }))
        if daemon { try h.startDaemon() }
        return (h, peer)
    }

    /// The results of two messages to `domain`, the second sent once the first has its result.
    static func oneAfterAnother(_ h: SenderHarness, _ domain: String) async throws
        -> ([String: String], [String: String])
    {
        let one = try await h.submit(to: "one@" + domain)
        let first = try await h.result(one)
        let two = try await h.submit(to: "two@" + domain)
        return (first, try await h.result(two))
    }

    static func stop(_ h: SenderHarness, _ peer: TestPeer) async {
        await h.stop()
        peer.stop()
    }

    @Test func severalMessagesGoOverOneConnectionUpToTheLimit() async throws {
        let (h, peer) = try await Self.start([
            "TERN_GROUP_MAX_CONNECTIONS": "1", "TERN_MAX_MESSAGES_PER_CONNECTION": "3",
            // Long enough that the session outlives the pause between the first message and
            // the next five on a loaded machine (at 1 s a busy run saw a third connection).
            "TERN_CONNECTION_IDLE": "3s",
        ])
        let addr = "127.0.0.41"
        // One alone, then five at once: they queue for the one connection the group has.
        let first = try await h.submit(to: "a@reuse.example")
        #expect(try await h.result(first)["outcome"] == "delivered")
        var ids: [String] = []
        for i in 0..<5 { ids.append(try await h.submit(to: "r\(i)@reuse.example")) }
        for id in ids { #expect(try await h.result(id)["outcome"] == "delivered") }
        try await peer.wait(addr, "messages", atLeast: 6)
        #expect(peer.count(addr, "messages") == 6)
        // Three messages per connection: six messages, two connections.
        #expect(peer.count(addr, "connections") == 2)
        #expect(peer.count(addr, "max_open") == 1)
        // Idle for over TERN_CONNECTION_IDLE: closed with QUIT while the sender runs on.
        try await peer.wait(addr, "quits", atLeast: 2)
        #expect(peer.count(addr, "quits") == 2 && peer.count(addr, "open") == 0)
        await Self.stop(h, peer)
    }

    @Test func aRefusedRecipientIsFollowedByRSETOnTheSameConnection() async throws {
        let (h, peer) = try await Self.start(["TERN_GROUP_MAX_CONNECTIONS": "1"])
        for (domain, addr) in [("serial.example", "127.0.0.46"),
                               ("reuse.example", "127.0.0.41")] {
            let refused = try await h.submit(to: "reject-me@" + domain)
            let r = try await h.result(refused)
            #expect(r["outcome"] == "failed" && r["stage"] == "rcpt" && r["code"] == "550")
            let next = try await h.submit(to: "ok@" + domain)
            #expect(try await h.result(next)["outcome"] == "delivered", "\(domain)")
            try await peer.wait(addr, "messages", atLeast: 1)
            #expect(peer.count(addr, "rsets") == 1, "\(domain)")
            #expect(peer.count(addr, "connections") == 1, "\(domain)")
            #expect(peer.count(addr, "messages") == 1, "\(domain)")
        }
        await Self.stop(h, peer)
    }

    @Test func a421MidSessionEndsItAndTheMessageGoesOnAFreshConnection() async throws {
        let (h, peer) = try await Self.start(["TERN_GROUP_MAX_CONNECTIONS": "1"])
        let addr = "127.0.0.44"
        // The second MAIL on that session gets 421 and the peer hangs up.
        let (first, r) = try await Self.oneAfterAnother(h, "closing.example")
        #expect(first["outcome"] == "delivered")
        #expect(r["outcome"] == "delivered", "\(r)")
        try await peer.wait(addr, "messages", atLeast: 2)
        #expect(peer.count(addr, "connections") == 2 && peer.count(addr, "messages") == 2)
        await Self.stop(h, peer)
    }

    /// The peer answers the final dot twice. The spare reply is found when the next message
    /// starts on that session: out of step, so that message goes on a fresh connection rather
    /// than take the spare reply for MAIL's.
    @Test func aSecondAnswerToTheDotSendsTheNextMessageOnAFreshConnection() async throws {
        let (h, peer) = try await Self.start(["TERN_GROUP_MAX_CONNECTIONS": "1"])
        let addr = "127.0.0.54"
        let (first, r) = try await Self.oneAfterAnother(h, "twice.example")
        #expect(first["outcome"] == "delivered")
        #expect(r["outcome"] == "delivered" && r["reply"] == "2.0.0 ok", "\(r)")
        try await peer.wait(addr, "messages", atLeast: 2)
        #expect(peer.count(addr, "connections") == 2 && peer.count(addr, "messages") == 2)
        await Self.stop(h, peer)
    }

    @Test func aMessageOverTheServersSIZEIsRefusedWithoutSending() async throws {
        let (h, peer) = try await Self.start([:])
        let body = "Subject: big\r\n\r\n" + String(repeating: "x", count: 200) + "\r\n"
        let id = try await h.submit(to: "a@small.example", body: body)
        let r = try await h.result(id)
        #expect(r["outcome"] == "failed" && r["enhanced"] == "5.3.4" && r["code"] == "0")
        #expect(r["reply"]?.contains("SIZE limit of 100") == true)
        try await peer.wait("127.0.0.42", "connections", atLeast: 1)
        #expect((peer.counters("127.0.0.42")["mail_options"] as? [String])?.isEmpty == true)
        #expect(peer.count("127.0.0.42", "connections") == 1)
        await Self.stop(h, peer)
    }

    @Test func aUTF8AddressToAServerWithoutSMTPUTF8FailsClearly() async throws {
        let (h, peer) = try await Self.start([:])
        let id = try await h.submit(to: "jörg@ascii.example")
        let r = try await h.result(id)
        #expect(r["outcome"] == "failed" && r["enhanced"] == "5.6.7" && r["stage"] == "mail")
        #expect(r["reply"]?.contains("SMTPUTF8") == true)
        try await peer.wait("127.0.0.43", "connections", atLeast: 1)
        #expect(peer.count("127.0.0.43", "connections") == 1)
        #expect((peer.counters("127.0.0.43")["rcpts"] as? [String])?.isEmpty == true)
        await Self.stop(h, peer)
    }

    @Test func aServerThatStallsAfterItsGreetingHoldsUpNoOtherSession() async throws {
        let (h, peer) = try await Self.start(["TERN_SENDER_GRACE": "1s"])
        let stalled = try await h.submit(to: "a@stall.example")
        try await peer.wait("127.0.0.45", "open", atLeast: 1)
        let other = try await h.submit(to: "b@reuse.example")
        #expect(try await h.result(other)["outcome"] == "delivered")
        #expect(try await h.results(stalled).isEmpty)
        #expect(peer.count("127.0.0.45", "open") == 1)
        await Self.stop(h, peer)
    }

    @Test func theGroupConnectionLimitHoldsAcrossTwoSenders() async throws {
        let (h, peer) = try await Self.start([
            "TERN_GROUP_MAX_CONNECTIONS": "2", "TERN_SENDER_CONCURRENCY": "4",
        ], daemon: false)
        try h.startDaemon()
        try h.startDaemon(instance: "t2")
        var ids: [String] = []
        for i in 0..<16 { ids.append(try await h.submit(to: "m\(i)@held.example")) }
        // Each sender alone would open four; together they may have two.
        for id in ids { #expect(try await h.result(id)["outcome"] == "delivered") }
        let addr = "127.0.0.47"
        try await peer.wait(addr, "messages", atLeast: 16)
        #expect(peer.count(addr, "messages") == 16)
        #expect(peer.count(addr, "max_open") == 2)
        let scope = "127.0.0.2|mx:mx.held.example"
        let leases = try await h.redis.run("ZCARD", h.keys.groupLeases(scope))
        #expect((leases.int ?? -1) <= 2)
        await Self.stop(h, peer)
    }

    @Test func theProviderProfileSetsSessionLengthAndConnectionsPerIP() async throws {
        // held.example as a provider of its own: 3 messages a session, 2 sessions per IP.
        let file = NSTemporaryDirectory() + "tern-providers-\(UUID().uuidString).json"
        try Data(#"""
            {"providers": [{"name": "heldco", "domains": ["held.example"],
              "messagesPerMinute": 600, "connectionsPerIP": 2, "messagesPerConnection": 3}]}
            """#.utf8).write(to: URL(fileURLWithPath: file))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let (h, peer) = try await Self.start([
            "TERN_PROVIDERS_FILE": file, "TERN_SENDER_CONCURRENCY": "4",
            "TERN_CONNECTION_IDLE": "1s",
        ], daemon: false)
        try h.startDaemon()
        try h.startDaemon(instance: "t2")
        var ids: [String] = []
        for i in 0..<12 { ids.append(try await h.submit(to: "p\(i)@held.example")) }
        for id in ids { #expect(try await h.result(id)["outcome"] == "delivered") }
        let addr = "127.0.0.47"
        try await peer.wait(addr, "messages", atLeast: 12)
        #expect(peer.count(addr, "messages") == 12)
        // Eight deliveries in flight at most, two connections; three messages a session
        // (fewer only on a sender's last one, idle until it is closed).
        #expect(peer.count(addr, "max_open") == 2)
        for _ in 0..<200 where peer.perConnection(addr).reduce(0, +) < 12 {
            try await Task.sleep(for: .milliseconds(50))
        }
        let sessions = peer.perConnection(addr)
        #expect(sessions.reduce(0, +) == 12 && sessions.max() == 3, "\(sessions)")
        #expect(sessions.filter { $0 == 3 }.count >= 3, "\(sessions)")
        await Self.stop(h, peer)
    }

    @Test func theLastMessageOfASessionIsReportedWithoutWaitingForQUIT() async throws {
        // The server takes QUIT and never answers: the message before it was accepted at the
        // final dot, and its result must not wait out the QUIT timeout.
        let (h, peer) = try await Self.start(["TERN_MAX_MESSAGES_PER_CONNECTION": "1",
                                              "TERN_SMTP_TIMEOUT_QUIT": "300s"])
        let addr = "127.0.0.55"
        let id = try await h.submit(to: "a@quitstall.example")
        #expect(try await h.result(id)["outcome"] == "delivered")
        // The result is in while the session still waits for its answer to QUIT.
        try await peer.wait(addr, "quits", atLeast: 1)
        #expect(peer.count(addr, "open") == 1)
        // Gone, the server ends the wait at once, and the sender stops without it.
        peer.stop()
        await h.stop()
    }

    @Test func aConnectionLostAfterTheDotIsReportedAmbiguous() async throws {
        let (h, peer) = try await Self.start([:])
        let id = try await h.submit(to: "a@lost.example")
        let first = try await h.result(id)
        #expect(first["outcome"] == "ambiguous" && first["stage"] == "dot", "\(first)")
        #expect(first["code"] == "0" && first["reply"]?.contains("ambiguous") == true)
        // What to do about it is the scheduler's (TERN_AMBIGUOUS_RETRIES): a second release
        // is sent again and reported the same way.
        _ = try await h.redis.transaction([xadd(h.keys.stream(.ready), [
            ("id", id), ("attempt", "2"), ("ip", "127.0.0.2"), ("helo", "out1.tern.example"),
        ])])
        var second: [String: String] = [:]
        for _ in 0..<400 {
            let all = try await h.results(id)
            if all.count == 2 { second = all[1]; break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(second["outcome"] == "ambiguous" && second["attempt"] == "2", "\(second)")
        try await peer.wait("127.0.0.49", "messages", atLeast: 2)
        #expect(peer.count("127.0.0.49", "messages") == 2)
        await Self.stop(h, peer)
    }

    @Test func everyResultCarriesItsTimings() async throws {
        let (h, peer) = try await Self.start(["TERN_GROUP_MAX_CONNECTIONS": "1"])
        let first = try await h.result(try await h.submit(to: "t1@reuse.example"))
        let second = try await h.result(try await h.submit(to: "t2@reuse.example"))
        for (r, reused) in [(first, "no"), (second, "yes")] {
            let ms = ["connect_ms", "greeting_ms", "tls_ms", "data_ms"].map { Int(r[$0] ?? "") }
            #expect(ms.allSatisfy { ($0 ?? -1) >= 0 }, "\(r)")
            #expect(r["reused"] == reused, "\(r)")
            // The steps fit in the whole attempt.
            #expect(ms.compactMap { $0 }.reduce(0, +) <= Int(r["ms"] ?? "") ?? -1, "\(r)")
        }
        // A reused session spent nothing on opening.
        #expect(second["connect_ms"] == "0" && second["greeting_ms"] == "0")
        // A refused connection still says how long the connect took.
        let none = try await h.result(try await h.submit(to: "x@closed.example"))
        #expect(Int(none["connect_ms"] ?? "") ?? -1 >= 0 && none["data_ms"] == "0", "\(none)")
        await Self.stop(h, peer)
    }

    @Test func aGreetingRefusalByEveryHostDefersAndQuits() async throws {
        let (h, peer) = try await Self.start([:])
        let id = try await h.submit(to: "a@closed.example")
        let r = try await h.result(id)
        #expect(r["outcome"] == "deferred" && r["stage"] == "greeting" && r["code"] == "554")
        #expect(r["reply"]?.contains("no service for you") == true)
        try await peer.wait("127.0.0.50", "quits", atLeast: 1)
        #expect(peer.count("127.0.0.50", "quits") == 1)
        await Self.stop(h, peer)
    }

    @Test func aClearSessionIsNotReusedForADomainThatRequiresTLS() async throws {
        let (h, peer) = try await Self.start([
            "TERN_GROUP_MAX_CONNECTIONS": "2", "TERN_TLS_POLICY_DOMAINS": "strict.example=required",
        ])
        let addr = "127.0.0.41"
        let open = try await h.submit(to: "a@reuse.example")
        let o = try await h.result(open)
        #expect(o["outcome"] == "delivered" && o["tls"] == "", "\(o)")
        // Same MX host, same address, an idle clear session: the required domain gets its
        // own connection, which finds no STARTTLS and defers.
        let strict = try await h.submit(to: "b@strict.example")
        let r = try await h.result(strict)
        #expect(r["outcome"] == "deferred" && r["stage"] == "tls" && r["enhanced"] == "4.7.10",
                "\(r)")
        #expect(r["reply"] == "TLS is required for this destination and mx.reuse.example "
                + "does not offer STARTTLS")
        try await peer.wait(addr, "connections", atLeast: 2)
        #expect(peer.count(addr, "connections") == 2 && peer.count(addr, "messages") == 1)
        // The opportunistic session is still there for its own domain.
        let again = try await h.submit(to: "c@reuse.example")
        #expect(try await h.result(again)["outcome"] == "delivered")
        try await peer.wait(addr, "messages", atLeast: 2)
        #expect(peer.count(addr, "connections") == 2 && peer.count(addr, "messages") == 2)
        await Self.stop(h, peer)
    }

    @Test func aBrokenHandshakeFallsBackToClearAndThatSessionCarriesTheNextMessage()
        async throws
    {
        let (h, peer) = try await Self.start(["TERN_GROUP_MAX_CONNECTIONS": "1"])
        let addr = "127.0.0.52"
        let first = try await h.submit(to: "a@badtls.example")
        let r = try await h.result(first)
        #expect(r["outcome"] == "delivered" && r["tls"] == "" && r["tls_verified"] == "", "\(r)")
        #expect(r["reply"]?.contains("sent without TLS: STARTTLS with mx.badtls.example "
                                     + "failed") == true, "\(r)")
        // The host is remembered: the next message computes no TLS and takes the clear
        // session the fall-back left idle, with no new handshake and no new connection.
        let second = try await h.submit(to: "b@badtls.example")
        let s = try await h.result(second)
        #expect(s["outcome"] == "delivered" && s["tls"] == "", "\(s)")
        #expect(s["reply"]?.contains("without TLS") == false)
        try await peer.wait(addr, "messages", atLeast: 2)
        #expect(peer.count(addr, "tls_broken") == 1)
        #expect(peer.count(addr, "connections") == 2 && peer.count(addr, "messages") == 2)
        await Self.stop(h, peer)
    }

    @Test func aReusedTLSSessionRecordsItsTLSDetailsForEveryMessage() async throws {
        let h = try await SenderHarness(env: ["TERN_TLS_POLICY_DOMAINS": "tls.example=required",
                                              "TERN_GROUP_MAX_CONNECTIONS": "1"],
                                        trustWorld: true)
        var results: [[String: String]] = []
        for i in 0..<3 {
            let id = try await h.submit(to: "t\(i)@tls.example")
            results.append(try await h.result(id))
        }
        for r in results {
            #expect(r["outcome"] == "delivered" && r["tls_version"] == "TLSv1.3", "\(r)")
            #expect(r["tls_verified"] == "yes")
        }
        // One connection (one client port) carried all three, each over TLS.
        let spooled = (0..<3).flatMap { h.world.spooled(for: "t\($0)@tls.example") }
        #expect(spooled.count == 3)
        #expect(Set(spooled.map { "\($0.meta["peer_port"] ?? "")" }).count == 1)
        #expect(spooled.allSatisfy { $0["tls"]?.hasPrefix("TLSv1.3") == true })
        await h.stop()
    }
}
