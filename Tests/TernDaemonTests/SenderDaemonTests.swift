// The sender in-process against a private Redis and the loopback test world: each test puts
// a message record and a `ready` entry in Redis by hand, as the scheduler would, and checks
// the `results` entry and what the world's MX hosts received.

import Foundation
import Testing
import TernCore
import TernMail
import TernSender

@Suite(.serialized) struct SenderDaemonTests {
    @Test func deliversTheExactBytesFromTheSourceIPWithTheVERPReturnPath() async throws {
        let h = try await SenderHarness()
        // A leading dot and a lone dot line: dot-stuffed on the wire, unstuffed by the MX.
        let body = "Subject: exact\r\nX-Test: 1\r\n\r\n.leading dot\r\n.\r\nend\r\n"
        let id = try await h.submit(to: "plain@inbox.example", body: body)
        let r = try await h.result(id)
        #expect(r["outcome"] == "delivered")
        #expect(r["code"] == "250" && r["enhanced"] == "2.0.0")
        #expect(r["reply"]?.hasPrefix("2.0.0 Ok: queued as") == true)
        #expect(r["stage"] == "dot" && r["attempt"] == "1")
        #expect(r["mx"] == "mx1.inbox.example" && r["addr"] == "127.0.0.11")
        #expect(r["ip"] == "127.0.0.2" && r["tls"] == "")
        #expect(Int(r["ms"] ?? "") != nil)

        let spooled = h.world.spooled(for: "plain@inbox.example")
        #expect(spooled.count == 1)
        let m = try #require(spooled.first)
        #expect(m.raw == Array(body.utf8))
        #expect(m["peer_ip"] == "127.0.0.2")
        #expect(m["helo"] == "out1.tern.example")
        #expect(m["mail_from"] == h.verp.address(for: id))
        #expect(h.verp.decode(m["mail_from"] ?? "") == .success(id))
        #expect((m.meta["mail_options"] as? [String])?.contains("SIZE=\(body.utf8.count)") == true)

        // The entry was acknowledged in the result's transaction and trimmed a moment later.
        #expect(try await h.pendingCount() == 0)
        #expect(try await h.readyLength(settlesAt: 0))
        let line = h.logs.records.first { $0.message == "attempt delivered" }
        #expect(line?.fields["message_id"] == id && line?.fields["mx"] == "mx1.inbox.example")
        #expect(line?.fields["ip"] == "127.0.0.2" && line?.fields["code"] == "250")
        await h.stop()
    }

    /// `ready` entries acknowledged after the last trim of an earlier run (deliveries that
    /// finished in the shutdown grace) go once a sender starts, without waiting for new ones.
    @Test func aStartingSenderTrimsWhatTheLastRunAcknowledged() async throws {
        let h = try await SenderHarness(start: false)
        let ready = h.keys.stream(.ready)
        for n in 0..<3 { try await h.redis.run("XADD", ready, "*", "id", "gone\(n)") }
        let earlier = try await h.redis.readGroup(stream: ready, group: "sender",
                                                  consumer: "earlier-run", count: 10,
                                                  block: nil)
        try await h.redis.run(["XACK", ready, "sender"] + earlier.map(\.id))
        try h.startDaemon()
        #expect(try await h.readyLength(settlesAt: 0))
        await h.stop()
    }

    @Test func theSecondMXTakesItWhenTheFirstRefuses() async throws {
        let h = try await SenderHarness()
        let id = try await h.submit(to: "two@twomx.example")
        let r = try await h.result(id)
        #expect(r["outcome"] == "delivered", "\(r)")
        #expect(r["mx"] == "mx2.twomx.example" && r["addr"] == "127.0.0.15")
        #expect(h.world.spooled(for: "two@twomx.example").first?["mx_host"]
                == "mx2.twomx.example")
        await h.stop()
    }

    @Test func nullMXFailsWithoutConnecting() async throws {
        let h = try await SenderHarness()
        let id = try await h.submit(to: "n@nullmx.example")
        let r = try await h.result(id)
        #expect(r["outcome"] == "failed" && r["stage"] == "dns")
        #expect(r["code"] == "0" && r["enhanced"] == "5.1.10")
        #expect(r["mx"] == "" && r["addr"] == "")
        #expect(r["reply"]?.contains("null MX") == true)
        // nullmx.example's A record leads to a listening trap host: nothing reached it.
        #expect(h.world.spooled().isEmpty)
        await h.stop()
    }

    @Test func aRejectionAtRCPTFailsWithTheWholeReply() async throws {
        let h = try await SenderHarness()
        let rcpt = "bounce+\(UUID().uuidString.prefix(8).lowercased())@inbox.example"
        let id = try await h.submit(to: rcpt)
        let r = try await h.result(id)
        #expect(r["outcome"] == "failed" && r["stage"] == "rcpt")
        #expect(r["code"] == "550" && r["enhanced"] == "5.1.1")
        #expect(r["reply"] == "5.1.1 The email account that you tried to reach does not exist."
                + "\n5.1.1 <\(rcpt)>: Recipient address rejected: user unknown")
        #expect(h.world.spooled().isEmpty)
        await h.stop()
    }

    @Test func dnsAndTransientOutcomes() async throws {
        let h = try await SenderHarness()
        let implicit = try await h.submit(to: "a@nomx.example")
        let missing = try await h.submit(to: "a@nosuchdomain.example")
        let broken = try await h.submit(to: "a@servfail.example")
        let later = try await h.submit(to: "defer-always@inbox.example")

        let i = try await h.result(implicit)
        #expect(i["outcome"] == "delivered" && i["addr"] == "127.0.0.17")
        #expect(i["mx"] == "nomx.example")
        let m = try await h.result(missing)
        #expect(m["outcome"] == "failed" && m["stage"] == "dns" && m["enhanced"] == "5.1.2")
        let b = try await h.result(broken)
        #expect(b["outcome"] == "deferred" && b["stage"] == "dns" && b["enhanced"] == "4.4.3")
        let l = try await h.result(later)
        #expect(l["outcome"] == "deferred" && l["stage"] == "rcpt" && l["code"] == "451")
        #expect(try await h.pendingCount() == 0)
        await h.stop()
    }

    @Test func finalOrMissingRecordsAreOnlyAcknowledged() async throws {
        let h = try await SenderHarness()
        let done = try await h.submit(to: "done@inbox.example", state: "delivered")
        // An entry whose record expired or was never written.
        let gone = MessageID.generate()
        try await h.redis.run(["XADD", h.keys.stream(.ready), "*", "id", gone, "attempt", "1",
                               "ip", "127.0.0.2", "helo", "out1.tern.example"])
        let live = try await h.submit(to: "live@inbox.example")
        // Entries are taken in order, so once the last has a result the others are handled.
        _ = try await h.result(live)
        for _ in 0..<100 where try await h.pendingCount() != 0 {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(try await h.pendingCount() == 0)
        #expect(try await h.results(done).isEmpty)
        #expect(try await h.results(gone).isEmpty)
        #expect(h.world.spooled().count == 1)
        await h.stop()
    }

    @Test func entriesLeftPendingByAPreviousRunAreDeliveredFirst() async throws {
        let h = try await SenderHarness(start: false)
        try await h.redis.ensureGroup(stream: h.keys.stream(.ready), group: "sender")
        let id = try await h.submit(to: "again@inbox.example")
        // Read as this consumer and never acknowledged: a crash mid-delivery.
        let read = try await h.redis.readGroup(stream: h.keys.stream(.ready), group: "sender",
                                               consumer: "sender-t", count: 10, block: nil)
        #expect(read.count == 1)
        try h.startDaemon()
        let r = try await h.result(id)
        #expect(r["outcome"] == "delivered")
        #expect(try await h.pendingCount() == 0)
        await h.stop()
    }

    @Test func entriesOfADeadSenderAreTakenOver() async throws {
        let h = try await SenderHarness(env: ["TERN_SENDER_CLAIM_IDLE": "1s"], start: false)
        try await h.redis.ensureGroup(stream: h.keys.stream(.ready), group: "sender")
        let id = try await h.submit(to: "orphan@inbox.example")
        _ = try await h.redis.readGroup(stream: h.keys.stream(.ready), group: "sender",
                                        consumer: "sender-dead", count: 10, block: nil)
        try h.startDaemon()
        let r = try await h.result(id)
        #expect(r["outcome"] == "delivered")
        #expect(try await h.pendingCount() == 0)
        await h.stop()
    }

    @Test func shutdownLetsADeliveryInFlightFinish() async throws {
        let h = try await SenderHarness(env: ["TERN_SENDER_GRACE": "30s"])
        // slow.example answers the final dot seconds late.
        let id = try await h.submit(to: "wait@slow.example")
        for _ in 0..<200 where try await h.pendingCount() == 0 {
            try await Task.sleep(for: .milliseconds(25))
        }
        #expect(try await h.pendingCount() == 1)
        try await h.stopDaemon()
        #expect(try await h.results(id).first?["outcome"] == "delivered")
        #expect(try await h.pendingCount() == 0)
        await h.stop()
    }

    @Test func shutdownWithoutGraceLeavesTheEntryPending() async throws {
        let h = try await SenderHarness(env: ["TERN_SENDER_GRACE": "0s"])
        let id = try await h.submit(to: "cut@slow.example")
        for _ in 0..<200 where try await h.pendingCount() == 0 {
            try await Task.sleep(for: .milliseconds(25))
        }
        try await h.stopDaemon()
        #expect(try await h.results(id).isEmpty)
        #expect(try await h.pendingCount() == 1)
        await h.stop()
    }

    @Test func settingsRequireTheVERPSecret() throws {
        let env = Environment(["TERN_VERP_DOMAIN": "b.example", "TERN_VERP_SECRET": "abc"])
        #expect(throws: ConfigError.self) {
            try SenderSettings(env, common: CommonSettings(env, role: "sender"))
        }
        let ok = Environment(["TERN_VERP_DOMAIN": "b.example",
                              "TERN_VERP_SECRET": SenderHarness.secret,
                              "TERN_SMTP_TIMEOUT_DOT": "20m", "TERN_SMTP_PORT": "2525"])
        let s = try SenderSettings(ok, common: CommonSettings(ok, role: "sender"))
        #expect(s.timeouts.dataTermination == .seconds(1200))
        #expect(s.timeouts.greeting == .seconds(300))
        #expect(s.smtpPort == 2525 && s.concurrency == 2000)
        #expect(s.maxMessagesPerConnection == 100 && s.connectionIdle == .seconds(30))
        #expect(s.groupMaxConnections == 10 && s.groupConnectionWait == .seconds(120))
        #expect(s.dnsResolver.description == "127.0.0.1:53")
    }
}
