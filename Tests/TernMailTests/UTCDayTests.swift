// UTC days as the warm-up keys name them: text both ways, and only real dates accepted.

import Testing
@testable import TernMail

@Suite struct UTCDayTests {
    @Test func daysRoundTripAndTurnAtMidnightUTC() {
        #expect(UTCDay.day(text: "1970-01-02") == 1)
        #expect(UTCDay.text(day: UTCDay.day(text: "2026-12-04")!) == "2026-12-04")
        #expect(UTCDay.text(ms: 86_400_000 - 1) == "1970-01-01")
        #expect(UTCDay.text(ms: 86_400_000) == "1970-01-02")
        #expect(UTCDay.text(day: UTCDay.day(text: "2024-02-29")!) == "2024-02-29")
        #expect(UTCDay.text(day: UTCDay.day(text: "2100-03-01")!) == "2100-03-01")
    }

    @Test(arguments: ["2026-02-30", "2026-13-01", "2026-12", "26-12-01", "2026-12-1x", "",
                      "tomorrow", "2026-12-01-01"])
    func onlyRealDatesAreDays(_ text: String) {
        #expect(UTCDay.day(text: text) == nil)
    }
}
