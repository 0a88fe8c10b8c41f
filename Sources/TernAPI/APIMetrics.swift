// What the API counts for /metrics (served on its own port beside /v1): send requests by
// answer, DKIM signatures, and the `dkim.*` fields of the Redis `counters` hash, which sum
// over every API process and survive restarts.

import TernCore
import TernMail

struct APIMetrics: Sendable {
    let registry = MetricsRegistry()
    let accepted: Counter
    let refused: Counter
    let dkim: Counter

    init(redis: RedisClient, keys: Keys) {
        accepted = registry.counter("tern_api_messages_accepted_total",
                                    "Messages accepted (202) and queued.")
        refused = registry.counter(
            "tern_api_messages_refused_total",
            "Send requests refused, by reason: unauthorized, forbidden, media_type, malformed, "
                + "invalid, unavailable, other.",
            labels: ["reason"])
        dkim = registry.counter("tern_api_dkim_messages_total",
                                "Accepted messages by DKIM result (signed, unsigned).",
                                labels: ["result"])
        registry.redisCounters(redis: redis, key: keys.counters, prefixes: ["dkim."])
        ProcessMetrics.register(in: registry)
    }

    /// Counts the answer to one POST /v1/send.
    func answered(_ response: HTTPResponse) {
        switch response.status {
        case 202: accepted.inc()
        case 400: refused.inc("malformed")
        case 401: refused.inc("unauthorized")
        case 403: refused.inc("forbidden")
        case 415: refused.inc("media_type")
        case 422: refused.inc("invalid")
        case 503: refused.inc("unavailable")
        default: refused.inc("other")
        }
    }
}
