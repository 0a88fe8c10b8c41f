// One sending IP's standing: the blocklists that list it now, whether it is out of its pools
// for that, the clean rounds counted towards its return, and its identity check. Pure logic:
// the daemon feeds it each round's answers and stores what it returns.
//
// An IP leaves its pools on the first list that lists it and comes back only after
// TERN_DNSBL_CLEAN_CHECKS consecutive rounds in which no list lists it: one clean answer
// from a list that flaps must not put it straight back. A list that did not answer (unknown)
// or answered with an error keeps its previous verdict.

import Foundation
import TernMail

public struct IPStanding: Sendable, Equatable {
    /// A list's current listing of the IP.
    public struct Listing: Sendable, Equatable, Codable {
        public var code: String
        public var meaning: String
        public var sinceMs: Int64
        public var checkedMs: Int64

        enum CodingKeys: String, CodingKey {
            case code, meaning, sinceMs = "since_ms", checkedMs = "checked_ms"
        }
    }

    /// What a round changed, for the events stream.
    public enum Change: Sendable, Equatable {
        case listed
        case delisted
    }

    public var listings: [String: Listing] = [:]
    /// Out of its pools because of blocklists.
    public var listed = false
    public var listedSinceMs: Int64 = 0
    public var cleanChecks = 0
    public var checkedMs: Int64 = 0
    /// nil before the first identity check, "ok", or why it failed.
    public var identity: String?

    public init() {}

    public var identityFailed: Bool { identity != nil && identity != "ok" }

    /// May the scheduler send from this IP?
    public var usable: Bool { !listed && !identityFailed }

    /// The reason an operator sees when the IP is not usable.
    public var reason: String {
        if listed {
            let names = listings.keys.sorted()
            return names.isEmpty
                ? "no longer listed; \(cleanChecks) clean round(s) counted towards its return"
                : "listed on " + names.map { "\($0) (\(listings[$0]!.code))" }
                    .joined(separator: ", ")
        }
        if identityFailed { return identity ?? "" }
        return ""
    }

    public var status: String {
        listed ? "listed" : identityFailed ? "identity" : identity == nil && checkedMs == 0
            ? "unchecked" : "active"
    }

    /// Applies one round of answers (list name -> answer).
    public mutating func apply(_ answers: [String: BlocklistAnswer], nowMs: Int64,
                               cleanChecksNeeded: Int) -> Change? {
        var newListing = false
        for (name, answer) in answers {
            switch answer {
            case .listed(let code, let meaning):
                if var l = listings[name] {
                    l.code = code
                    l.meaning = meaning
                    l.checkedMs = nowMs
                    listings[name] = l
                } else {
                    listings[name] = Listing(code: code, meaning: meaning, sinceMs: nowMs,
                                             checkedMs: nowMs)
                    newListing = true
                }
            case .clean:
                listings[name] = nil
            case .unknown, .error:
                break
            }
        }
        checkedMs = nowMs
        if !listed {
            guard !listings.isEmpty else { return nil }
            listed = true
            listedSinceMs = nowMs
            cleanChecks = 0
            return .listed
        }
        if newListing || !listings.isEmpty {
            cleanChecks = 0
            return nil
        }
        cleanChecks += 1
        guard cleanChecks >= cleanChecksNeeded else { return nil }
        listed = false
        cleanChecks = 0
        listedSinceMs = nowMs
        return .delisted
    }
}

/// Which of a pool's IPs the scheduler may use, from their standings.
public enum PoolSelection {
    /// The active IPs in configured order, and whether the pool had none left (in which case
    /// `behaviour` decided: nothing, or the IP on the fewest lists). IPs without a fixed
    /// address cannot be checked and always count as usable.
    public static func active(_ pool: [SourceIP], standings: [String: IPStanding],
                              behaviour: AllListedBehaviour) -> (ips: [SourceIP], exhausted: Bool)
    {
        let usable = pool.filter { $0.address.isEmpty || standings[$0.address]?.usable ?? true }
        if !usable.isEmpty { return (usable, false) }
        switch behaviour {
        case .hold:
            return ([], true)
        case .leastListed:
            func rank(_ ip: SourceIP) -> (Int, Int) {
                let s = standings[ip.address] ?? IPStanding()
                return (s.identityFailed ? 1 : 0, s.listings.count)
            }
            let best = pool.min { rank($0) < rank($1) }
            return (best.map { [$0] } ?? [], true)
        }
    }
}
