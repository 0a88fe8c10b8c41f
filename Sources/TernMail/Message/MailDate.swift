// The RFC 5322 §3.3 date-time of Date headers, always written in UTC ("+0000").
//
// Built from calendar components rather than with DateFormatter, whose output depends on
// locale settings; names of days and months are fixed English as §3.3 requires.

import Foundation

public enum MailDate {
    private static let weekdays = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
                                 "Oct", "Nov", "Dec"]
    private static let utc: Calendar = {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar
    }()

    /// For example "Tue, 04 Mar 2025 09:05:07 +0000".
    public static func string(from date: Date) -> String {
        let c = utc.dateComponents([.year, .month, .day, .weekday, .hour, .minute, .second],
                                   from: date)
        return weekdays[c.weekday! - 1] + ", " + pad(c.day!) + " " + months[c.month! - 1]
            + " \(c.year!) " + pad(c.hour!) + ":" + pad(c.minute!) + ":" + pad(c.second!)
            + " +0000"
    }

    private static func pad(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
}
