// The JSON documents daemons leave for each other and for clients: a message's history
// entries, its attempts, and the events posted to webhooks. One shape each, defined here.

import Foundation

/// Milliseconds since the epoch as an RFC 3339 UTC timestamp with milliseconds.
public func timestamp(ms: Int64) -> String {
    // Whole seconds through the formatter, milliseconds by integer arithmetic: a Double
    // division would sometimes print one millisecond less than was stored.
    let seconds = ms >= 0 ? ms / 1000 : (ms - 999) / 1000
    let date = Date(timeIntervalSince1970: Double(seconds))
    let text = date.formatted(.iso8601.year().month().day().dateSeparator(.dash)
        .time(includingFractionalSeconds: false).timeSeparator(.colon))
    return text + "." + String(String(ms - seconds * 1000 + 1000).dropFirst()) + "Z"
}

/// One delivery attempt as the scheduler records it from a sender's result.
public struct AttemptRecord: Codable, Sendable, Equatable {
    public var at: String
    public var attempt: Int
    public var outcome: AttemptOutcome
    public var code: Int
    public var enhanced: String
    public var reply: String
    public var stage: String
    public var mx: String
    public var addr: String
    public var ip: String
    public var tls: String
    public var ms: Int
    /// The TLS session's details; absent (nil) for an attempt in clear text.
    public var tlsVersion: String?
    public var tlsCipher: String?
    public var tlsVerified: Bool?
    /// The steps' durations in ms (`EntryField.connectMs`, ...); nil from a sender that
    /// does not report them.
    public var timings: AttemptTimings?

    enum CodingKeys: String, CodingKey {
        case at, attempt, outcome, code, enhanced, reply, stage, mx, addr, ip, tls, ms
        case tlsVersion = "tls_version", tlsCipher = "tls_cipher"
        case tlsVerified = "tls_verified", timings
    }

    public init(at: String, attempt: Int, outcome: AttemptOutcome, code: Int, enhanced: String,
                reply: String, stage: String, mx: String, addr: String, ip: String, tls: String,
                ms: Int, tlsVersion: String? = nil, tlsCipher: String? = nil,
                tlsVerified: Bool? = nil) {
        self.at = at
        self.attempt = attempt
        self.outcome = outcome
        self.code = code
        self.enhanced = enhanced
        self.reply = reply
        self.stage = stage
        self.mx = mx
        self.addr = addr
        self.ip = ip
        self.tls = tls
        self.ms = ms
        self.tlsVersion = tlsVersion
        self.tlsCipher = tlsCipher
        self.tlsVerified = tlsVerified
    }

    /// Reads a `results` stream entry.
    public init?(result e: StreamEntryFields, at: String) {
        guard let outcome = e[EntryField.outcome].flatMap(AttemptOutcome.init(rawValue:)) else {
            return nil
        }
        self.init(at: at, attempt: Int(e[EntryField.attempt] ?? "") ?? 0, outcome: outcome,
                  code: Int(e[EntryField.code] ?? "") ?? 0, enhanced: e[EntryField.enhanced] ?? "",
                  reply: e[EntryField.reply] ?? "", stage: e[EntryField.stage] ?? "",
                  mx: e[EntryField.mxHost] ?? "", addr: e[EntryField.mxAddress] ?? "",
                  ip: e[EntryField.sourceIP] ?? "", tls: e[EntryField.tls] ?? "",
                  ms: Int(e[EntryField.elapsedMs] ?? "") ?? 0,
                  tlsVersion: e[EntryField.tlsVersion].flatMap { $0.isEmpty ? nil : $0 },
                  tlsCipher: e[EntryField.tlsCipher].flatMap { $0.isEmpty ? nil : $0 },
                  tlsVerified: e[EntryField.tlsVerified].flatMap {
                      $0 == "yes" ? true : $0 == "no" ? false : nil })
        timings = AttemptTimings(result: e)
    }
}

/// How long one attempt's steps took (ms), as the sender measured them.
public struct AttemptTimings: Codable, Sendable, Equatable {
    public var connectMs: Int
    public var greetingMs: Int
    public var tlsMs: Int
    public var dataMs: Int
    public var reused: Bool

    enum CodingKeys: String, CodingKey {
        case connectMs = "connect_ms", greetingMs = "greeting_ms", tlsMs = "tls_ms"
        case dataMs = "data_ms", reused
    }

    /// From a `results` entry; nil when it has no timings.
    public init?(result e: StreamEntryFields) {
        guard let data = e[EntryField.dataMs].flatMap({ Int($0) }) else { return nil }
        connectMs = Int(e[EntryField.connectMs] ?? "") ?? 0
        greetingMs = Int(e[EntryField.greetingMs] ?? "") ?? 0
        tlsMs = Int(e[EntryField.tlsMs] ?? "") ?? 0
        dataMs = data
        reused = e[EntryField.reused] == "yes"
    }

    /// The history and event fields.
    public var detail: [String: any Sendable] {
        ["connect_ms": connectMs, "greeting_ms": greetingMs, "tls_ms": tlsMs,
         "data_ms": dataMs, "reused": reused]
    }
}

public typealias StreamEntryFields = [String: String]

/// A message event: appended to `events` (field `json`) and to the message's history.
/// Every event carries the message's identity, its metadata and its tags; `detail` adds
/// what the event is about (the remote reply, the DSN status, the next retry time).
public struct MessageEvent: Sendable {
    public var id: String
    public var event: EventKind
    public var atMs: Int64
    public var org: String
    public var from: String
    public var to: String
    /// The metadata object exactly as the client gave it (JSON text).
    public var metadataJSON: String
    /// The tags exactly as the API stored them (a JSON array of strings).
    public var tagsJSON: String
    public var detail: [String: any Sendable]

    public init(id: String, event: EventKind, atMs: Int64, org: String, from: String, to: String,
                metadataJSON: String, tagsJSON: String = "[]",
                detail: [String: any Sendable] = [:]) {
        self.id = id
        self.event = event
        self.atMs = atMs
        self.org = org
        self.from = from
        self.to = to
        self.metadataJSON = metadataJSON
        self.tagsJSON = tagsJSON
        self.detail = detail
    }

    /// The event as JSON, keys sorted so the text is stable for signing.
    public var json: String {
        var object: [String: any Sendable] = [
            "id": id, "event": event.rawValue, "at": timestamp(ms: atMs), "org": org,
            "from": from, "to": to,
        ]
        // The API stored the metadata as a JSON object with sorted keys; it goes in as is.
        let meta = metadataJSON.trimmingCharacters(in: .whitespaces)
        object["metadata"] = RawJSON(meta.hasPrefix("{") && meta.hasSuffix("}") ? meta : "{}")
        let tags = tagsJSON.trimmingCharacters(in: .whitespaces)
        object["tags"] = RawJSON(tags.hasPrefix("[") && tags.hasSuffix("]") ? tags : "[]")
        for (k, v) in detail { object[k] = v }
        return SortedJSON.encode(object)
    }

    /// The history entry: the same document without the message's identity repeated.
    public var historyJSON: String {
        var object: [String: any Sendable] = ["event": event.rawValue, "at": timestamp(ms: atMs)]
        for (k, v) in detail { object[k] = v }
        return SortedJSON.encode(object)
    }
}
