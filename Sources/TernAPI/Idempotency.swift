// Idempotency-Key on POST /v1/send and /v1/send/batch: a client that retries a request (a
// timeout, a lost connection) with the same key gets the first answer again, status and
// body, instead of sending the mail twice.
//
// A key is claimed with one `SET … NX GET` before the request is judged, so of two
// identical requests racing, one runs and the other is told it is in progress (409, with
// Retry-After). The answer replaces the claim in the same MULTI/EXEC that queues the
// messages, so the mail and the record of its answer exist together or not at all; a
// refusal (4xx) is recorded too, since the same body would be refused again. An outage
// (5xx) deletes the claim, so the retry runs afresh. A claim whose request died lapses
// after 60 s; an answer is kept for TERN_API_IDEMPOTENCY_TTL (24 h).
//
// Keys are kept per API key (its digest's first octets, never the key), so two clients
// cannot see each other's answers. The same key with another body (or on the other
// endpoint) is a client error: 422, naming Idempotency-Key.

import Foundation
import TernCore
import TernMail

/// A claimed Idempotency-Key: where its answer goes and what request it belongs to.
struct IdempotencyClaim {
    let redisKey: String
    let fingerprint: String
    let ttl: Duration

    /// The command that records `answer` in place of the claim.
    func record(_ answer: HTTPResponse) -> [RedisArg] {
        let stored: [String: Any] = [
            "fingerprint": fingerprint, "status": answer.status,
            "content_type": answer.headers["Content-Type"] ?? "",
            "body": String(decoding: answer.body, as: UTF8.self),
        ]
        let json = (try? JSONSerialization.data(withJSONObject: stored, options: [.sortedKeys]))
            .map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return ["SET", .text(redisKey), .text(json), "PX", .text(String(ttl.milliseconds))]
    }
}

extension APIDaemon {
    static let idempotencyHeader = "Idempotency-Key"
    /// How long a claim outlives a request that never finished.
    static let claimTTL: Duration = .seconds(60)

    /// What an Idempotency-Key field asks: no key, a claim to run under, or an answer now
    /// (the first answer replayed, or a refusal).
    enum IdempotencyStart {
        case none
        case claimed(IdempotencyClaim)
        case answer(HTTPResponse)
    }

    func claimIdempotency(_ request: HTTPRequest, keyID: String) async -> IdempotencyStart {
        let values = request.headers.values(Self.idempotencyHeader)
        guard let key = values.first else { return .none }
        // Printable ASCII, as most clients make them (a UUID, a hash); long enough for any.
        guard values.count == 1, (1...255).contains(key.utf8.count),
              key.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F })
        else {
            return .answer(.error(400, "must be given once, as 1 to 255 printable ASCII "
                + "characters", field: Self.idempotencyHeader))
        }
        let hex = { (bytes: [UInt8]) in bytes.map { String($0, radix: 16).leftPadded(to: 2) }
            .joined() }
        let fingerprint = hex(Crypto.sha256(Array((request.path + "\n").utf8) + request.body))
        let claim = IdempotencyClaim(
            redisKey: keys.idempotency(keyID, hex(Crypto.sha256(Array(key.utf8)))),
            fingerprint: fingerprint, ttl: settings.idempotencyTTL)
        let previous: RedisValue
        do {
            previous = try await redis.pipeline([[
                "SET", .text(claim.redisKey), .text("claim " + fingerprint),
                "PX", .text(String(Self.claimTTL.milliseconds)), "NX", "GET",
            ]])[0].get()
        } catch {
            logger.error("could not claim an idempotency key: \(error)")
            return .answer(unavailableToSend())
        }
        guard let stored = previous.string else { return .claimed(claim) }
        return .answer(replay(stored, fingerprint: fingerprint))
    }

    /// The answer to a request whose key was claimed before: the first answer, or why not.
    func replay(_ stored: String, fingerprint: String) -> HTTPResponse {
        if stored.hasPrefix("claim ") {
            guard stored.dropFirst(6) == fingerprint else { return reusedKey() }
            return .error(409, "a request with this key is still in progress; try again",
                          field: Self.idempotencyHeader, headers: ["Retry-After": "1"])
        }
        guard let object = APIDaemon.jsonObject(stored),
              let status = (object["status"] as? NSNumber)?.intValue,
              let body = object["body"] as? String
        else {
            logger.critical("an idempotency record cannot be read; answering 500")
            return .error(500, "the stored answer for this key cannot be read",
                          field: Self.idempotencyHeader)
        }
        guard object["fingerprint"] as? String == fingerprint else { return reusedKey() }
        var headers: HTTPHeaders = ["Idempotent-Replayed": "true"]
        if let type = object["content_type"] as? String, !type.isEmpty {
            headers.set("Content-Type", type)
        }
        return HTTPResponse(status: status, headers: headers, body: Array(body.utf8))
    }

    func reusedKey() -> HTTPResponse {
        .error(422, "was used before with another request; use a new key for a new request",
               field: Self.idempotencyHeader)
    }

    /// After a request that answered without queueing: a refusal is recorded as the answer,
    /// an outage releases the claim so that the retry runs.
    func settle(_ claim: IdempotencyClaim?, _ answer: HTTPResponse) async {
        guard let claim else { return }
        let command: [RedisArg] = answer.status >= 500
            ? ["DEL", .text(claim.redisKey)] : claim.record(answer)
        do {
            _ = try await redis.pipeline([command])[0].get()
        } catch {
            // The claim lapses by itself within a minute.
            logger.warning("could not settle an idempotency key: \(error)")
        }
    }

    func unavailableToSend() -> HTTPResponse {
        .error(503, "the queue is unavailable; nothing was accepted, try again",
               headers: ["Retry-After": "5"])
    }
}
