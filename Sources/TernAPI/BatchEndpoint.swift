// POST /v1/send/batch: up to TERN_API_MAX_BATCH (1,000) messages in one request.
//
//   {"messages": [{...a /v1/send object...}, ...]}
//
// Each message goes through the checks of /v1/send on its own; a refused one is reported
// under its index, with the path of the field at fault (`messages[3].to`), and never holds
// the others back. Every accepted message is then written exactly as /v1/send writes it, all
// of them in one MULTI/EXEC: one Redis round trip for the whole batch, and an outage (503)
// leaves none of them behind, so the client can simply send the batch again.
//
// The answer:
//   200  at least one message accepted: {"accepted": n, "refused": m, "results": [...]},
//        one result per message in order: {"index", "status": 202, "id"} or
//        {"index", "status": 4xx, "field", "detail"}
//   422  no message accepted: a problem document whose `errors` lists the same results
//   400  the body is not a JSON object; 422 naming `messages` when it is not an array of
//        1 to TERN_API_MAX_BATCH entries (nothing is accepted then)

import Foundation
import TernCore
import TernMail

extension APIDaemon {
    func sendBatch(_ request: HTTPRequest) async -> HTTPResponse {
        let grant: APIKeys.Grant
        switch authorizeSender(request) {
        case .success(let g): grant = g
        case .failure(let refusal):
            metrics.answered(refusal.response)
            return refusal.response
        }
        if let refusal = checkFraming(request) {
            metrics.answered(refusal)
            return refusal
        }
        let boundOrg = grant.org
        var claim: IdempotencyClaim?
        switch await claimIdempotency(request, keyID: grant.keyID) {
        case .none: break
        case .claimed(let c): claim = c
        case .answer(let answer): return answer
        }
        let items: [Any]
        do throws(FieldRefusal) {
            items = try batchItems(request.body)
        } catch {
            metrics.refused.inc(error.status == 400 ? "malformed" : "invalid")
            let answer = HTTPResponse.error(error.status, error.detail, field: error.field)
            await settle(claim, answer)
            return answer
        }

        let now = Date()
        var accepted: [AcceptedMessage] = []
        var results: [BatchResult] = []
        for (index, item) in items.enumerated() {
            // Building and signing is CPU work on the cooperative pool; let other requests
            // in between every few messages of a large batch.
            if index > 0 && index % 32 == 0 { await Task.yield() }
            do throws(FieldRefusal) {
                guard let object = item as? [String: Any] else {
                    throw FieldRefusal(422, field: "", "must be a JSON object")
                }
                let message = try prepare(object, boundOrg: boundOrg, now: now)
                accepted.append(message)
                results.append(.accepted(index: index, id: message.id))
            } catch {
                let path = "messages[\(index)]" + (error.field.isEmpty ? "" : "." + error.field)
                results.append(.refused(index: index, status: error.status, field: path,
                                        detail: error.detail))
            }
        }
        let refused = items.count - accepted.count
        logger.debug("batch checked", ("messages", String(items.count)),
                     ("refused", String(refused)))
        guard !accepted.isEmpty else {
            metrics.refused.inc("invalid", by: Double(refused))
            let answer = HTTPResponse.error(422, "no message of the batch could be accepted",
                                            field: "messages",
                                            extensions: ["errors": results.map(\.object)])
            await settle(claim, answer)
            return answer
        }
        // Written by hand: JSONSerialization took 4 % of the API's CPU on batches of 100.
        let document = #"{"accepted":\#(accepted.count),"refused":\#(refused),"results":["#
            + results.map(\.json).joined(separator: ",") + "]}"
        let answer = await commit(accepted, answer: .json(200, text: document), claim: claim)
        if answer.status == 200 {
            metrics.accepted.inc(by: Double(accepted.count))
            if refused > 0 { metrics.refused.inc("invalid", by: Double(refused)) }
        } else {
            metrics.refused.inc("unavailable", by: Double(items.count))
        }
        return answer
    }

    /// The `messages` array of a batch body.
    func batchItems(_ body: [UInt8]) throws(FieldRefusal) -> [Any] {
        let object: [String: Any]
        do throws(ValidationError) {
            object = try SendRequest.jsonObject(body: body)
        } catch {
            throw FieldRefusal(400, field: error.field, error.message)
        }
        if let other = object.keys.filter({ $0 != "messages" }).sorted().first {
            throw FieldRefusal(422, field: other, "is not a known field; a batch is "
                + #"{"messages": [...]}"#)
        }
        guard let items = object["messages"] as? [Any] else {
            throw FieldRefusal(422, field: "messages", object["messages"] == nil
                ? "is required" : "must be an array of send objects")
        }
        guard (1...settings.maxBatch).contains(items.count) else {
            throw FieldRefusal(422, field: "messages", "must hold 1 to \(settings.maxBatch) "
                + "messages; it holds \(items.count)")
        }
        return items
    }
}

/// What became of one message of a batch.
enum BatchResult {
    case accepted(index: Int, id: String)
    case refused(index: Int, status: Int, field: String, detail: String)

    /// The result's object, keys sorted as `HTTPResponse.json` sorts them.
    var json: String {
        var w = JSONObjectWriter()
        switch self {
        case .accepted(let index, let id):
            w.add("id", id)
            w.add("index", index)
            w.add("status", 202)
        case .refused(let index, let status, let field, let detail):
            w.add("detail", detail)
            w.add("field", field)
            w.add("index", index)
            w.add("status", status)
        }
        return w.close()
    }

    /// The same for a problem document's `errors`.
    var object: [String: Any] {
        switch self {
        case .accepted(let index, let id): return ["index": index, "status": 202, "id": id]
        case .refused(let index, let status, let field, let detail):
            return ["index": index, "status": status, "field": field, "detail": detail]
        }
    }
}
