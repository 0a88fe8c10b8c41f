// Engagement priority: a message's engagement score (0-100) orders the due messages of its
// group and steers it between warming and warm IPs.
//
// The score comes from the API (`engagement` in /v1/send) or, when absent, from the
// organisation's store (`engagement:<org>`, set through the API), looked up by the release
// script the first time the message comes due, and is kept on the record, so a retry has the
// priority the first attempt had. A message with neither counts as TERN_ENGAGEMENT_DEFAULT.
//
// Order: the release script moves messages that have come due from the group's queue (by
// due time) to a second sorted set (`qd:`) scored by due time less score × lead / 100, and
// takes the lowest. Among due messages the more engaged go first, but never ahead of one that
// came due more than TERN_ENGAGEMENT_LEAD earlier: a low score waits at most that long
// behind higher ones, never forever. Both sets keep every step O(log n).
//
// IPs: when a pool has IPs in warm-up and warm IPs, a message scoring at least
// TERN_ENGAGEMENT_WARMUP_THRESHOLD goes from a warming IP (a warm one when none may send
// now), and one below it from a warm IP only (it waits for one): a warming IP's daily cap
// is scarce, and what it sends builds its reputation.

import TernCore
import TernMail

/// TERN_ENGAGEMENT_*: how engagement orders and routes messages.
public struct EngagementSettings: Sendable, Equatable {
    /// TERN_ENGAGEMENT_LEAD: how much earlier than its due time a score of 100 ranks a
    /// message among due ones (default 1h); 0 keeps due order alone.
    public var lead: Duration = .seconds(3600)
    /// TERN_ENGAGEMENT_DEFAULT: the score of a message with none (default 50).
    public var defaultScore = 50
    /// TERN_ENGAGEMENT_WARMUP_THRESHOLD: the least score sent from a warming IP when the
    /// pool also has warm ones (default 70); nil (`off`) lets every IP take every message.
    public var warmupThreshold: Int? = 70

    public init() {}

    init(_ env: Environment) throws {
        lead = try env.duration("TERN_ENGAGEMENT_LEAD", default: lead)
        defaultScore = try env.int("TERN_ENGAGEMENT_DEFAULT", default: defaultScore,
                                   range: 0...100)
        let threshold = env.string("TERN_ENGAGEMENT_WARMUP_THRESHOLD", default: "70")
        if threshold == "off" {
            warmupThreshold = nil
        } else {
            warmupThreshold = try env.int("TERN_ENGAGEMENT_WARMUP_THRESHOLD", default: 70,
                                          range: 0...100)
        }
    }

    /// The lead one point of score gives, in ms (the release script's argument).
    var leadPerPointMs: Double { Double(lead.milliseconds) / 100 }

    /// A due message's rank in its group: lower goes first. The release script computes
    /// the same in Lua.
    func rank(dueMs: Int64, score: Int?) -> Double {
        Double(dueMs) - Double(score ?? defaultScore) * leadPerPointMs
    }
}

/// Which IP a released message may take, by its score (see the file's header).
struct EngagementRoute {
    /// The IP for a message at or above the threshold (or any message when not routing).
    var high: SourceIP
    /// The warm IP for a message below it; nil when none may send now.
    var low: SourceIP?
    /// When `low` is nil: the time the first warm IP may send.
    var lowRetryMs: Int64
    /// False when the pool is not mixed or routing is off: `high` takes every message.
    var routing: Bool
}

extension SchedulerDaemon {
    /// The score and its source for a message's events and history.
    func engagementDetail(_ r: Record) -> [String: any Sendable] {
        ["engagement": r.engagement ?? settings.engagement.defaultScore,
         "engagement_source": r.engagement == nil ? "default" : r.engagementSource]
    }

    /// The IPs a group's next message may take, or nil with the time the first may send.
    /// With warming and warm IPs in the pool (`rooms`: `.room` warming, `.warm` warm) and a
    /// threshold set, one pick from each class; otherwise the throttle's one pick.
    func route(_ ips: [SourceIP], pool: String, provider: ProviderProfile,
               rooms: [String: WarmupRoom], allowed: Set<String>?, nowMs: Int64)
        -> (route: EngagementRoute?, retryAtMs: Int64)
    {
        let warm = Set(rooms.filter { $0.value == .warm }.keys)
        let warming = Set(rooms.filter { !$0.value.isFull && $0.value != .warm }.keys)
        guard settings.engagement.warmupThreshold != nil, !warm.isEmpty,
              rooms.contains(where: { $0.value != .warm })
        else {
            let (ip, at) = throttles.pick(ips, pool: pool, provider: provider, nowMs: nowMs,
                                          allowed: allowed)
            return (ip.map { EngagementRoute(high: $0, low: $0, lowRetryMs: 0,
                                             routing: false) }, at)
        }
        let w = throttles.pick(ips, pool: pool, provider: provider, nowMs: nowMs,
                               allowed: warming)
        let m = throttles.pick(ips, pool: pool, provider: provider, nowMs: nowMs,
                               allowed: warm.intersection(allowed ?? warm))
        guard let high = w.ip ?? m.ip else { return (nil, min(w.retryAtMs, m.retryAtMs)) }
        return (EngagementRoute(high: high, low: m.ip, lowRetryMs: m.retryAtMs, routing: true),
                nowMs)
    }
}
