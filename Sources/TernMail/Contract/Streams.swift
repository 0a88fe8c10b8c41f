// The contract between Tern's daemons: every Redis stream, key and field name lives here.
//
// Daemons never call each other; they share only what this file names. Version 1 of the
// contract: a change to a field's meaning bumps `Contract.version`, which each daemon logs at
// start so that mixed versions in one deployment are visible.

public enum Contract {
    public static let version = 1
}

/// The five streams and their consumer groups.
public enum StreamName: String, Sendable, CaseIterable {
    /// api -> scheduler: one entry per accepted message.
    case submit
    /// scheduler -> sender: one entry per attempt that may go now.
    case ready
    /// sender -> scheduler: the outcome of one attempt.
    case results
    /// bounce-receiver -> scheduler: one classified bounce or complaint.
    case inbound
    /// scheduler -> api (webhooks): one entry per message event.
    case events

    /// The consumer group that reads the stream.
    public var group: String {
        switch self {
        case .submit, .results, .inbound: return "scheduler"
        case .ready: return "sender"
        case .events: return "webhooks"
        }
    }
}

/// Key names under a configurable prefix (`TERN_REDIS_PREFIX`, default `tern:`).
public struct Keys: Sendable {
    public let prefix: String

    public init(prefix: String = "tern:") { self.prefix = prefix }

    public func stream(_ s: StreamName) -> String { prefix + "stream:" + s.rawValue }
    /// Hash: the message record (`MessageField`). The API sets a backstop TTL of
    /// `TERN_MAX_AGE` + `TERN_RECORD_TTL` at acceptance; a final message keeps its record for
    /// `TERN_RECORD_TTL` (default 30 days) after its final event.
    public func message(_ id: String) -> String { prefix + "msg:" + id }
    /// List of JSON history entries, oldest first; same TTL as the record.
    public func history(_ id: String) -> String { prefix + "hist:" + id }
    /// List of JSON `AttemptRecord`s, oldest first; same TTL as the record.
    public func attempts(_ id: String) -> String { prefix + "att:" + id }
    /// Sorted set: message ids of one group, scored by the time (ms) they are due.
    public func groupQueue(_ group: String) -> String { prefix + "q:" + group }
    /// Sorted set: group names scored by the due time of their earliest message, so the
    /// scheduler finds due work without scanning groups.
    public var dueGroups: String { prefix + "due" }
    /// String: the time (ms) before which a group may not release its next message.
    public func groupPace(_ group: String) -> String { prefix + "pace:" + group }
    /// Sorted set: the connection leases senders hold on a group, lease ids scored by the
    /// time (ms, Redis clock) they expire unless renewed.
    public func groupLeases(_ group: String) -> String { prefix + "lease:" + group }
    /// String, set for 2 s when a sender was refused a lease of the group: senders holding
    /// idle sessions of it close one so the waiting sender gets a turn.
    public func leaseWanted(_ group: String) -> String { prefix + "lease-wanted:" + group }
    /// Hash: counters a daemon keeps for operators (`bounce.forged`, ...).
    public var counters: String { prefix + "counters" }
}

/// Fields of the message record hash.
public enum MessageField {
    public static let id = "id"
    public static let org = "org"
    public static let pool = "pool"
    public static let from = "from"            // envelope sender as given by the client
    public static let recipient = "rcpt"
    public static let domain = "domain"         // recipient domain, lowercased A-label
    public static let body = "body"            // the complete RFC 5322 message, CRLF lines
    public static let metadata = "metadata"    // JSON object echoed in events
    public static let createdMs = "created_ms"
    public static let expiresMs = "expires_ms"
    public static let state = "state"          // MessageState raw value
    public static let attempts = "attempts"
    public static let lastReply = "last_reply"
    /// Attempts whose outcome was ambiguous (connection lost after the final dot); sender.
    public static let ambiguous = "ambiguous"
}

/// Where a message is in its life. Final states never change again.
public enum MessageState: String, Sendable, Codable {
    case queued, sending, deferred, delivered, bounced, expired, suppressed, cancelled

    public var isFinal: Bool {
        switch self {
        case .delivered, .bounced, .expired, .suppressed, .cancelled: return true
        case .queued, .sending, .deferred: return false
        }
    }
}

/// Fields of stream entries. Every entry carries `id` (the message id).
public enum EntryField {
    public static let id = "id"
    // ready
    public static let attempt = "attempt"
    public static let sourceIP = "ip"
    public static let helo = "helo"
    // results
    public static let outcome = "outcome"       // AttemptOutcome raw value
    public static let code = "code"             // SMTP reply code, "0" when none was read
    public static let enhanced = "enhanced"     // RFC 3463 status, "" when none
    public static let reply = "reply"           // full reply text, lines joined by "\n"
    public static let mxHost = "mx"
    public static let mxAddress = "addr"
    /// Where the attempt ended: dns, connect, greeting, ehlo, mail, rcpt, data, dot.
    public static let stage = "stage"
    public static let tls = "tls"               // "" or "TLSv1.3 TLS_AES_256_GCM_SHA384"
    public static let elapsedMs = "ms"
    // inbound
    public static let kind = "kind"             // bounce, complaint
    public static let action = "action"         // RFC 3464 Action: failed, delayed, ...
    public static let recipient = "rcpt"        // the recipient the report is about
    public static let status = "status"         // RFC 3463 status from the report
    public static let diagnostic = "diagnostic"
    public static let reporter = "reporter"     // reporting MTA
    // events
    public static let event = "event"
    public static let json = "json"             // the whole event as JSON, as posted to webhooks
}

/// The outcome of one delivery attempt, as the sender reports it.
public enum AttemptOutcome: String, Sendable, Codable {
    /// The remote accepted the message (2xx after the final dot).
    case delivered
    /// Worth retrying: a 4xx, a connection or DNS failure, a timeout.
    case deferred
    /// Final: a 5xx, a null MX, a domain that does not exist.
    case failed
}

/// Events a message produces, as appended to `events` and shown in its history.
public enum EventKind: String, Sendable, Codable {
    case accepted, deferred, delivered, bounced, expired, complained, suppressed, cancelled
}
