// What operators stop, start and look at while Tern runs (Contract/Control.swift holds the
// Redis side, shared with ternctl):
//
//   POST   /v1/messages/{id}/cancel     cancel a message not yet in a sender's hands
//   GET    /v1/pauses                   the active pauses
//   PUT    /v1/pauses/{kind}/{name}     pause a group (pool:domain), provider, pool or org;
//                                       body {"reason": "..."} (optional); the name must be
//                                       a pool of TERN_POOLS, a provider profile, or both
//                                       (a group), and is kept lowercased, in A-labels
//   DELETE /v1/pauses/{kind}/{name}     resume it
//   GET    /v1/groups                   waiting groups: queue depth, provider, pauses
//   GET    /v1/providers                providers: queues, each IP's rate and its reason
//   GET    /v1/pools                    pools: IPs active, listed, in warm-up; queues
//
// A key bound to an organisation cancels only its messages, sees only its own pause and
// pauses or resumes only its own organisation, and only when no operator paused it (a
// pause's `by` names the setter's scope and key id); the rest belongs to the whole system
// and needs an operator key (bound to no organisation, or `@ops`).

import Foundation
import TernCore
import TernMail

extension APIDaemon {
    var control: ControlStore { ControlStore(redis: redis, keys: keys) }

    func controlRoute(_ request: HTTPRequest) async -> HTTPResponse? {
        let path = request.path
        let readOnly = request.method == "GET" || request.method == "HEAD"
        if path.hasPrefix("/v1/messages/") && path.hasSuffix("/cancel") {
            let id = path.dropFirst("/v1/messages/".count).dropLast("/cancel".count)
            guard !id.contains("/") else { return nil }
            guard request.method == "POST" else { return notAllowed("POST") }
            return await cancel(String(id), request)
        }
        let views = ["/v1/groups", "/v1/providers", "/v1/pools"]
        if views.contains(path) {
            guard readOnly else { return notAllowed("GET, HEAD") }
            return await stateView(path, request)
        }
        if path == "/v1/pauses" {
            guard readOnly else { return notAllowed("GET, HEAD") }
            return await listPauses(request)
        }
        guard path.hasPrefix("/v1/pauses/") else { return nil }
        let parts = path.dropFirst("/v1/pauses/".count)
            .split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            .map { String($0).removingPercentEncoding ?? "" }
        guard parts.count == 2 else { return notFound() }
        guard request.method == "PUT" || request.method == "DELETE" else {
            return notAllowed("PUT, DELETE")
        }
        return await changePause(kind: parts[0], name: parts[1], request)
    }

    // MARK: Cancel

    func cancel(_ id: String, _ request: HTTPRequest) async -> HTTPResponse {
        let bound: String?
        switch authorize(request) {
        case .failure(let refusal): return refusal.response
        case .success(let grant): bound = grant.org
        }
        guard MessageID.isValid(id) else {
            return .error(400, "is not a message id (26 lowercase base32 characters)",
                          field: "id")
        }
        let outcome: CancelOutcome
        do {
            outcome = try await control.cancel(
                id: id, org: bound, by: bound.map { "organisation \($0)" } ?? "an operator",
                recordTTL: settings.lifetime.recordTTL)
        } catch {
            logger.error("could not cancel a message: \(error)", ("message_id", id))
            return controlUnavailable()
        }
        switch outcome {
        case .cancelled:
            logger.notice("message cancelled", ("message_id", id), ("org", bound ?? ""))
            return .json(200, ["id": id, "state": MessageState.cancelled.rawValue])
        case .notFound:
            return .error(404, "no such message", field: "id")
        case .refused(let state):
            let why = state == .sending ? "it is in a sender's hands" : "it is already final"
            return .error(409, "the message is \(state.rawValue): \(why); it cannot be "
                          + "cancelled", field: "state")
        }
    }

    // MARK: Pauses

    func listPauses(_ request: HTTPRequest) async -> HTTPResponse {
        let bound: String?
        switch authorize(request) {
        case .failure(let refusal): return refusal.response
        case .success(let grant): bound = grant.org
        }
        guard let all = try? await control.pauses() else { return controlUnavailable() }
        let visible = all.filter { bound == nil || ($0.kind == .org && $0.name == bound) }
        return .json(200, ["pauses": visible.map(\.object)])
    }

    func changePause(kind kindText: String, name given: String, _ request: HTTPRequest) async
        -> HTTPResponse
    {
        let grant: APIKeys.Grant
        switch authorize(request) {
        case .failure(let refusal): return refusal.response
        case .success(let g): grant = g
        }
        let bound = grant.org
        guard let kind = PauseKind(rawValue: kindText) else {
            return .error(404, "a pause is of a group, provider, pool or org", field: "kind")
        }
        let name: String
        switch pauseNames.canonical(kind, given) {
        case .success(let canonical): name = canonical
        case .failure(.malformed(let problem)): return .error(400, problem, field: "name")
        case .failure(.unknown(let problem)): return .error(404, problem, field: "name")
        }
        if let bound, kind != .org || name != bound {
            return .error(403, "a key bound to organisation \(bound) pauses only that "
                          + "organisation", field: "kind")
        }
        // A bound key changes only the pauses a key of its organisation set.
        let owner = bound.map(Pause.ownerPrefix(org:))
        if request.method == "DELETE" {
            guard let change = try? await control.resume(kind, name, owner: owner) else {
                return controlUnavailable()
            }
            switch change {
            case .refused(let by): return notOwned(kind, name, by: by)
            case .notPaused: return .error(404, "\(kind.rawValue) \(name) is not paused")
            default: break
            }
            logger.notice("resumed", ("kind", kind.rawValue), ("name", name),
                          ("key_id", grant.keyID))
            return .json(200, ["kind": kind.rawValue, "name": name, "paused": false])
        }
        var reason = ""
        if !request.body.isEmpty {
            if let refusal = checkMediaType(request) { return refusal }
            guard let body = (try? JSONReading.value(request.body)) as? [String: Any]
            else { return .error(400, "must be a JSON object", field: "body") }
            if let extra = Set(body.keys).subtracting(["reason"]).sorted().first {
                return .error(400, "is not a field of a pause", field: extra)
            }
            guard let text = body["reason"] as? String else {
                return .error(400, "must be text", field: "reason")
            }
            if let problem = Pause.reasonProblem(text) {
                return .error(422, problem, field: "reason")
            }
            reason = text
        }
        let pause = Pause(kind: kind, name: name, reason: reason, by: Self.setter(grant),
                          sinceMs: nowMs())
        guard let change = try? await control.pause(pause, owner: owner) else {
            return controlUnavailable()
        }
        if case .refused(let by) = change { return notOwned(kind, name, by: by) }
        logger.notice("paused", ("kind", kind.rawValue), ("name", name), ("reason", reason),
                      ("key_id", grant.keyID))
        return .json(change == .created ? 201 : 200, pause.object)
    }

    /// The pauses' names are checked against the pools and providers the scheduler knows.
    var pauseNames: PauseNames {
        PauseNames(pools: settings.ipPools, providers: settings.providers)
    }

    /// A pause's `by` when set through the API: the key's scope and its id.
    static func setter(_ grant: APIKeys.Grant) -> String {
        switch grant.scope {
        case .all: return "all:" + grant.keyID
        case .ops: return "ops:" + grant.keyID
        case .org(let org): return Pause.ownerPrefix(org: org) + grant.keyID
        }
    }

    private func notOwned(_ kind: PauseKind, _ name: String, by: String) -> HTTPResponse {
        .error(403, "the pause of \(kind.rawValue) \(name) was set by \(by); a key bound to "
               + "an organisation changes only the pauses a key of its organisation set",
               field: "name")
    }

    // MARK: State

    func stateView(_ path: String, _ request: HTTPRequest) async -> HTTPResponse {
        if let refusal = authorizeOperator(request, what: path) { return refusal }
        let view = QueueView(redis: redis, keys: keys, providers: settings.providers,
                             pools: settings.ipPools)
        do {
            switch path {
            case "/v1/groups":
                let (groups, truncated) = try await view.groups()
                return .json(200, ["groups": groups, "truncated": truncated])
            case "/v1/providers":
                return .json(200, ["providers": try await view.providerStates()])
            default:
                return .json(200, ["pools": try await view.poolStates()])
            }
        } catch {
            logger.error("could not read the queues: \(error)")
            return controlUnavailable()
        }
    }

    private func controlUnavailable() -> HTTPResponse {
        .error(503, "the queue is unavailable; try again", headers: ["Retry-After": "5"])
    }
}
