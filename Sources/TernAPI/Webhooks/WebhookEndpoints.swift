// What operators see of the webhooks, and the retry of given-up deliveries:
//
//   GET  /v1/webhooks                                  every endpoint: backlog, failures,
//                                                      last success, last error
//   GET  /v1/webhooks/{name}/failed[?limit=N]          given-up deliveries, oldest first
//   POST /v1/webhooks/{name}/failed/retry              every given-up delivery goes again
//   POST /v1/webhooks/{name}/failed/{event_id}/retry   one goes again
//
// Endpoints receive every organisation's events, so these need an operator key (bound to
// no organisation, or @ops). A secret is never shown.

import Foundation
import TernCore
import TernMail

extension APIDaemon {
    func webhookRoute(_ request: HTTPRequest) async -> HTTPResponse? {
        let prefix = "/v1/webhooks"
        guard request.path == prefix || request.path.hasPrefix(prefix + "/") else { return nil }
        let parts = request.path.dropFirst(prefix.count).split(separator: "/").map(String.init)
        let readOnly = request.method == "GET" || request.method == "HEAD"
        switch parts.count {
        case 0:
            guard readOnly else { return notAllowed("GET, HEAD") }
        case 2 where parts[1] == "failed":
            guard readOnly else { return notAllowed("GET, HEAD") }
        case 3 where parts[1] == "failed" && parts[2] == "retry",
             4 where parts[1] == "failed" && parts[3] == "retry":
            guard request.method == "POST" else { return notAllowed("POST") }
        default:
            return notFound()
        }
        if let refusal = authorizeOperator(request, what: "webhooks") { return refusal }
        guard let webhooks else {
            return parts.isEmpty ? .json(200, ["webhooks": [Any]()])
                : .error(404, "no such webhook endpoint", field: "name")
        }
        if parts.isEmpty { return await webhookList(webhooks) }
        guard let endpoint = webhooks.settings.endpoints.first(where: { $0.name == parts[0] })
        else { return .error(404, "no such webhook endpoint", field: "name") }
        switch parts.count {
        case 2: return await failedWebhooks(webhooks, endpoint, request)
        case 3: return await retryWebhooks(webhooks, endpoint, eventID: nil)
        default: return await retryWebhooks(webhooks, endpoint, eventID: parts[2])
        }
    }

    func webhookList(_ webhooks: Webhooks) async -> HTTPResponse {
        let names = webhooks.settings.endpoints.map(\.name)
        guard let status = try? await webhooks.store.status(names) else {
            return webhookUnavailable()
        }
        let list: [[String: Any]] = webhooks.settings.endpoints.map { e in
            let s = status[e.name] ?? WebhookStore.Status()
            func time(_ field: String) -> Any {
                s.stats[field].flatMap(Int64.init).map { timestamp(ms: $0) } ?? NSNull()
            }
            return [
                "name": e.name, "url": e.target.description,
                "events": e.events.map { $0.sorted() as Any } ?? NSNull(),
                "orgs": e.orgs.map { $0.sorted() as Any } ?? NSNull(),
                "pending": s.pending, "failed": s.failedKept,
                "delivered_total": Int(s.stats["delivered"] ?? "") ?? 0,
                "failed_total": Int(s.stats["failed"] ?? "") ?? 0,
                "last_success": time("last_success_ms"),
                "last_error": s.stats["last_error"].map { $0 as Any } ?? NSNull(),
                "last_error_at": time("last_error_ms"),
            ]
        }
        return .json(200, ["webhooks": list])
    }

    func failedWebhooks(_ webhooks: Webhooks, _ endpoint: WebhookEndpoint,
                        _ request: HTTPRequest) async -> HTTPResponse {
        var limit = 100
        for item in (request.query ?? "").split(separator: "&") where item.hasPrefix("limit=") {
            guard let n = Int(item.dropFirst(6)), (1...1000).contains(n) else {
                return .error(400, "must be a whole number from 1 to 1000", field: "limit")
            }
            limit = n
        }
        guard let records = try? await webhooks.store.failedList(endpoint.name, limit: limit)
        else { return webhookUnavailable() }
        let list: [[String: Any]] = records.map { id, record in
            let body = (record["body"] as? String).flatMap {
                try? JSONReading.value($0) as? [String: Any]
            } ?? [:]
            return [
                "event_id": WebhookEvent.streamID(sortable: id),
                "type": body["type"] ?? NSNull(),
                "message_id": body["message_id"] ?? NSNull(),
                "attempts": record["attempts"] ?? 0,
                "error": record["error"] ?? "",
                "failed_at": (record["failed_ms"] as? NSNumber)
                    .map { timestamp(ms: $0.int64Value) as Any } ?? NSNull(),
            ]
        }
        return .json(200, ["endpoint": endpoint.name, "failed": list])
    }

    func retryWebhooks(_ webhooks: Webhooks, _ endpoint: WebhookEndpoint, eventID: String?)
        async -> HTTPResponse
    {
        let ids: [String]
        if let eventID {
            guard let id = WebhookEvent.sortable(eventID) else {
                return .error(404, "no such failed delivery", field: "event_id")
            }
            ids = [id]
        } else {
            // At most this many per request: a long list goes back in a few calls.
            guard let all = try? await webhooks.store.failedIDs(endpoint.name, limit: 1000)
            else { return webhookUnavailable() }
            ids = all
        }
        guard let count = try? await webhooks.store.retryFailed(endpoint.name, ids: ids,
                                                                 nowMs: nowMs())
        else { return webhookUnavailable() }
        if eventID != nil && count == 0 {
            return .error(404, "no such failed delivery", field: "event_id")
        }
        logger.notice("webhook deliveries retried by an operator", ("endpoint", endpoint.name),
                      ("count", String(count)))
        return .json(200, ["endpoint": endpoint.name, "retried": count])
    }

    private func webhookUnavailable() -> HTTPResponse {
        .error(503, "the queue is unavailable; try again", headers: ["Retry-After": "5"])
    }
}
