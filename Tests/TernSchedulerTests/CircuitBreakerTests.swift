import Testing
import TernCore
import TernMail
@testable import TernScheduler

@Suite struct CircuitBreakerTests {
    var settings: BreakerSettings {
        var s = BreakerSettings()
        s.minimumSample = 100
        s.trialSize = 10
        return s
    }

    @Test func aFewBouncesDoNotTripIt() {
        var breaker = CircuitBreaker()
        for _ in 0..<3 { breaker.record(.bounced, nowMs: 0, settings: settings) }
        #expect(breaker.state == .closed)
        let mayGo = breaker.mayRelease(nowMs: 0, settings: settings)
        #expect(mayGo)
    }

    @Test func opensOverTheBounceThresholdThenTriesThenCloses() {
        var breaker = CircuitBreaker()
        for _ in 0..<90 { breaker.record(.delivered, nowMs: 0, settings: settings) }
        var changed: CircuitBreaker.State?
        for _ in 0..<10 { changed = breaker.record(.bounced, nowMs: 1_000, settings: settings) }
        #expect(changed == .open)
        #expect(breaker.reason == "bounce rate 10.00% over 5.00% (10 of 100)")
        let duringCoolDown = breaker.mayRelease(nowMs: 1_000 + 1_799_999, settings: settings)
        #expect(!duringCoolDown)
        // After the cool-down, exactly the trial goes out.
        let after = 1_000 + settings.coolDown.milliseconds
        let released = (0..<50).filter { _ in breaker.mayRelease(nowMs: after, settings: settings) }
        #expect(released.count == 10)
        #expect(breaker.state == .halfOpen)
        for i in 0..<10 {
            let state = breaker.record(.delivered, nowMs: after + 1, settings: settings)
            #expect(state == (i == 9 ? .closed : nil))
        }
        #expect(breaker.state == .closed)
        let afterClosing = breaker.mayRelease(nowMs: after + 2, settings: settings)
        #expect(afterClosing)
    }

    @Test func aBadTrialReopens() {
        var breaker = CircuitBreaker()
        for _ in 0..<100 { breaker.record(.bounced, nowMs: 0, settings: settings) }
        #expect(breaker.state == .open)
        let after = settings.coolDown.milliseconds
        let trialGoes = breaker.mayRelease(nowMs: after, settings: settings)
        #expect(trialGoes)
        let reopened = breaker.record(.bounced, nowMs: after, settings: settings)
        #expect(reopened == .open)
        #expect(breaker.reason.hasPrefix("trial failed: bounce rate"))
        let afterReopening = breaker.mayRelease(nowMs: after + 1, settings: settings)
        #expect(!afterReopening)
    }

    @Test func complaintsOpenItToo() {
        var breaker = CircuitBreaker()
        for _ in 0..<1_000 { breaker.record(.delivered, nowMs: 0, settings: settings) }
        for _ in 0..<3 { breaker.record(.complained, nowMs: 0, settings: settings) }
        #expect(breaker.state == .closed)       // 0.3% is the limit, not over it
        breaker.record(.complained, nowMs: 0, settings: settings)
        #expect(breaker.state == .open)
        #expect(breaker.reason.hasPrefix("complaint rate 0.40% over 0.30%"))
    }

    @Test func oldMinutesLeaveTheWindow() {
        var breaker = CircuitBreaker()
        for _ in 0..<99 { breaker.record(.bounced, nowMs: 0, settings: settings) }
        // An hour later the bounces are out of the window; the new sample is clean.
        let later = settings.window.milliseconds + 60_000
        for _ in 0..<100 { breaker.record(.delivered, nowMs: later, settings: settings) }
        #expect(breaker.state == .closed)
    }
}
