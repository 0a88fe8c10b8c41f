// The RFC 5322 §3.3 date-time of Date headers, always written in UTC ("+0000").
//
// Built by integer arithmetic on the days since the epoch (CivilDate, as the records'
// timestamps are) rather than with DateFormatter, whose output depends on locale settings,
// or with Calendar, which cost the API several µs a message; names of days and months are
// fixed English as §3.3 requires.

import Foundation

public enum MailDate {
    private static let weekdays = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
                                 "Oct", "Nov", "Dec"]

    /// For example "Tue, 04 Mar 2025 09:05:07 +0000".
    public static func string(from date: Date) -> String {
        let seconds = Int64(date.timeIntervalSince1970.rounded(.down))
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let day = CivilDate(daysSinceEpoch: days)
        let second = Int(seconds - days * 86_400)
        let weekday = Int((days % 7 + 11) % 7)   // 1970-01-01 was a Thursday
        return weekdays[weekday] + ", " + pad(day.day) + " " + months[day.month - 1]
            + " \(day.year) " + pad(second / 3600) + ":" + pad(second / 60 % 60) + ":"
            + pad(second % 60) + " +0000"
    }

    private static func pad(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
}
