// The fixed taxonomy every report is sorted into (docs/bounces.md), and the rules that map
// an RFC 3463 status and the remote server's words to a reason.
//
// Codes come first where RFC 3463 (and its registry additions) make them precise; many
// servers send a generic code (5.0.0, 5.7.1, 5.5.0) or a wrong one (5.4.1 for an unknown
// user), so for those the reply's text decides, and the code's class is the last resort.

/// Why a report was sent, one value of a fixed list. Raw values are the stored names.
public enum BounceReason: String, Sendable, CaseIterable {
    case userUnknown = "user-unknown"
    case mailboxDisabled = "mailbox-disabled"
    case mailboxFull = "mailbox-full"
    case domainNotFound = "domain-not-found"
    case blocked
    case spamContent = "spam-content"
    case authentication
    case policy
    case rateLimited = "rate-limited"
    case messageTooBig = "message-too-big"
    case expired
    case networkError = "network-error"
    case securityTLS = "security-tls"
    case systemError = "system-error"
    case vacation
    case challenge
    case complaint
    case fraud
    case notSpam = "not-spam"
    case authFailure = "auth-failure"
    case virus
    case delivered
    case other

    /// Reasons that say the address itself will not take mail: a permanent failure for one
    /// of these is a hard bounce. Everything else (a full mailbox, a block on our IP, a
    /// message judged as spam) concerns this message or this sender and may pass.
    public var isAboutAddress: Bool {
        switch self {
        case .userUnknown, .mailboxDisabled, .domainNotFound, .other: return true
        default: return false
        }
    }
}

/// Maps a status code and a reply text to a `BounceReason`.
public enum ReasonRules {
    public static func reason(status: EnhancedStatus?, text: String) -> BounceReason {
        let lowered = text.lowercased()
        if let status, let precise = preciseCode(status) { return precise }
        if let fromText = textRule(lowered) { return fromText }
        if let status { return classFallback(status) }
        return .other
    }

    /// Codes whose meaning is specific enough to beat the text (RFC 3463 §3, and the
    /// later entries of the IANA enhanced status code registry).
    static func preciseCode(_ s: EnhancedStatus) -> BounceReason? {
        switch (s.subject, s.detail) {
        case (1, 1), (1, 3), (1, 6): return .userUnknown
        // x.1.10 is RFC 7505's null MX, but Exchange Online sends 5.1.10 for unknown users:
        // the text tells them apart.
        case (1, 2): return .domainNotFound
        case (2, 1), (7, 13): return .mailboxDisabled
        case (2, 2): return .mailboxFull
        case (2, 3), (3, 4), (7, 16): return .messageTooBig
        case (4, 7): return .expired
        case (4, 5), (7, 28): return .rateLimited
        case (7, 4), (7, 5), (7, 6), (7, 7), (7, 10), (7, 11), (7, 30): return .securityTLS
        case (7, 20), (7, 21), (7, 22), (7, 23), (7, 24), (7, 26), (7, 29): return .authentication
        case (7, 25): return .blocked
        case (7, 17), (7, 18), (7, 19): return .userUnknown
        default: return nil
        }
    }

    /// What a code says when neither a precise code nor the text decided.
    static func classFallback(_ s: EnhancedStatus) -> BounceReason {
        switch s.subject {
        case 1: return .userUnknown
        case 2: return s.statusClass == 4 ? .mailboxFull : .other
        case 3: return .systemError
        case 4: return .networkError
        case 7: return .policy
        default: return .other
        }
    }

    /// Phrases, checked in order: earlier rules win where phrases overlap ("domain does not
    /// exist" is a domain, not a user; "spamhaus" is a block list, not spam content).
    static let phrases: [(BounceReason, [String])] = [
        (.mailboxFull, ["mailbox full", "mailbox is full", "over quota", "quota exceeded",
                        "exceeded storage", "exceeds quota", "mailbox size limit",
                        "inbox is full", "out of storage", "insufficient storage",
                        "storage quota", "full mailbox", "overquota", "user is over"]),
        (.domainNotFound, ["host or domain name not found", "domain not found",
                           "no such domain", "unrouteable address", "domain does not exist",
                           "domain name not found", "nxdomain", "unknown domain",
                           "null mx", "no mx record", "name service error",
                           "dns error: domain", "domain couldn't be found",
                           "domain could not be found", "no valid mx"]),
        (.mailboxDisabled, ["account disabled", "account has been disabled", "mailbox disabled",
                            "is disabled", "inactive", "deactivated", "suspended",
                            "no longer active", "account is locked", "expired account",
                            "mailbox is not active", "has been terminated"]),
        (.userUnknown, ["user unknown", "unknown user", "no such user", "does not exist",
                        "doesn't exist", "recipient unknown", "unknown recipient",
                        "no such recipient", "no such mailbox", "mailbox not found",
                        "mailbox unavailable", "invalid recipient", "invalid mailbox",
                        "not a valid mailbox", "recipient address rejected: access denied",
                        "recipnotfound", "user not found", "address not found",
                        "unknown local part", "no mailbox here", "not listed in",
                        "address couldn't be found", "address could not be found",
                        "account that you tried to reach", "addressee unknown",
                        "is not a valid", "no longer available", "bad destination mailbox",
                        "does not like recipient", "recipient not found",
                        "unknown or illegal alias", "no account", "recipientnotfound",
                        "not found by smtp address lookup", "doesn't have a"]),
        (.messageTooBig, ["too large", "too big", "message size exceeds", "size limit",
                          "exceeds the maximum", "message length exceeds",
                          "exceeds size limit", "maximum message size"]),
        (.blocked, ["spamhaus", "blocklist", "blacklist", "block list", "black list",
                    "dnsbl", " rbl", "listed at", "listed in", "listed on", "spamcop",
                    "barracuda"]),
        (.authentication, ["dmarc", "spf", "dkim", "unauthenticated",
                           "not authenticated", "authentication failed", "sender policy"]),
        (.rateLimited, ["rate limit", "rate-limit", "too many", "throttl", "unusual rate",
                        "temporarily deferred", "exceeded the rate",
                        "receiving mail at a rate", "slow down", "sending rate"]),
        (.spamContent, ["spam", "junk", "phish", "unsolicited", "content", "malware",
                        "virus", "suspicious", "bulk mail"]),
        (.blocked, ["blocked", "reputation", "banned", "your ip", "ip address",
                    "sending ip", "not accepted from", "refused to accept"]),
        (.securityTLS, ["tls", "ssl", "certificate", "encryption", "encrypted"]),
        (.expired, ["expired", "retry timeout", "too long in queue", "retry time",
                    "message timeout", "could not be delivered within", "giving up",
                    "timeout exceeded"]),
        (.networkError, ["connection refused", "connection timed out", "timed out",
                         "connection reset", "unreachable", "no route to host",
                         "lost connection", "connection closed", "network error",
                         "could not connect", "connect to"]),
        (.policy, ["policy", "relay", "not allowed", "not permitted", "access denied",
                   "administrative", "prohibited", "denied", "not authorized"]),
        (.systemError, ["system error", "internal error", "local error", "resources",
                        "temporary failure", "temporarily unavailable", "server error",
                        "system not accepting", "system problem"]),
    ]

    static func textRule(_ lowered: String) -> BounceReason? {
        for (reason, list) in phrases where list.contains(where: { lowered.contains($0) }) {
            return reason
        }
        return nil
    }
}
