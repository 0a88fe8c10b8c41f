// The JSON documents daemons leave for each other and for clients: a message's history
// entries, its attempts, and the events posted to webhooks. One shape each, defined here.

import Foundation

/// Milliseconds since the epoch as an RFC 3339 UTC timestamp with milliseconds.
public func timestamp(ms: Int64) -> String {
    // Floor division, so a time before the epoch reads as the second it falls in.
    let seconds = ms >= 0 ? ms / 1000 : (ms - 999) / 1000
    let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
    let date = CivilDate(daysSinceEpoch: days)
    guard (0...9999).contains(date.year) else { return formattedTimestamp(ms: ms) }
    // Written digit by digit: the date formatter cost several µs a call, and the
    // scheduler writes a few timestamps for every attempt.
    let second = Int(seconds - days * 86_400)
    var out = [UInt8](repeating: 0, count: 24)
    func put(_ value: Int, at index: Int, digits: Int) {
        var v = value
        for i in stride(from: index + digits - 1, through: index, by: -1) {
            out[i] = UInt8(ascii: "0") + UInt8(v % 10)
            v /= 10
        }
    }
    put(date.year, at: 0, digits: 4)
    put(date.month, at: 5, digits: 2)
    put(date.day, at: 8, digits: 2)
    put(second / 3600, at: 11, digits: 2)
    put(second / 60 % 60, at: 14, digits: 2)
    put(second % 60, at: 17, digits: 2)
    put(Int(ms - seconds * 1000), at: 20, digits: 3)
    for (i, c) in [(4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":"), (19, "."), (23, "Z")] {
        out[i] = UInt8(ascii: Unicode.Scalar(c)!)
    }
    return String(decoding: out, as: UTF8.self)
}

/// The same text through Foundation's formatter, for years outside 0...9999.
func formattedTimestamp(ms: Int64) -> String {
    // Whole seconds through the formatter, milliseconds by integer arithmetic: a Double
    // division would sometimes print one millisecond less than was stored.
    let seconds = ms >= 0 ? ms / 1000 : (ms - 999) / 1000
    let date = Date(timeIntervalSince1970: Double(seconds))
    let text = date.formatted(.iso8601.year().month().day().dateSeparator(.dash)
        .time(includingFractionalSeconds: false).timeSeparator(.colon))
    return text + "." + String(String(ms - seconds * 1000 + 1000).dropFirst()) + "Z"
}

/// A day of the proleptic Gregorian calendar.
struct CivilDate: Equatable {
    var year: Int
    var month: Int
    var day: Int

    /// The date `days` days after 1970-01-01. The calendar repeats every 400 years
    /// (146,097 days); counting from 0000-03-01 puts the leap day at the end of each year.
    init(daysSinceEpoch days: Int64) {
        let fromMarch = days + 719_468   // days from 0000-03-01 to 1970-01-01
        let era = (fromMarch >= 0 ? fromMarch : fromMarch - 146_096) / 146_097
        let dayOfEra = Int(fromMarch - era * 146_097)                   // 0...146096
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524
            - dayOfEra / 146_096) / 365                                   // 0...399
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthFromMarch = (5 * dayOfYear + 2) / 153                    // 0 = March
        day = dayOfYear - (153 * monthFromMarch + 2) / 5 + 1
        month = monthFromMarch < 10 ? monthFromMarch + 3 : monthFromMarch - 9
        year = yearOfEra + Int(era) * 400 + (month <= 2 ? 1 : 0)
    }
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

    /// The record as JSON text, keys in code-point order; absent optionals are left out, as
    /// `Codable` leaves them out, so `JSONDecoder` reads it back the same.
    public var json: String {
        var w = JSONObjectWriter()
        w.add("addr", addr)
        w.add("at", at)
        w.add("attempt", attempt)
        w.add("code", code)
        w.add("enhanced", enhanced)
        w.add("ip", ip)
        w.add("ms", ms)
        w.add("mx", mx)
        w.add("outcome", outcome.rawValue)
        w.add("reply", reply)
        w.add("stage", stage)
        if let timings {
            var t = JSONObjectWriter()
            t.add("connect_ms", timings.connectMs)
            t.add("data_ms", timings.dataMs)
            t.add("greeting_ms", timings.greetingMs)
            t.add("reused", timings.reused)
            t.add("tls_ms", timings.tlsMs)
            w.add("timings", raw: t.close())
        }
        w.add("tls", tls)
        if let tlsCipher { w.add("tls_cipher", tlsCipher) }
        if let tlsVerified { w.add("tls_verified", tlsVerified) }
        if let tlsVersion { w.add("tls_version", tlsVersion) }
        return w.close()
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
    public var json: String { documents.json }

    /// The history entry: the same document without the message's identity repeated.
    public var historyJSON: String { documents.history }

    /// The event and its history entry, the detail's values written once for both. A detail
    /// key that is also one of the event's own (`at`, `to`, ...) replaces it.
    public var documents: (json: String, history: String) {
        var detailMembers: [(key: String, text: String)] = []
        detailMembers.reserveCapacity(detail.count)
        for (key, value) in detail {
            var text = ""
            SortedJSON.write(value, into: &text)
            detailMembers.append((key, text))
        }
        detailMembers.sort { $0.key < $1.key }
        var at = "", kind = ""
        SortedJSON.quote(timestamp(ms: atMs), into: &at)
        SortedJSON.quote(event.rawValue, into: &kind)
        // The API stored the metadata as a JSON object with sorted keys; it goes in as is.
        let own: [(key: String, text: String)] = [
            ("at", at), ("event", kind), ("from", Self.quoted(from)), ("id", Self.quoted(id)),
            ("metadata", Self.document(metadataJSON, "{", "}")), ("org", Self.quoted(org)),
            ("tags", Self.document(tagsJSON, "[", "]")), ("to", Self.quoted(to)),
        ]
        return (Self.object(own, detailMembers), Self.object(Array(own.prefix(2)), detailMembers))
    }

    private static func quoted(_ s: String) -> String {
        var out = ""
        SortedJSON.quote(s, into: &out)
        return out
    }

    /// One object of two member lists, each sorted by key, merged in key order.
    private static func object(_ own: [(key: String, text: String)],
                               _ detail: [(key: String, text: String)]) -> String {
        var out = "{"
        var i = 0, j = 0
        func put(_ member: (key: String, text: String)) {
            if out.utf8.count > 1 { out += "," }
            SortedJSON.quote(member.key, into: &out)
            out += ":"
            out += member.text
        }
        while i < own.count || j < detail.count {
            if j == detail.count || (i < own.count && own[i].key < detail[j].key) {
                put(own[i])
                i += 1
            } else {
                if i < own.count && own[i].key == detail[j].key { i += 1 }
                put(detail[j])
                j += 1
            }
        }
        return out + "}"
    }

    /// `text` when it is enclosed in `open` and `close` (blanks around it trimmed), else the
    /// empty document.
    static func document(_ text: String, _ open: Character, _ close: Character) -> String {
        if text.first == open && text.last == close { return text }
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        return trimmed.first == open && trimmed.last == close ? trimmed : "\(open)\(close)"
    }

}
