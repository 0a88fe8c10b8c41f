// RFC 3339 §5.6 timestamps as clients write them ("2026-12-24T09:00:00Z",
// "2026-12-24T10:00:00.250+01:00"), read without a formatter whose leniency depends on
// the platform's version.

import Foundation

public enum RFC3339 {
    /// The instant `text` names, or nil when it is not a full date-time with an offset.
    public static func parse(_ text: String) -> Date? {
        let b = Array(text.utf8)
        func number(_ from: Int, _ count: Int) -> Int? {
            guard from + count <= b.count else { return nil }
            var n = 0
            for k in from..<(from + count) {
                guard (48...57).contains(b[k]) else { return nil }
                n = n * 10 + Int(b[k] - 48)
            }
            return n
        }
        func at(_ i: Int, _ c: Character) -> Bool { i < b.count && b[i] == c.asciiValue! }
        guard let year = number(0, 4), at(4, "-"), let month = number(5, 2), at(7, "-"),
              let day = number(8, 2), at(10, "T") || at(10, "t") || at(10, " "),
              let hour = number(11, 2), at(13, ":"), let minute = number(14, 2), at(16, ":"),
              let second = number(17, 2),
              (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60,
              second < 61  // a leap second is taken as the next second
        else { return nil }
        var i = 19
        var fraction = 0.0
        if at(i, ".") {
            var scale = 0.1
            i += 1
            let start = i
            while i < b.count, (48...57).contains(b[i]) {
                fraction += Double(b[i] - 48) * scale
                scale /= 10
                i += 1
            }
            guard i > start else { return nil }
        }
        var offset = 0
        if at(i, "Z") || at(i, "z") {
            i += 1
        } else if at(i, "+") || at(i, "-") {
            guard let h = number(i + 1, 2), at(i + 3, ":"), let m = number(i + 4, 2),
                  h < 24, m < 60 else { return nil }
            offset = (h * 60 + m) * 60 * (at(i, "-") ? -1 : 1)
            i += 6
        } else {
            return nil
        }
        guard i == b.count else { return nil }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let components = DateComponents(year: year, month: month, day: day, hour: hour,
                                        minute: minute, second: 0)
        // A day the month does not have (02-30) would roll over; refuse it instead.
        guard let midnight = calendar.date(from: DateComponents(year: year, month: month,
                                                                day: day)),
              calendar.component(.day, from: midnight) == day,
              let date = calendar.date(from: components)
        else { return nil }
        return date.addingTimeInterval(Double(second - offset) + fraction)
    }
}
