// How long a message lives, read by both the API (which sets a backstop TTL at acceptance)
// and the scheduler (which expires undelivered messages): defined once so the two agree.

import TernCore

public struct MessageLifetime: Sendable, Equatable {
    /// TERN_MAX_AGE: a message not delivered this long after acceptance expires. RFC 5321
    /// §4.5.4.1 asks for at least 4-5 days before giving up; the default is 5 days.
    public let maxAge: Duration
    /// TERN_RECORD_TTL: how long a message's record and history stay after its final event.
    public let recordTTL: Duration

    public init(_ env: Environment) throws {
        maxAge = try env.duration("TERN_MAX_AGE", default: .seconds(5 * 86400))
        recordTTL = try env.duration("TERN_RECORD_TTL", default: .seconds(30 * 86400))
        guard maxAge > .zero else { throw ConfigError("TERN_MAX_AGE", "must be positive") }
    }
}
