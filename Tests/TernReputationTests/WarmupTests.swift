// The warm-up over a simulated month: days come from a fake calendar, counts from a script.

import Foundation
import Testing
@testable import TernReputation

@Suite struct WarmupTests {
    @Test func theStandardScheduleGrowsFromAFewDozenToNoCap() {
        let caps = WarmupSchedule.standard.caps
        #expect(caps.count == 30 && caps.first == 50)
        #expect(zip(caps, caps.dropFirst()).allSatisfy { $0 < $1 && $1 <= $0 * 2 })
        #expect(WarmupSchedule.standard.cap(29) == 300_000)
        #expect(WarmupSchedule.standard.cap(30) == nil)
    }

    @Test func decisionsFollowTheRates() {
        let p = WarmupPolicy()
        // The sample needed is the smaller of TERN_WARMUP_MIN_SAMPLE and half the cap.
        #expect(p.decide(step: 3, counts: DayCounts(delivered: 99)).1 == .hold)
        #expect(p.decide(step: 0, counts: DayCounts(delivered: 25)).0 == 1)
        #expect(p.decide(step: 0, counts: DayCounts(delivered: 24)).1 == .hold)
        #expect(p.decide(step: 3, counts: DayCounts(delivered: 390, bounced: 10)).1 == .hold)
        #expect(p.decide(step: 3, counts: DayCounts(delivered: 380, bounced: 20)).0 == 2)
        #expect(p.decide(step: 3, counts: DayCounts(delivered: 200, deferred: 100)).1
                == .stepBack)
        #expect(p.decide(step: 3, counts: DayCounts(delivered: 300, complained: 1)).1 == .stepBack)
        #expect(p.decide(step: 3, counts: DayCounts(delivered: 200)).0 == 4)
        #expect(p.decide(step: 3, counts: DayCounts(delivered: 400)).0 == 5)
        #expect(p.decide(step: 0, counts: DayCounts(delivered: 500, bounced: 100)).0 == 0)
    }

    @Test func aSimulatedMonth() {
        let policy = WarmupPolicy()
        let start = WarmupPlan.day(text: "2026-11-01")!
        var plan = WarmupPlan(startDay: start)
        var decisions: [WarmupPlan.Record] = []
        var caps: [Int?] = []

        // What the IP sent each day, as a share of its cap; bad days on purpose.
        func counts(day: Int, cap: Int?) -> DayCounts {
            let sent = cap ?? 1_000_000
            switch day {
            case 1: return DayCounts(delivered: sent * 3 / 5 - 2, bounced: 2)  // fine, not full
            case 2: return DayCounts(delivered: 30)                              // too few
            case 3: return DayCounts(delivered: sent * 97 / 100, bounced: sent * 3 / 100)
            case 4: return DayCounts(delivered: sent * 92 / 100, bounced: sent * 8 / 100)
            case 5: return DayCounts(delivered: sent, complained: 1)
            default: return DayCounts(delivered: sent)                           // clean, full
            }
        }

        for day in 0..<32 {
            let today = start + day
            let cap = policy.schedule.cap(plan.steps["*"]!)
            let yesterday = counts(day: day - 1, cap: cap)
            var byProvider = ["*": yesterday]
            if day >= 10 { byProvider["gmail"] = DayCounts(delivered: 10) }
            decisions += plan.roll(to: today, policy: policy, counts: day == 0 ? [:] : byProvider)
            caps.append(plan.caps(policy)["*"] ?? nil)
            // Asking again the same day changes nothing.
            #expect(plan.roll(to: today, policy: policy, counts: byProvider).isEmpty)
        }

        let star = decisions.filter { $0.provider == "*" }
        #expect(star.count == 31)
        #expect(star.prefix(7).map(\.decision) == [.accelerate, .advance, .hold, .hold,
                                                    .stepBack, .stepBack, .accelerate])
        #expect(star[2].reason == "30 attempts, fewer than the 100 needed")
        #expect(star[3].reason.contains("in the warning band"))
        #expect(star[4].reason.contains("past a step-back limit"))
        #expect(caps.prefix(8) == [50, 200, 400, 400, 400, 200, 100, 400])
        #expect(star.allSatisfy { !$0.reason.isEmpty && $0.day.hasPrefix("2026-") })
        // Clean full days from the seventh on: no cap well before the month is out.
        #expect(caps.last! == nil)
        // A provider seen later starts from where `*` stood and is judged on its own
        // numbers: ten messages a day are too few to move it.
        let gmail = decisions.filter { $0.provider == "gmail" }
        #expect(gmail.first?.day == "2026-11-11")
        #expect(gmail.allSatisfy { $0.decision == .hold })
        #expect(plan.steps["gmail"] == gmail.first?.fromStep)
    }

    @Test func aPausedPlanKeepsItsStepsAndResumesOnTheNextDaysNumbers() {
        let policy = WarmupPolicy()
        let start = WarmupPlan.day(text: "2026-11-01")!
        var plan = WarmupPlan(startDay: start)
        plan.steps = ["*": 3, "gmail": 2]
        let full = ["*": DayCounts(delivered: 400), "gmail": DayCounts(delivered: 200)]
        let paused = plan.roll(to: start + 1, policy: policy, counts: full, paused: true)
        #expect(paused.map(\.decision) == [.paused, .paused])
        #expect(paused.allSatisfy { $0.fromStep == $0.toStep && $0.reason.contains("paused") })
        #expect(plan.steps == ["*": 3, "gmail": 2] && plan.lastDay == start + 1)
        #expect(plan.caps(policy) == ["*": 400, "gmail": 200])
        // Resumed: the next day is judged on its own numbers again.
        let resumed = plan.roll(to: start + 2, policy: policy, counts: full)
        #expect(resumed.map(\.decision) == [.accelerate, .accelerate])
        #expect(plan.steps == ["*": 5, "gmail": 4])
    }

    @Test func daysAreUTCCalendarDays() {
        #expect(WarmupPlan.day(text: "1970-01-02") == 1)
        #expect(WarmupPlan.dayText(WarmupPlan.day(text: "2026-12-04")!) == "2026-12-04")
        #expect(WarmupPlan.day(ms: 86_400_000 * 3 + 5) == 3)
        #expect(WarmupPlan.day(text: "2026-12") == nil)
    }
}
