import Testing
import TernCore
import TernMail
@testable import TernScheduler

@Suite struct RetryPolicyTests {
    let policy = RetryPolicy(delays: [.seconds(60), .seconds(600)])

    static let cases: [(AttemptOutcome, Int, Decision)] = [
        (.delivered, 1, .delivered),
        (.failed, 3, .bounced),
        (.deferred, 1, .retry(atMs: 61_000)),
        (.deferred, 2, .retry(atMs: 601_000)),
        (.deferred, 9, .retry(atMs: 601_000)),   // the last delay repeats
    ]

    @Test(arguments: cases)
    func decisions(outcome: AttemptOutcome, attempt: Int, expected: Decision) {
        #expect(policy.decide(outcome: outcome, attempt: attempt, nowMs: 1_000,
                              expiresMs: 10_000_000) == expected)
    }

    @Test func expiresWhenTheNextRetryWouldBeTooLate() {
        #expect(policy.decide(outcome: .deferred, attempt: 1, nowMs: 1_000,
                              expiresMs: 60_999) == .expired)
        #expect(policy.decide(outcome: .deferred, attempt: 1, nowMs: 1_000,
                              expiresMs: 61_000) == .retry(atMs: 61_000))
    }

    @Test func decisionsReadAsLogsShowThem() {
        #expect("\(Decision.retry(atMs: 1_796_455_784_656))" == "retry at 2026-12-05T07:29:44.656Z")
        #expect("\(Decision.bounced)" == "bounced")
    }

    @Test func anAmbiguousAttemptIsSentOnceMoreAfterItsOwnDelayThenTakenAsDelivered() {
        let p = RetryPolicy(delays: [.seconds(60)], ambiguousRetries: 1,
                            ambiguousDelay: .seconds(3600))
        // (ambiguous attempts before, deadline) -> decision
        let cases: [(Int, Int64, Decision)] = [
            (0, 10_000_000, .retry(atMs: 3_601_000)),   // not the retry schedule's 61 s
            (1, 10_000_000, .delivered),                // resends spent
            (0, 3_600_999, .delivered),                 // past the deadline: not expired
        ]
        for (before, expires, expected) in cases {
            #expect(p.decide(outcome: .ambiguous, attempt: 1, nowMs: 1_000, expiresMs: expires,
                             ambiguousBefore: before) == expected)
        }
        let never = RetryPolicy(delays: [.seconds(60)], ambiguousRetries: 0)
        #expect(never.decide(outcome: .ambiguous, attempt: 1, nowMs: 1_000,
                             expiresMs: 10_000_000) == .delivered)
    }

    @Test func defaultDelaysGrowToADayWithinTwoDays() {
        let total = SchedulerSettings.defaultRetryDelays.reduce(Duration.zero, +)
        // 5m+10m+20m+1h+2h+4h+8h+12h+24h = 51h35m before the 24h delay starts repeating.
        #expect(total == .seconds(185_700))
        #expect(SchedulerSettings.defaultRetryDelays.last == .seconds(86_400))
    }
}

@Suite struct PoolsTests {
    @Test func parsesPoolsAndWildcard() throws {
        let p = try Pools("default=127.0.0.2/out1.example, 127.0.0.3/out2.example;bulk=*/m.example")
        #expect(p.byName["default"] == [SourceIP(address: "127.0.0.2", helo: "out1.example"),
                                        SourceIP(address: "127.0.0.3", helo: "out2.example")])
        #expect(p.byName["bulk"] == [SourceIP(address: "", helo: "m.example")])
    }

    @Test(arguments: ["", "default", "default=", "default=127.0.0.2", "x=300.1.1.1/h",
                      "=1.2.3.4/h"])
    func rejectsMalformedPools(_ text: String) {
        #expect(throws: ConfigError.self) { try Pools(text) }
    }
}

@Suite struct RequestedWaitTests {
    let policy = RetryPolicy(delays: [.seconds(60), .seconds(600)])

    @Test(arguments: [
        ("4.7.0 Try again in 10 minutes", 600),
        ("421 Too many connections, please retry after 300 seconds", 300),
        ("450 greylisted, try again later in 2 hours", 7200),
        ("451 Temporary failure, try again later", nil),
        ("4.2.0 mailbox busy, retry in 5 days", nil),
        ("try again in 99 hours", 86_400),
    ] as [(String, Int?)])
    func repliesThatNameWhenToComeBack(reply: String, seconds: Int?) {
        #expect(RetryPolicy.requestedWait(in: reply) == seconds.map { .seconds($0) })
    }

    @Test func aRequestedWaitLongerThanThePolicysIsHonoured() {
        #expect(policy.decide(outcome: .deferred, attempt: 1, nowMs: 0, expiresMs: 10_000_000,
                              reply: "4.7.0 try again in 10 minutes") == .retry(atMs: 600_000))
        // Never sooner than the policy's own delay.
        #expect(policy.decide(outcome: .deferred, attempt: 1, nowMs: 0, expiresMs: 10_000_000,
                              reply: "try again in 5 seconds") == .retry(atMs: 60_000))
    }
}
