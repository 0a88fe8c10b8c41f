// What operators look at and change besides messages: the provider throttles, the
// organisations' circuit breakers and the suppression lists.
//
//   GET    /v1/throttles                      every source IP's rate per provider
//   GET    /v1/breakers                       every organisation's breaker
//   GET    /v1/suppressions/{org}             the organisation's suppressed addresses
//                                              (`?format=csv` for an RFC 4180 export,
//                                              `?format=json` the default; others 400)
//   PUT    /v1/suppressions/{org}/{address}   suppress an address
//   DELETE /v1/suppressions/{org}/{address}   mail it again
//
// A key bound to an organisation sees and changes only that organisation; the throttles
// belong to the whole system and need a key bound to none.

import Foundation
import TernCore
import TernMail

extension APIDaemon {
    func operatorRoute(_ request: HTTPRequest) async -> HTTPResponse? {
        let path = request.path
        let readOnly = request.method == "GET" || request.method == "HEAD"
        if path == "/v1/throttles" {
            guard readOnly else { return notAllowed("GET, HEAD") }
            return await throttles(request)
        }
        if path == "/v1/breakers" {
            guard readOnly else { return notAllowed("GET, HEAD") }
            return await breakers(request)
        }
        let prefix = "/v1/suppressions/"
        guard path.hasPrefix(prefix) else { return nil }
        let parts = path.dropFirst(prefix.count)
            .split(separator: "/", omittingEmptySubsequences: false)
            .map { String($0).removingPercentEncoding ?? "" }
        switch parts.count {
        case 1:
            guard readOnly else { return notAllowed("GET, HEAD") }
            return await suppressions(org: parts[0], request)
        case 2:
            guard request.method == "PUT" || request.method == "DELETE" else {
                return notAllowed("PUT, DELETE")
            }
            return await changeSuppression(org: parts[0], address: parts[1], request)
        default:
            return notFound()
        }
    }

    func throttles(_ request: HTTPRequest) async -> HTTPResponse {
        if let refusal = authorizeOperator(request, what: "the throttles") { return refusal }
        guard let saved = await read(["HGETALL", keys.throttles]) else { return unavailable() }
        var list: [[String: Any]] = []
        for (key, json) in saved.fieldMap.sorted(by: { $0.key < $1.key }) {
            guard var object = APIDaemon.jsonObject(json) else { continue }
            let at = key.lastIndex(of: "|") ?? key.endIndex
            object["ip"] = String(key[..<at])
            object["provider"] = at < key.endIndex ? String(key[key.index(after: at)...]) : ""
            for (field, name) in [("holdUntilMs", "hold_until"), ("changedMs", "changed")] {
                if let ms = (object.removeValue(forKey: field) as? NSNumber)?.int64Value, ms > 0 {
                    object[name] = timestamp(ms: ms)
                }
            }
            list.append(object)
        }
        return .json(200, ["throttles": list])
    }

    func breakers(_ request: HTTPRequest) async -> HTTPResponse {
        let bound: String?
        switch authorize(request) {
        case .failure(let refusal): return refusal.response
        case .success(let grant): bound = grant.org
        }
        guard let saved = await read(["HGETALL", keys.breakers]) else { return unavailable() }
        var list: [[String: Any]] = []
        for (org, json) in saved.fieldMap.sorted(by: { $0.key < $1.key })
        where bound == nil || bound == org {
            guard let object = APIDaemon.jsonObject(json) else { continue }
            var entry: [String: Any] = ["org": org, "state": object["state"] ?? "closed",
                                        "reason": object["reason"] ?? ""]
            if let ms = (object["openedMs"] as? NSNumber)?.int64Value, ms > 0 {
                entry["opened"] = timestamp(ms: ms)
            }
            list.append(entry)
        }
        return .json(200, ["breakers": list])
    }

    func suppressions(org: String, _ request: HTTPRequest) async -> HTTPResponse {
        if let refusal = checkOrg(org, request) { return refusal }
        let formats = (request.query ?? "").split(separator: "&")
            .filter { $0.hasPrefix("format=") }.map { $0.dropFirst("format=".count) }
        guard formats.count <= 1, ["json", "csv"].contains(formats.first ?? "json") else {
            return .error(400, "must be json or csv, given once", field: "format")
        }
        guard let members = await read(["SMEMBERS", keys.suppressions(org)]) else {
            return unavailable()
        }
        let addresses = (members.array ?? []).compactMap(\.string).sorted()
        if formats.first == "csv" {
            // An export for other systems (RFC 4180; a quoted local part is quoted again).
            return .text(200, SuppressionExport.csv(addresses),
                         contentType: SuppressionExport.mediaType)
        }
        return .json(200, ["org": org, "addresses": addresses])
    }

    func changeSuppression(org: String, address: String, _ request: HTTPRequest) async
        -> HTTPResponse
    {
        if let refusal = checkOrg(org, request) { return refusal }
        guard case .success(let parsed) = EmailAddress.parse(address) else {
            return .error(400, "is not an email address", field: "address")
        }
        // Removing takes the form lists held before listKey too.
        let member = parsed.listKey
        let command = request.method == "PUT"
            ? ["SADD", keys.suppressions(org), member]
            : ["SREM", keys.suppressions(org)] + parsed.suppressionMembers
        guard let changed = await read(command)?.int else { return unavailable() }
        logger.notice(request.method == "PUT" ? "address suppressed" : "suppression removed",
                      ("org", org), ("address", member))
        if request.method == "DELETE" && changed == 0 {
            return .error(404, "the address is not suppressed", field: "address")
        }
        return .json(request.method == "PUT" && changed == 1 ? 201 : 200,
                     ["org": org, "address": member, "suppressed": request.method == "PUT"])
    }

    /// A refusal when the key may not act for `org`, or `org` is not a valid name.
    func checkOrg(_ org: String, _ request: HTTPRequest) -> HTTPResponse? {
        switch authorize(request) {
        case .failure(let refusal): return refusal.response
        case .success(let grant):
            let bound = grant.org
            guard (1...64).contains(org.utf8.count), org.utf8.allSatisfy({
                (97...122).contains($0) || (48...57).contains($0) || $0 == 95 || $0 == 45
            }) else {
                return .error(400, "must be 1 to 64 characters of a-z, 0-9, _ and -", field: "org")
            }
            // Another organisation's list is "not found" for a bound key, as messages are.
            if let bound, bound != org { return .error(404, "no such organisation", field: "org") }
            return nil
        }
    }

    func read(_ command: [String]) async -> RedisValue? {
        do {
            let value = try await redis.run(command)
            if case .error(let e) = value { throw RedisError.server(e) }
            return value
        } catch {
            logger.error("could not read operator state: \(error)")
            return nil
        }
    }

    func unavailable() -> HTTPResponse {
        .error(503, "the queue is unavailable; try again", headers: ["Retry-After": "5"])
    }
}
