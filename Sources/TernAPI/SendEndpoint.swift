// POST /v1/send: a JSON request becomes a queued message.
//
// Order of checks: key (401/403), a Content-Length (411), media type (415), JSON and fields
// (400 for a body that is not a JSON object, 422 naming the field otherwise, a pool
// TERN_POOLS does not list among them), the org a bound key allows (403). Only then is an id
// made, the message built and DKIM-signed, and the record, its first history entry, the
// `submit` entry, the `accepted` event and the `dkim.signed` or `dkim.unsigned` counter
// written in one MULTI/EXEC: Redis applies all of it or none, so a refusal or an outage
// leaves nothing behind for the scheduler to find. POST /v1/send/batch (BatchEndpoint.swift)
// goes through the same checks and the same writes, message by message.

import Foundation
import TernCore
import TernMail

/// A request field the API refuses: the answer's status, the field's path, and why.
struct FieldRefusal: Error {
    let status: Int
    let field: String
    let detail: String

    /// A `SendRequest` check's verdict: the org of a bound key is a 403; a document that is
    /// not a JSON object cannot be read at all (400); any other field is unprocessable (422,
    /// RFC 9110 §15.5.21).
    init(_ error: ValidationError, boundOrg: String?) {
        field = error.field
        detail = error.message
        status = error.field == "org" && boundOrg != nil ? 403 : error.field == "body" ? 400 : 422
    }

    init(_ status: Int, field: String, _ detail: String) {
        self.status = status
        self.field = field
        self.detail = detail
    }
}

/// A message that passed every check, built and signed: what its acceptance writes.
struct AcceptedMessage {
    let id: String
    let message: SendRequest
    let bytes: Int
    let dkim: DKIMSigner.Outcome
    let commands: [[RedisArg]]
}

extension APIDaemon {
    func send(_ request: HTTPRequest) async -> HTTPResponse {
        let boundOrg: String?
        switch authorize(request) {
        case .success(let org): boundOrg = org
        case .failure(let refusal): return refusal.response
        }
        if let refusal = checkFraming(request) { return refusal }

        let accepted: AcceptedMessage
        do throws(FieldRefusal) {
            let object: [String: Any]
            do throws(ValidationError) {
                object = try APIDaemon.jsonObject(body: request.body)
            } catch {
                throw FieldRefusal(error, boundOrg: boundOrg)
            }
            accepted = try prepare(object, boundOrg: boundOrg, now: Date())
        } catch {
            logger.debug("refused a send request", ("field", error.field),
                         ("reason", error.detail))
            return .error(error.status, error.detail, field: error.field)
        }
        return await commit([accepted], answer: .json(202, ["id": accepted.id]))
    }

    /// RFC 9110 §15.5.12: a send has a body, and this server frames bodies by length only;
    /// without the field the body would be taken as empty and reported as bad JSON.
    func checkFraming(_ request: HTTPRequest) -> HTTPResponse? {
        guard request.headers.contains("Content-Length") else {
            return .error(411, "send the request body with a Content-Length",
                          field: "Content-Length")
        }
        if let type = request.headers["Content-Type"] {
            let media = type.split(separator: ";").first.map {
                $0.trimmingCharacters(in: .whitespaces).lowercased()
            }
            guard media == "application/json" else {
                return .error(415, "send the request as application/json",
                              field: "Content-Type")
            }
        }
        return nil
    }

    /// The body as a JSON object; fragments are read so that a bare string or number is told
    /// it is not an object rather than that it is not JSON.
    static func jsonObject(body: [UInt8]) throws(ValidationError) -> [String: Any] {
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: Data(body), options: .fragmentsAllowed)
        } catch {
            throw ValidationError(field: "body", message: "is not valid JSON")
        }
        guard let object = parsed as? [String: Any] else {
            throw ValidationError(field: "body", message: "must be a JSON object")
        }
        return object
    }

    /// Checks one send object and, when it passes, builds and signs its message. Nothing is
    /// written yet.
    func prepare(_ object: [String: Any], boundOrg: String?, now: Date)
        throws(FieldRefusal) -> AcceptedMessage
    {
        let message: SendRequest
        do throws(ValidationError) {
            message = try validate(object, boundOrg: boundOrg)
        } catch {
            throw FieldRefusal(error, boundOrg: boundOrg)
        }
        let id = MessageID.generate(now: now)
        let createdMs = Int64((now.timeIntervalSince1970 * 1000).rounded(.down))
        let built = MessageBuilder.build(message, id: id, now: now, hostname: settings.hostname,
                                         cfbl: settings.cfbl)
        // Signed here, once: every attempt sends these bytes. Signing runs inline on the
        // cooperative pool; RSA-2048 costs about 1 ms a key and Ed25519 far less (bench/dkim),
        // small beside the request's own parsing and the Redis round trip.
        let (body, dkim) = signer.sign(built, at: now)
        var commands = acceptCommands(message, id: id, body: body, createdMs: createdMs)
        commands.append(["HINCRBY", .text(keys.counters),
                         .text(dkim.isSigned ? "dkim.signed" : "dkim.unsigned"), "1"])
        return AcceptedMessage(id: id, message: message, bytes: body.count, dkim: dkim,
                               commands: commands)
    }

    /// Writes every accepted message in one MULTI/EXEC (one round trip) and answers `answer`;
    /// 503 and nothing written when Redis fails.
    func commit(_ accepted: [AcceptedMessage], answer: HTTPResponse) async -> HTTPResponse {
        guard !accepted.isEmpty else { return answer }
        do {
            _ = try await redis.transaction(accepted.flatMap(\.commands))
        } catch {
            logger.error("could not queue \(accepted.count) message(s): \(error)",
                         ("message_id", accepted[0].id))
            return .error(503, "the queue is unavailable; nothing was accepted, try again",
                          headers: ["Retry-After": "5"])
        }
        for a in accepted {
            metrics.dkim.inc(a.dkim.isSigned ? "signed" : "unsigned")
            switch a.dkim {
            case .signed(let domain, let selectors):
                logger.debug("dkim signed", ("message_id", a.id), ("dkim_domain", domain),
                             ("selectors", selectors.joined(separator: ",")))
            case .unsigned(let domain):
                logger.debug("no dkim key for the From domain; sending unsigned",
                             ("message_id", a.id), ("from_domain", domain ?? ""))
            }
            logger.info("accepted", ("message_id", a.id), ("org", a.message.org),
                        ("pool", a.message.pool), ("domain", a.message.to.asciiDomain),
                        ("bytes", String(a.bytes)))
        }
        return answer
    }

    /// Validates a send object. A key bound to an org sets the org when the object names
    /// none, and refuses an object for another org.
    func validate(_ json: [String: Any], boundOrg: String?) throws(ValidationError)
        -> SendRequest
    {
        var object = json
        if let boundOrg {
            if let org = object["org"], !(org is NSNull) {
                guard let name = org as? String, name == boundOrg else {
                    throw ValidationError(field: "org", message: "this API key may only send "
                        + "for org \(boundOrg)")
                }
            }
            object["org"] = boundOrg
        }
        let message = try SendRequest(json: object)
        try checkPool(message.pool)
        return message
    }

    /// A pool the scheduler would not know, when TERN_POOLS tells the API which it knows.
    func checkPool(_ pool: String) throws(ValidationError) {
        guard let pools = settings.pools, !pools.contains(pool) else { return }
        throw ValidationError(field: "pool", message: "there is no pool named \(pool); the "
            + "pools are " + pools.sorted().joined(separator: ", "))
    }

    /// The one transaction that accepts a message (the contract in Streams.swift).
    func acceptCommands(_ m: SendRequest, id: String, body: [UInt8], createdMs: Int64)
        -> [[RedisArg]]
    {
        let expiresMs = createdMs + settings.lifetime.maxAge.milliseconds
        let event = MessageEvent(id: id, event: .accepted, atMs: createdMs, org: m.org,
                                 from: m.from.description, to: m.to.description,
                                 metadataJSON: m.metadataJSON)
        let record = keys.message(id), history = keys.history(id)
        let backstop = RedisArg.text(String(
            (settings.lifetime.maxAge + settings.lifetime.recordTTL).milliseconds / 1000))
        return [
            ["HSET", .text(record),
             .text(MessageField.id), .text(id),
             .text(MessageField.org), .text(m.org),
             .text(MessageField.pool), .text(m.pool),
             .text(MessageField.from), .text(m.from.description),
             .text(MessageField.recipient), .text(m.to.description),
             .text(MessageField.domain), .text(m.to.asciiDomain),
             .text(MessageField.body), .data(body),
             .text(MessageField.metadata), .text(m.metadataJSON),
             .text(MessageField.createdMs), .text(String(createdMs)),
             .text(MessageField.expiresMs), .text(String(expiresMs)),
             .text(MessageField.state), .text(MessageState.queued.rawValue),
             .text(MessageField.attempts), "0"],
            ["RPUSH", .text(history), .text(event.historyJSON)],
            ["EXPIRE", .text(record), backstop],
            ["EXPIRE", .text(history), backstop],
            xadd(keys.stream(.submit), [(EntryField.id, id)]),
            xadd(keys.stream(.events), [(EntryField.id, id),
                                        (EntryField.event, EventKind.accepted.rawValue),
                                        (EntryField.json, event.json)], maxLen: 1_000_000),
        ]
    }
}
