import Testing
import TernCore
import TernMail
@testable import TernScheduler

@Suite struct ReplySignalTests {
    let gmail = ProviderCatalog.builtin.profile(named: "gmail")!
    let yahoo = ProviderCatalog.builtin.profile(named: "yahoo")!

    @Test func readsReplies() {
        func assess(_ code: Int, _ enhanced: String, _ text: String, stage: String = "rcpt",
                    _ profile: ProviderProfile? = nil) -> ReplySignal {
            ReplySignal.assess(code: code, enhanced: enhanced, text: text, stage: stage,
                               profile: profile ?? gmail)
        }
        #expect(assess(250, "2.0.0", "OK", stage: "dot") == .accepted)
        #expect(assess(421, "4.7.0", "Try again later, closing connection") == .slowDown)
        #expect(assess(451, "4.7.1", "Rate limit exceeded for this sender") == .slowDown)
        #expect(assess(450, "4.2.1", "The user you are trying to contact is receiving mail at "
                       + "a rate that prevents additional messages") == .slowDown)
        #expect(assess(450, "4.2.0", "Mailbox busy") == .transient)
        #expect(assess(0, "", "connection refused", stage: "connect") == .slowDown)
        #expect(assess(0, "", "lost", stage: "data") == .transient)
        #expect(assess(0, "5.1.2", "the recipient domain x.example does not exist (DNS NXDOMAIN)",
                       stage: "dns") == .recipient)
        #expect(assess(0, "5.1.10", "x.example publishes a null MX", stage: "dns") == .recipient)
        #expect(assess(0, "4.4.3", "MX lookup for x.example failed", stage: "dns") == .transient)
        #expect(assess(421, "4.7.0", "[TSS04] Messages from 192.0.2.1 temporarily deferred",
                       yahoo) == .slowDown)
        #expect(assess(553, "5.7.1", "[BL21] Connections will not be accepted from 192.0.2.1",
                       yahoo) == .blocked)
        #expect(assess(550, "5.7.1", "Service unavailable; client host blocked using "
                       + "zen.spamhaus.org") == .blocked)
        #expect(assess(550, "5.1.1", "The email account that you tried to reach does not exist")
                == .recipient)
        #expect(assess(552, "5.2.2", "Mailbox full") == .recipient)
        #expect(assess(550, "", "No such user", stage: "rcpt") == .recipient)
        #expect(assess(554, "5.7.1", "Message rejected as spam") == .permanent)
    }
}

@Suite struct AdaptiveRateTests {
    let settings = ThrottleSettings()

    @Test func slowDownHalvesAndBacksOffDoublingEachTime() {
        var rate = AdaptiveRate(ceiling: 100, nowMs: 0)
        #expect(rate.intervalMs == 600)
        let changed = rate.record(.slowDown, reply: "421 busy", nowMs: 1_000, settings: settings)
        #expect(changed)
        #expect(rate.rate == 50)
        #expect(rate.state == .backingOff)
        #expect(rate.holdUntilMs == 61_000)
        #expect(!rate.mayRelease(nowMs: 60_999))
        #expect(rate.mayRelease(nowMs: 61_000))
        #expect(rate.reason == "slow down: 421 busy")
        rate.record(.slowDown, reply: "421 busy", nowMs: 61_000, settings: settings)
        #expect(rate.rate == 25)
        #expect(rate.holdUntilMs == 61_000 + 120_000)
        for _ in 0..<20 { rate.record(.slowDown, reply: "421", nowMs: 200_000, settings: settings) }
        #expect(rate.rate == settings.floorPerMinute)
        #expect(rate.holdUntilMs == 200_000 + settings.maxBackoff.milliseconds)
    }

    @Test func sustainedSuccessClimbsBackToTheCeilingAndNoFurther() {
        var rate = AdaptiveRate(ceiling: 100, nowMs: 0)
        rate.record(.slowDown, reply: "421", nowMs: 0, settings: settings)
        var now: Int64 = 100_000
        var steps = 0
        while rate.rate < 100 {
            for _ in 0..<settings.successesPerStep {
                rate.record(.accepted, reply: "250", nowMs: now, settings: settings)
            }
            now += 1_000
            steps += 1
        }
        #expect(steps == 5)            // 50 → 60 → 70 → 80 → 90 → 100
        #expect(rate.state == .steady)
        #expect(rate.slowDownsInARow == 0)
        for _ in 0..<200 { rate.record(.accepted, reply: "250", nowMs: now, settings: settings) }
        #expect(rate.rate == 100)
    }

    @Test func successDuringABackOffDoesNotRaiseTheRate() {
        var rate = AdaptiveRate(ceiling: 100, nowMs: 0)
        rate.record(.slowDown, reply: "421", nowMs: 0, settings: settings)
        for _ in 0..<500 { rate.record(.accepted, reply: "250", nowMs: 1_000, settings: settings) }
        #expect(rate.rate == 50)
    }

    @Test func aBlockPausesAndOtherFailuresTeachNothing() {
        var rate = AdaptiveRate(ceiling: 100, nowMs: 0)
        for signal in [ReplySignal.recipient, .permanent, .transient] {
            let changed = rate.record(signal, reply: "5xx", nowMs: 0, settings: settings)
            #expect(!changed)
        }
        #expect(rate.rate == 100)
        rate.record(.blocked, reply: "553 [BL21]", nowMs: 5_000, settings: settings)
        #expect(rate.state == .paused)
        #expect(rate.holdUntilMs == 5_000 + 3_600_000)
        #expect(rate.reason.hasPrefix("blocked: 553 [BL21]"))
    }

    @Test func aLowerCeilingCapsTheRateAtOnce() {
        var rate = AdaptiveRate(ceiling: 100, nowMs: 0)
        rate.setCeiling(40, nowMs: 9)
        #expect(rate.rate == 40)
        #expect(rate.changedMs == 9)
    }
}

@Suite struct PoolCeilingTests {
    @Test func aProviderLimitForThePoolHoldsAcrossItsIPs() {
        var gmail = ProviderCatalog.builtin.profile(named: "gmail")!
        gmail.poolMessagesPerMinute = 60                 // one a second for the whole pool
        let ips = [SourceIP(address: "192.0.2.1", helo: "a"), SourceIP(address: "192.0.2.2",
                                                                       helo: "b")]
        let throttles = Throttles(settings: ThrottleSettings())
        let first = throttles.pick(ips, pool: "p", provider: gmail, nowMs: 0)
        #expect(first.ip?.address == "192.0.2.1")
        throttles.sent(ip: "192.0.2.1", pool: "p", provider: gmail, nowMs: 0)
        // The second IP has room of its own, but the pool has used its second.
        let second = throttles.pick(ips, pool: "p", provider: gmail, nowMs: 500)
        #expect(second.ip == nil && second.retryAtMs == 1_000)
        #expect(throttles.pick(ips, pool: "p", provider: gmail, nowMs: 1_000).ip?.address
                == "192.0.2.2")
        // Another pool is not held by this one.
        #expect(throttles.pick(ips, pool: "q", provider: gmail, nowMs: 500).ip != nil)
    }
}
