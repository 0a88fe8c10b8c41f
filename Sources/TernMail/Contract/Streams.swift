// The contract between Tern's daemons: every Redis stream, key and field name lives here.
//
// Daemons never call each other; they share only what this file names. Version 2 of the
// contract (2: `inbound` carries classified reports of every kind, not only failed DSN
// recipients): a change to a field's meaning bumps `Contract.version`, which each daemon logs
// at start so that mixed versions in one deployment are visible.

public enum Contract {
    public static let version = 2
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

    /// The reputation monitor's own group on `results` and `inbound`: it reads every entry
    /// too, so these two streams are trimmed only below what every group has acknowledged
    /// (`RedisClient.trimAcknowledged`), never entry by entry.
    public static let reputationGroup = "reputation"
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
    /// Sorted set: message ids of one group that have come due, scored by due time less
    /// their engagement lead, so the most engaged go first (the release script moves them
    /// here from `groupQueue` as they come due).
    public func groupDue(_ group: String) -> String { prefix + "qd:" + group }
    /// Sorted set: group names scored by the due time of their earliest message, so the
    /// scheduler finds due work without scanning groups.
    public var dueGroups: String { prefix + "due" }
    /// Sorted set: ids of messages the scheduler filed, scored by their deadline
    /// (`expires_ms`). The scheduler sweeps it for messages held past their deadline and
    /// drops an id when its message reaches a final state.
    public var deadlines: String { prefix + "deadlines" }
    /// Hash: final state -> how many times a message entered it, counted in the transaction
    /// that sets the state (an asynchronous bounce after delivery counts in both), for
    /// `tern_messages_final_total`.
    public var finalCounts: String { prefix + "final-counts" }
    /// Hash: message id -> why it was held (`held` field, "" when not held), for messages the
    /// scheduler has set `expired` but not yet given their event; emptied as they get it.
    public var expiring: String { prefix + "expiring" }
    /// String: the time (ms) before which a group may not release its next message.
    public func groupPace(_ group: String) -> String { prefix + "pace:" + group }
    /// Sorted set: the connection leases senders hold on one source IP and provider
    /// (`{ip}|{provider}`, or `{ip}|mx:{host}` without a known provider), lease ids scored by
    /// the time (ms, Redis clock) they expire unless renewed.
    public func groupLeases(_ group: String) -> String { prefix + "lease:" + group }
    /// String, set for 2 s when a sender was refused a lease of the scope: senders holding
    /// idle sessions of it close one so the waiting sender gets a turn.
    public func leaseWanted(_ group: String) -> String { prefix + "lease-wanted:" + group }
    /// Set: the lease scopes one sender instance has taken leases on, so that the instance,
    /// started again after a crash, frees the leases of its previous run at once.
    public func leaseScopes(_ instance: String) -> String { prefix + "lease-scopes:" + instance }
    /// String: the API's record of one Idempotency-Key of one API key (`scope`): a claim
    /// while the first request runs (60 s), then its answer, kept for a day.
    public func idempotency(_ scope: String, _ key: String) -> String {
        prefix + "idem:" + scope + ":" + key
    }
    /// Hash: counters a daemon keeps for operators (`bounce.forged`, `dnsbl.error`, ...).
    public var counters: String { prefix + "counters" }
    /// Hash: `<ip>|<provider>` → the JSON of that IP's adaptive rate towards that provider
    /// (rate, state, hold time, reason for the last change), written by the scheduler.
    public var throttles: String { prefix + "throttles" }
    /// String: the owner of the scheduler's leader lease (`LeaderLease`), expiring unless
    /// renewed; only the holder schedules.
    public var schedulerLeader: String { prefix + "leader:scheduler" }
    /// Hash: recipient domain → provider name, learned from the MX host that answered, for
    /// domains whose own name does not tell their provider.
    public var domainProviders: String { prefix + "providers:domain" }
    /// Hash: JSON of each organisation's circuit breaker (state, window counts, reason).
    public var breakers: String { prefix + "breakers" }
    /// Hash: organisation → trial messages it may still send, present only while its breaker
    /// is open (0) or half-open (counted down by the release script).
    public var heldOrgs: String { prefix + "held" }
    /// Hash: organisation → "hourly,daily" release caps (0: none), written by the leading
    /// scheduler from TERN_ORG_CAPS and read by its release script.
    public var orgCaps: String { prefix + "orgcaps" }
    /// String: messages an organisation released in one hour or UTC day; the release script
    /// appends `<org>:h:<yyyy-mm-ddThh>` or `<org>:d:<yyyy-mm-dd>` to this prefix.
    public var orgSentPrefix: String { prefix + "orgsent:" }
    /// Hash: an organisation's recorded engagement, recipient address (`EmailAddress.listKey`)
    /// -> score 0-100, set by operators through the API; read by the release script for a
    /// message without one, the first time it comes due.
    public func engagement(_ org: String) -> String { prefix + "engagement:" + org }
    /// Set: the recipient addresses (`EmailAddress.listKey`; before it, the address as given,
    /// lowercased) an organisation must not mail again.
    public func suppressions(_ org: String) -> String { prefix + "supp:" + org }
    /// String: marks one report (message id, kind, recipient) as applied, so a report that
    /// arrives twice counts once. Lives as long as the message's record.
    public func inboundSeen(id: String, kind: String, recipient: String) -> String {
        prefix + "seen:" + id + ":" + kind + ":" + recipient.lowercased()
    }

    // The reputation monitor's keys. It alone writes them; the scheduler reads the first.

    /// String: the pool's IPs that may be used now (`ActiveIPs`), written by the reputation
    /// monitor; missing means every configured IP, "" means none (the pool holds its mail).
    public func poolActive(_ pool: String) -> String { prefix + "pool:" + pool + ":active" }
    /// Hash: one IP's standing (`IPField`): whether it is active and why not, since when,
    /// the clean checks counted towards its return, its identity (FCrDNS) check.
    public func ipState(_ ip: String) -> String { prefix + "ip:" + ip }
    /// Hash: the blocklists that list an IP now: list name -> JSON {code, meaning,
    /// since_ms, checked_ms}. A field goes when its list answers clean.
    public func ipListings(_ ip: String) -> String { prefix + "dnsbl:" + ip }
    /// Hash: an IP's warm-up plan: `start_day` (yyyy-mm-dd, UTC), `last_day` decided,
    /// `steps`, JSON provider -> index into the schedule (`*` for providers not seen), and
    /// `state`, `active` or `paused` (`WarmupPlanField`). The API writes `start_day` and
    /// `state` (and deletes `steps` and `last_day` to restart); the monitor writes the rest.
    public func warmupPlan(_ ip: String) -> String { prefix + "warmup:" + ip }
    /// Set: IPs put on a warm-up plan through the API, besides those of TERN_WARMUP.
    public var warmupIPs: String { prefix + "warmup:ips" }
    /// Hash: an IP's daily caps for one UTC day (yyyy-mm-dd): provider profile name ->
    /// messages, `*` for every provider without an entry; "none" for no cap. Expires three
    /// days after it is written. An IP with no caps hash is not in warm-up.
    public func warmupCaps(_ ip: String, day: String) -> String {
        prefix + "warmup:" + ip + ":caps:" + day
    }
    /// Hash: messages an IP released on one UTC day (yyyy-mm-dd) under each cap of
    /// `warmupCaps` (the same field names), counted by the scheduler's release script.
    public func warmupSent(_ ip: String, day: String) -> String {
        prefix + "warmup:" + ip + ":sent:" + day
    }
    /// List of JSON warm-up decisions (day, provider, decision, reason, sample, rates, cap),
    /// newest last, capped at 1000.
    public func warmupDecisions(_ ip: String) -> String { prefix + "warmup:" + ip + ":log" }
    /// Hash: counts of one scope in one time bucket (`StatsField`). `granularity` is `m`
    /// (minute), `h` (hour) or `d` (UTC day); `scope` is `ip:<ip>`, `prov:<provider>` or
    /// `ipprov:<ip>|<provider>`; `bucket` the bucket's start in ms.
    public func stats(_ granularity: String, _ scope: String, _ bucket: Int64) -> String {
        prefix + "stats:" + granularity + ":" + scope + ":" + String(bucket)
    }
    /// Set: the providers an IP sent to on one UTC day (`bucket`, ms), for the warm-up.
    public func statsProviders(_ ip: String, _ bucket: Int64) -> String {
        prefix + "stats:providers:" + ip + ":" + String(bucket)
    }
    /// Sorted set: reply texts of one scope in one bucket, scored by how often they came.
    public func statsReplies(_ granularity: String, _ scope: String, _ bucket: Int64) -> String {
        prefix + "replies:" + granularity + ":" + scope + ":" + String(bucket)
    }
}

/// Fields of an IP's standing hash (`Keys.ipState`).
public enum IPField {
    /// `active`, `listed`, `identity` (failed its FCrDNS/EHLO check), `unchecked`.
    public static let status = "status"
    public static let reason = "reason"             // why it is not active, for operators
    public static let since = "since_ms"            // when the status began
    public static let cleanChecks = "clean_checks"  // clean rounds counted while listed
    public static let checked = "checked_ms"        // last blocklist round
    public static let identity = "identity"         // "ok" or why the FCrDNS check failed
    public static let identityChecked = "identity_checked_ms"
    public static let pools = "pools"               // the pools it belongs to, ","-joined
    /// The last round's error answers (`list: answer meaning`, "; "-joined), "" for none:
    /// a list refusing our resolver, a rate limit, an undocumented answer.
    public static let errors = "errors"
    /// The last round's lists that did not answer (timeout, SERVFAIL), "" for none.
    public static let unknown = "unknown"
}

/// Fields of a warm-up plan hash (`Keys.warmupPlan`).
public enum WarmupPlanField {
    public static let startDay = "start_day"
    public static let lastDay = "last_day"
    public static let steps = "steps"
    /// `active` (or missing) grows the caps day by day; `paused` keeps today's caps.
    public static let state = "state"
}

/// Fields of a statistics bucket (`Keys.stats`).
public enum StatsField {
    public static let delivered = "delivered"
    public static let deferred = "deferred"
    public static let bounced = "bounced"
    public static let complained = "complained"
    public static let all = [delivered, deferred, bounced, complained]
}

/// Events about sending IPs, appended to `events` beside message events. Their entries carry
/// `event`, `ip`, `pool` and `json` instead of a message id.
public enum IPEventKind: String, Sendable, Codable {
    case ipListed = "ip_listed"
    case ipDelisted = "ip_delisted"
}

/// Fields of the message record hash.
public enum MessageField {
    public static let id = "id"
    public static let org = "org"
    public static let pool = "pool"
    public static let from = "from"            // envelope sender as given by the client
    public static let recipient = "rcpt"
    /// The recipient's `EmailAddress.listKey`, by which the release script finds its recorded
    /// engagement (Lua cannot lowercase beyond ASCII nor convert to A-labels).
    public static let recipientKey = "rcpt_key"
    public static let domain = "domain"         // recipient domain, lowercased A-label
    /// The complete RFC 5322 message, CRLF lines, as signed; removed when the message
    /// reaches its final state (the rest of the record stays for TERN_RECORD_TTL).
    public static let body = "body"
    public static let metadata = "metadata"    // JSON object echoed in events
    public static let tags = "tags"            // JSON array of strings echoed in events
    /// When the client asked the message to go (send_at); absent for at once.
    public static let sendAtMs = "send_at_ms"
    public static let createdMs = "created_ms"
    public static let expiresMs = "expires_ms"
    public static let state = "state"          // MessageState raw value
    public static let attempts = "attempts"
    public static let lastReply = "last_reply"
    /// Attempts whose outcome was ambiguous (connection lost after the final dot), counted
    /// by the scheduler.
    public static let ambiguous = "ambiguous"
    /// The message's engagement score 0-100, from the API or the organisation's store.
    public static let engagement = "engagement"
    /// Where the score came from: `api`, `recorded` or `default` (written by the release
    /// script the first time the message comes due; absent before).
    public static let engagementSource = "engagement_source"
}

/// Where a message is in its life. Final states never change again, but for a delivered
/// message that a DSN reports bounced afterwards.
public enum MessageState: String, Sendable, Codable, CaseIterable {
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
    /// Where the attempt ended: dns, connect, greeting, ehlo, tls, mail, rcpt, data, dot.
    public static let stage = "stage"
    public static let tls = "tls"               // "" or "TLSv1.3 TLS_AES_256_GCM_SHA384"
    public static let tlsVersion = "tls_version" // "" or "TLSv1.3"
    public static let tlsCipher = "tls_cipher"  // "" or "TLS_AES_256_GCM_SHA384"
    /// "yes" when the MX host's certificate verified, "no" when not, "" in clear text.
    public static let tlsVerified = "tls_verified"
    public static let elapsedMs = "ms"
    /// The attempt's steps in ms (`DeliveryTimings`): TCP connect; greeting and EHLO; the
    /// TLS handshake; MAIL to the reply to the final dot. Connect, greeting and TLS are 0 on a
    /// session opened for an earlier message (`reused` "yes").
    public static let connectMs = "connect_ms"
    public static let greetingMs = "greeting_ms"
    public static let tlsMs = "tls_ms"
    public static let dataMs = "data_ms"
    public static let reused = "reused"
    // inbound: one classified report about one recipient (`ReportRecord`, docs/bounces.md)
    public static let kind = "kind"             // bounce, delay, complaint, feedback, ...
    public static let severity = "severity"     // hard, soft, none
    public static let reason = "reason"         // one of `BounceReason`
    public static let action = "action"         // RFC 3464 Action: failed, delayed, ...
    public static let recipient = "rcpt"        // the recipient the report is about
    public static let status = "status"         // RFC 3463 status from the report
    public static let diagnostic = "diagnostic" // the remote server's reply
    public static let reporter = "reporter"     // reporting MTA or feedback agent
    public static let remoteMTA = "remote_mta"
    public static let feedbackType = "feedback_type"
    public static let idSource = "id_source"    // verp, cfbl, message-id
    public static let format = "format"         // dsn, arf, jmrp, text, auto-reply
    public static let cfbl = "cfbl"             // pass, fail, "" (RFC 9477 feedback id)
    /// DKIM result of a feedback report (RFC 6376): pass, fail, none, temperror.
    public static let dkim = "dkim"
    public static let dkimDomain = "dkim_domain" // the d= of the signature judged
    // events
    public static let event = "event"
    public static let json = "json"             // the whole event as JSON, as posted to webhooks
    public static let pool = "pool"             // IP events: the pool of the IP
}

/// The outcome of one delivery attempt, as the sender reports it.
public enum AttemptOutcome: String, Sendable, Codable {
    /// The remote accepted the message (2xx after the final dot).
    case delivered
    /// Worth retrying: a 4xx, a connection or DNS failure, a timeout.
    case deferred
    /// Final: a 5xx, a null MX, a domain that does not exist.
    case failed
    /// The connection was lost after the final dot with no reply: the remote may hold the
    /// message (RFC 5321 §6.1). The scheduler sends it once more after
    /// TERN_AMBIGUOUS_RETRY_DELAY, or takes it as delivered (unknown).
    case ambiguous
}

/// Events a message produces, as appended to `events` and shown in its history.
public enum EventKind: String, Sendable, Codable {
    case accepted, deferred, delivered, bounced, expired, complained, suppressed, cancelled
    /// Not about one message: a provider refused a sending IP, which now waits out a pause.
    case ipPaused = "ip_paused"
    /// Not about one message: an organisation's circuit breaker opened or closed.
    case breakerOpened = "breaker_opened"
    case breakerClosed = "breaker_closed"
    /// History only, never an event: a pre-send check holds the message back for now.
    case held
}
