// GET /v1/messages/{id}: what became of a message, from its record, history and attempts.
//
// The body is never read back (it can be megabytes); a key bound to an org sees only that
// org's messages, and another org's message is "not found" rather than "forbidden" so that
// a key cannot probe which ids exist.

import Foundation
import TernCore
import TernMail

extension APIDaemon {
    static let lookupFields = [
        MessageField.id, MessageField.state, MessageField.org, MessageField.pool,
        MessageField.from, MessageField.recipient, MessageField.createdMs,
        MessageField.expiresMs, MessageField.metadata, MessageField.lastReply,
        MessageField.held,
        MessageField.tags, MessageField.sendAtMs,
    ]

    func message(_ id: String, _ request: HTTPRequest) async -> HTTPResponse {
        let boundOrg: String?
        switch authorize(request) {
        case .success(let grant): boundOrg = grant.org
        case .failure(let refusal): return refusal.response
        }
        guard MessageID.isValid(id) else {
            return .error(400, "is not a message id (26 lowercase base32 characters)",
                          field: "id")
        }
        let replies: [RedisValue]
        do {
            replies = try await redis.pipeline([
                [RedisArg.text("HMGET"), .text(keys.message(id))]
                    + APIDaemon.lookupFields.map { RedisArg.text($0) },
                ["LRANGE", .text(keys.history(id)), "0", "-1"],
                ["LRANGE", .text(keys.attempts(id)), "0", "-1"],
            ])
            for case .error(let e) in replies { throw RedisError.server(e) }
        } catch {
            logger.error("could not read a message: \(error)", ("message_id", id))
            return .error(503, "the queue is unavailable; try again",
                          headers: ["Retry-After": "5"])
        }
        let values = replies[0].array ?? []
        guard values.count == APIDaemon.lookupFields.count, let state = values[1].string else {
            return .error(404, "no such message", field: "id")
        }
        let field = { (i: Int) in values[i].string ?? "" }
        if let boundOrg, field(2) != boundOrg {
            return .error(404, "no such message", field: "id")
        }
        var object: [String: Any] = [
            "id": id, "state": state, "org": field(2), "pool": field(3), "from": field(4),
            "to": field(5), "metadata": APIDaemon.jsonObject(field(8)) ?? [String: Any](),
            "attempts": (replies[2].array ?? []).compactMap { APIDaemon.jsonObject($0.string) },
            "history": (replies[1].array ?? []).compactMap { APIDaemon.jsonObject($0.string) },
        ]
        if let ms = Int64(field(6)) { object["created"] = timestamp(ms: ms) }
        if let ms = Int64(field(7)) { object["expires"] = timestamp(ms: ms) }
        if !field(9).isEmpty { object["last_reply"] = field(9) }
        // Why a due message waits: breaker, cap, warmup or pause (its history says more).
        if !field(10).isEmpty { object["held"] = field(10) }
        object["tags"] = (try? JSONReading.value(field(11))) as? [Any] ?? [Any]()
        if let ms = Int64(field(12)) { object["send_at"] = timestamp(ms: ms) }
        return .json(200, object)
    }

    /// A stored JSON object, or nil for anything else (an entry another version wrote badly
    /// is left out rather than failing the whole answer).
    static func jsonObject(_ text: String?) -> [String: Any]? {
        guard let text else { return nil }
        return (try? JSONReading.value(text)) as? [String: Any]
    }
}
