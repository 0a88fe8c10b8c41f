// UTC calendar days as the warm-up keys and plans name them (yyyy-mm-dd), shared by the
// reputation monitor, the scheduler and the API so that all three agree on when a day turns.

import Foundation

public enum UTCDay {
    public static let ms: Int64 = 86_400_000

    /// Days since the epoch of a moment in ms.
    public static func day(ms: Int64) -> Int { Int(ms / Self.ms) }

    public static func text(day: Int) -> String {
        // The first ten characters of the day's midnight timestamp: digit by digit, as the
        // release step names today's counters for every message.
        String(timestamp(ms: Int64(day) * Self.ms).prefix(10))
    }

    public static func text(ms: Int64) -> String { text(day: day(ms: ms)) }

    /// The day a `yyyy-mm-dd` names, nil for anything else (or a date that does not exist).
    public static func day(text: String) -> Int? {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].count == 4, parts[1].count == 2, parts[2].count == 2,
              let y = Int(parts[0]), let m = Int(parts[1]), let d = Int(parts[2]),
              (1...12).contains(m), (1...31).contains(d)
        else { return nil }
        var c = DateComponents()
        (c.year, c.month, c.day) = (y, m, d)
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        guard let date = calendar.date(from: c),
              calendar.component(.day, from: date) == d
        else { return nil }
        return Int(date.timeIntervalSince1970 / 86_400)
    }
}
