// An organisation's recorded engagement: how engaged each recipient is, 0-100. The scheduler
// reads it at intake for a message sent without a score of its own (docs/architecture.md,
// "Engagement priority").
//
//   PUT    /v1/engagement/{org}             {"address": score, ...}: set many at once; a
//                                           score of null removes the address
//   GET    /v1/engagement/{org}/{address}   one address's score (null when none is recorded)
//
// A key bound to an organisation reads and sets only its own.

import Foundation
import TernCore
import TernMail

extension APIDaemon {
    func engagementRoute(_ request: HTTPRequest) async -> HTTPResponse? {
        let prefix = "/v1/engagement/"
        guard request.path.hasPrefix(prefix) else { return nil }
        let parts = request.path.dropFirst(prefix.count)
            .split(separator: "/", omittingEmptySubsequences: false)
            .map { String($0).removingPercentEncoding ?? "" }
        switch parts.count {
        case 1:
            guard request.method == "PUT" else { return notAllowed("PUT") }
            return await setEngagement(org: parts[0], request)
        case 2:
            guard request.method == "GET" || request.method == "HEAD" else {
                return notAllowed("GET, HEAD")
            }
            return await engagement(org: parts[0], address: parts[1], request)
        default:
            return notFound()
        }
    }

    func setEngagement(org: String, _ request: HTTPRequest) async -> HTTPResponse {
        if let refusal = checkOrg(org, request) { return refusal }
        if let refusal = checkMediaType(request) { return refusal }
        guard let object = (try? JSONReading.value(request.body)) as? [String: Any]
        else {
            return .error(400, "must be a JSON object of address to score", field: "body")
        }
        var set: [String] = [], removed: [String] = []
        for (address, value) in object.sorted(by: { $0.key < $1.key }) {
            guard let member = Self.engagementMember(address) else {
                return .error(422, "is not an email address", field: address)
            }
            if value is NSNull {
                removed.append(member)
                continue
            }
            guard let n = value as? NSNumber, !["c", "B"].contains(String(cString: n.objCType)),
                  n.doubleValue == n.doubleValue.rounded(), (0...100).contains(n.doubleValue)
            else {
                return .error(422, "must be an integer 0 to 100 or null", field: address)
            }
            set += [member, String(n.intValue)]
        }
        let key = keys.engagement(org)
        var commands: [[RedisArg]] = []
        if !set.isEmpty { commands.append((["HSET", key] + set).map { .text($0) }) }
        if !removed.isEmpty { commands.append((["HDEL", key] + removed).map { .text($0) }) }
        // "removed" counts the scores there were to remove, as HDEL answers.
        var removedCount = 0
        do {
            if !commands.isEmpty {
                let replies = try await redis.transaction(commands)
                if !removed.isEmpty { removedCount = replies.last?.int ?? 0 }
            }
        } catch {
            logger.error("could not record engagement: \(error)", ("org", org))
            return unavailable()
        }
        logger.notice("engagement recorded", ("org", org), ("set", String(set.count / 2)),
                      ("removed", String(removedCount)))
        return .json(200, ["org": org, "set": set.count / 2, "removed": removedCount])
    }

    func engagement(org: String, address: String, _ request: HTTPRequest) async
        -> HTTPResponse
    {
        if let refusal = checkOrg(org, request) { return refusal }
        guard let member = Self.engagementMember(address) else {
            return .error(400, "is not an email address", field: "address")
        }
        guard let value = await read(["HGET", keys.engagement(org), member]) else {
            return unavailable()
        }
        let score: Any = value.string.flatMap { Int($0) } ?? NSNull()
        return .json(200, ["org": org, "address": member, "engagement": score])
    }

    /// The store's form of an address, as the scheduler looks it up; nil when it is none.
    static func engagementMember(_ address: String) -> String? {
        guard case .success(let parsed) = EmailAddress.parse(address) else { return nil }
        return parsed.listKey
    }
}
