// What one webhook post carries: an `events` entry turned into the JSON body a receiver
// gets, the key its order is kept under, and the signature over it.
//
// The body is built once, when the entry is read, and stored: every attempt (and a retry by
// an operator) posts the same octets under the same event id, the entry's stream id. Only
// the signature's timestamp changes between attempts.

import Foundation
import TernCore
import TernMail

/// One event as posted.
public struct WebhookEvent: Sendable, Equatable {
    /// The `events` entry's id, `<ms>-<seq>`: unique, and ordered as the events were written.
    public let id: String
    public let type: String
    /// The organisation the event is about, nil for events about no organisation.
    public let org: String?
    /// Events with the same key are posted one after the other, in stream order: the message
    /// id for message events, the IP or the organisation for the others.
    public let orderKey: String
    public let body: String

    /// Reads an `events` entry. Nil when it is not an event (no type, or its JSON is not an
    /// object): a bug in the daemon that wrote it.
    public init?(entry: StreamEntry) {
        guard let type = entry[EntryField.event], !type.isEmpty,
              let json = entry[EntryField.json],
              let doc = try? JSONReading.value(json) as? [String: Any]
        else { return nil }
        let messageID = entry[EntryField.id] ?? (doc["message_id"] as? String)
        let isMessageEvent = entry[EntryField.id] != nil
        id = entry.id
        self.type = type
        org = (doc["org"] as? String).flatMap { $0.isEmpty ? nil : $0 }
        if isMessageEvent, let messageID {
            orderKey = "msg:" + messageID
        } else if let ip = entry[EntryField.sourceIP] ?? (doc["ip"] as? String) {
            orderKey = "ip:" + ip
        } else if let org {
            orderKey = "org:" + org
        } else {
            orderKey = "event:" + entry.id
        }
        var envelope: [String: any Sendable] = [
            "id": entry.id, "type": type, "data": RawJSON(json),
            "timestamp": (doc["at"] as? String)
                ?? timestamp(ms: Int64(StreamID(entry.id)?.ms ?? 0)),
        ]
        if let messageID { envelope["message_id"] = messageID }
        if let org { envelope["org"] = org }
        if isMessageEvent, let to = doc["to"] as? String { envelope["recipient"] = to }
        body = SortedJSON.encode(envelope)
    }

    /// A zero-padded form of a stream id that sorts as the ids do, as text (Redis sorted
    /// sets of equal scores order members by their octets).
    public static func sortable(_ id: String) -> String? {
        guard let s = StreamID(id) else { return nil }
        let ms = String(s.ms), seq = String(s.seq)
        guard ms.count <= 15, seq.count <= 10 else { return nil }
        return String(repeating: "0", count: 15 - ms.count) + ms + "-"
            + String(repeating: "0", count: 10 - seq.count) + seq
    }

    /// The stream id of a `sortable` text.
    public static func streamID(sortable: String) -> String {
        StreamID(sortable).map(\.description) ?? sortable
    }
}

/// The `Tern-Signature` field: `t=<unix seconds>,v1=<hex HMAC-SHA256>` over
/// `<t>.<body>` with the endpoint's secret. The timestamp is inside what is signed, so a
/// receiver that refuses old timestamps refuses replayed posts too.
public enum WebhookSignature {
    public static let header = "Tern-Signature"

    public static func sign(body: [UInt8], secret: [UInt8], unixSeconds: Int64) -> String {
        sign(body: body, secrets: [secret], unixSeconds: unixSeconds)
    }

    /// One `v1` per secret, in order: a receiver accepts the post when any one verifies.
    public static func sign(body: [UInt8], secrets: [[UInt8]], unixSeconds: Int64) -> String {
        let signed = Array("\(unixSeconds).".utf8) + body
        return (["t=\(unixSeconds)"] + secrets.map {
            "v1=" + Crypto.hex(Crypto.hmacSHA256(key: $0, data: signed))
        }).joined(separator: ",")
    }

    /// What a receiver does: the field parses, one `v1` matches (compared in constant time)
    /// and `t` is within `tolerance` seconds of `nowSeconds` either way.
    public static func verify(_ field: String, body: [UInt8], secret: [UInt8],
                              nowSeconds: Int64, tolerance: Int64 = 300) -> Bool {
        var t: Int64?
        var candidates: [[UInt8]] = []
        for part in field.split(separator: ",") {
            let pair = part.trimmingCharacters(in: .whitespaces)
                .split(separator: "=", maxSplits: 1).map(String.init)
            guard pair.count == 2 else { continue }
            if pair[0] == "t" { t = Int64(pair[1]) }
            if pair[0] == "v1", let mac = Crypto.bytes(hex: pair[1]) { candidates.append(mac) }
        }
        guard let t, abs(nowSeconds - t) <= tolerance else { return false }
        let expected = Crypto.hmacSHA256(key: secret, data: Array("\(t).".utf8) + body)
        return candidates.contains { Crypto.constantTimeEqual($0, expected) }
    }
}
