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
