// POST /v1/send: a JSON request becomes a queued message.
//
// Order of checks: key (401/403), a Content-Length (411), media type (415), JSON and fields
// (400 for a body that is not a JSON object, 422 naming the field otherwise, a pool
// TERN_POOLS does not list among them), the org a bound key allows (403). Only then is an id
// made and the message built; a message over TERN_API_MAX_MESSAGE is refused (413, naming
// its largest field). Then it is DKIM-signed, and the record, its first history entry, the
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
        let grant: APIKeys.Grant
        switch authorizeSender(request) {
        case .success(let g): grant = g
        case .failure(let refusal): return refusal.response
        }
        if let refusal = checkFraming(request) { return refusal }
        let boundOrg = grant.org
        var claim: IdempotencyClaim?
        switch await claimIdempotency(request, keyID: grant.keyID) {
        case .none: break
        case .claimed(let c): claim = c
        case .answer(let answer): return answer
        }

        let accepted: AcceptedMessage
        do throws(FieldRefusal) {
            let object: [String: Any]
            do throws(ValidationError) {
                object = try SendRequest.jsonObject(body: request.body)
            } catch {
                throw FieldRefusal(error, boundOrg: boundOrg)
            }
            accepted = try prepare(object, boundOrg: boundOrg, now: Date())
        } catch {
            logger.debug("refused a send request", ("field", error.field),
                         ("reason", error.detail))
            let answer = HTTPResponse.error(error.status, error.detail, field: error.field)
            await settle(claim, answer)
            return answer
        }
        return await commit([accepted], answer: .json(202, ["id": accepted.id]), claim: claim)
    }

    /// RFC 9110 §15.5.12: a send has a body, and this server frames bodies by length only;
    /// without the field the body would be taken as empty and reported as bad JSON.
    func checkFraming(_ request: HTTPRequest) -> HTTPResponse? {
        guard request.headers.contains("Content-Length") else {
            return .error(411, "send the request body with a Content-Length",
                          field: "Content-Length")
        }
        return checkMediaType(request)
    }

    /// Every JSON body must say so: without Content-Type, or with another type, the body is
    /// refused (415) rather than guessed at.
    func checkMediaType(_ request: HTTPRequest) -> HTTPResponse? {
        let media = request.headers["Content-Type"]?.split(separator: ";").first.map {
            $0.trimmingCharacters(in: .whitespaces).lowercased()
        }
        guard media == "application/json" else {
            return .error(415, "send the request body as application/json",
                          field: "Content-Type")
        }
        return nil
    }

    /// Checks one send object and, when it passes, builds and signs its message. Nothing is
    /// written yet.
    func prepare(_ object: [String: Any], boundOrg: String?, now: Date)
        throws(FieldRefusal) -> AcceptedMessage
    {
        let message: SendRequest
        do throws(ValidationError) {
            message = try validate(object, boundOrg: boundOrg, now: now)
        } catch {
            throw FieldRefusal(error, boundOrg: boundOrg)
        }
        // Sending domains bind organisations' keys only (SendingDomains.swift).
        let domains = boundOrg == nil ? nil : settings.sendingDomains
        if let domains { try checkSender(message, domains) }
        let id = MessageID.generate(now: now)
        let createdMs = Int64((now.timeIntervalSince1970 * 1000).rounded(.down))
        let built = MessageBuilder.build(message, id: id, now: now, hostname: settings.hostname,
                                         cfbl: settings.cfbl)
        if let domains { try checkSigner(built, message, domains) }
        guard built.count <= settings.maxMessage else {
            let field = message.largestField
            logger.debug("refused a message over the size limit", ("field", field),
                         ("bytes", String(built.count)))
            throw FieldRefusal(413, field: field, "the message would be \(built.count) octets "
                + "once built; the limit is \(settings.maxMessage)")
        }
        // Signed here, once: every attempt sends these bytes. Signing is CPU work, inline on
        // the cooperative pool (a thread per core): an RSA-2048 signature (about 0.7 ms) is
        // most of the API's work on a signed message, Ed25519 far less (bench/dkim).
        let (body, dkim) = signer.sign(built, at: now)
        let commands = acceptCommands(message, id: id, body: body, createdMs: createdMs)
        return AcceptedMessage(id: id, message: message, bytes: body.count, dkim: dkim,
                               commands: commands)
    }

    /// Writes every accepted message, and the answer of a claimed Idempotency-Key, in one
    /// MULTI/EXEC (one round trip) and answers `answer`; 503 and nothing written when Redis
    /// fails.
    func commit(_ accepted: [AcceptedMessage], answer: HTTPResponse, claim: IdempotencyClaim?)
        async -> HTTPResponse
    {
        var commands = accepted.flatMap(\.commands)
        // The DKIM counters once per transaction, not once per message of a batch.
        let signed = accepted.filter(\.dkim.isSigned).count
        for (field, count) in [("dkim.signed", signed), ("dkim.unsigned", accepted.count - signed)]
        where count > 0 {
            commands.append(["HINCRBY", .text(keys.counters), .text(field), .text(String(count))])
        }
        if let claim { commands.append(claim.record(answer)) }
        do {
            _ = try await redis.transaction(commands)
        } catch {
            logger.error("could not queue \(accepted.count) message(s): \(error)",
                         ("message_id", accepted.first?.id ?? ""))
            let outage = unavailableToSend()
            await settle(claim, outage)
            return outage
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

    /// The `from` domain must be one of the organisation's (TERN_ORG_DOMAINS).
    func checkSender(_ m: SendRequest, _ domains: SendingDomains) throws(FieldRefusal) {
        let domain = m.from.asciiDomain
        guard !domains.allows(org: m.org, domain: domain) else { return }
        let own = domains.domains(of: m.org)
        throw FieldRefusal(403, field: "from", "org \(m.org) may not send from \(domain); "
            + (own.isEmpty ? "it has no sending domain"
                : "its domains are " + own.joined(separator: ", ")))
    }

    /// The built message's From field (a raw message's own) must hold exactly one mailbox,
    /// read strictly (MailboxList, as DKIM reads it to sign), in the organisation's domains,
    /// and have an aligned DKIM key unless TERN_ORG_UNSIGNED lets the organisation off. A
    /// Sender field (headers.Sender, or a raw message's) must be the organisation's too:
    /// readers show it as who sent the mail "on behalf of" the author.
    func checkSigner(_ built: [UInt8], _ m: SendRequest, _ domains: SendingDomains)
        throws(FieldRefusal)
    {
        let field = m.raw == nil ? "from" : "raw"
        let froms = MailboxList.fieldValues("From", in: built)
        guard froms.count == 1, let authors = MailboxList.parse(froms[0]), authors.count == 1
        else {
            throw FieldRefusal(422, field: field, "must have exactly one From field holding "
                + "exactly one address (name <local@domain> or local@domain) to check "
                + "against org \(m.org)'s domains")
        }
        let domain = authors[0].asciiDomain
        try checkDomain(domain, of: "From", field: field, m, domains)
        if domains.requiresDKIM(org: m.org) && settings.dkimKeys.keys(for: domain).isEmpty {
            throw FieldRefusal(422, field: field, "no DKIM key of TERN_DKIM_KEYS signs for "
                + "\(domain), and org \(m.org) may send signed mail only")
        }
        let senderField = m.raw != nil ? "raw"
            : m.headers.first { $0.name.lowercased() == "sender" }.map { "headers." + $0.name }
        for value in MailboxList.fieldValues("Sender", in: built) {
            let field = senderField ?? "raw"
            guard let senders = MailboxList.parse(value), senders.count == 1 else {
                throw FieldRefusal(422, field: field, "the Sender field must hold exactly one "
                    + "address (name <local@domain> or local@domain)")
            }
            try checkDomain(senders[0].asciiDomain, of: "Sender", field: field, m, domains)
        }
    }

    /// 403 naming `field` when `domain` is not one of the organisation's.
    func checkDomain(_ domain: String, of header: String, field: String, _ m: SendRequest,
                     _ domains: SendingDomains) throws(FieldRefusal)
    {
        guard !domains.allows(org: m.org, domain: domain) else { return }
        throw FieldRefusal(403, field: field, "its \(header) field is in \(domain), which org "
            + "\(m.org) may not send from")
    }

    /// Validates a send object. A key bound to an org sets the org when the object names
    /// none, and refuses an object for another org.
    func validate(_ json: [String: Any], boundOrg: String?, now: Date = Date())
        throws(ValidationError) -> SendRequest
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
        let message = try SendRequest(json: object, now: now)
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
        // A scheduled message's age counts from its send time, so the backstop does too.
        // Rounded: the parsed ".114" may be a hair under 114 ms as a Double.
        let sendAtMs = m.sendAt.map { Int64(($0.timeIntervalSince1970 * 1000).rounded()) }
        let startMs = max(createdMs, sendAtMs ?? 0)
        let expiresMs = startMs + settings.lifetime.maxAge.milliseconds
        var detail: [String: any Sendable] = [:]
        if let sendAtMs { detail["send_at"] = timestamp(ms: sendAtMs) }
        let event = MessageEvent(id: id, event: .accepted, atMs: createdMs, org: m.org,
                                 from: m.from.description, to: m.to.description,
                                 metadataJSON: m.metadataJSON, tagsJSON: m.tagsJSON,
                                 detail: detail).documents
        let record = keys.message(id), history = keys.history(id)
        let backstop = RedisArg.text(String((startMs - createdMs) / 1000
            + (settings.lifetime.maxAge + settings.lifetime.recordTTL).milliseconds / 1000))
        var fields: [RedisArg] = [.text(MessageField.tags), .text(m.tagsJSON)]
        if let sendAtMs { fields += [.text(MessageField.sendAtMs), .text(String(sendAtMs))] }
        // The score and its source beside the record; absent, the scheduler looks it up.
        if let e = m.engagement {
            fields += [.text(MessageField.engagement), .text(String(e)),
                       .text(MessageField.engagementSource), "api"]
        }
        return [
            ["HSET", .text(record),
             .text(MessageField.id), .text(id),
             .text(MessageField.org), .text(m.org),
             .text(MessageField.pool), .text(m.pool),
             .text(MessageField.from), .text(m.from.description),
             .text(MessageField.recipient), .text(m.to.description),
             .text(MessageField.recipientKey), .text(m.to.listKey),
             .text(MessageField.domain), .text(m.to.asciiDomain),
             .text(MessageField.body), .data(body),
             .text(MessageField.metadata), .text(m.metadataJSON),
             .text(MessageField.createdMs), .text(String(createdMs)),
             .text(MessageField.expiresMs), .text(String(expiresMs)),
             .text(MessageField.state), .text(MessageState.queued.rawValue),
             .text(MessageField.attempts), "0"] + fields,
            ["RPUSH", .text(history), .text(event.history)],
            ["EXPIRE", .text(record), backstop],
            ["EXPIRE", .text(history), backstop],
            xadd(keys.stream(.submit), [(EntryField.id, id)]),
            xadd(keys.stream(.events), [(EntryField.id, id),
                                        (EntryField.event, EventKind.accepted.rawValue),
                                        (EntryField.json, event.json)], maxLen: 1_000_000),
        ]
    }
}
