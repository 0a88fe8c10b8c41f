// The webhook settings: the endpoints (TERN_WEBHOOKS) and how hard the API tries each post.
// A bad value stops the API at start naming the variable, as every other setting does.
//
// TERN_WEBHOOKS is a JSON array, or the path of a file holding it (a path keeps secrets out
// of the environment; under systemd, a credential). Each endpoint:
//
//   {"name": "crm", "url": "https://hooks.example.com/tern", "secret": "…",
//    "old_secrets": ["…"],
//    "events": ["delivered", "bounced"], "orgs": ["acme"], "connect": "203.0.113.7"}
//
// `events` and `orgs` are optional filters (all when absent; events about no organisation,
// such as `ip_listed`, never pass an `orgs` filter). A host name is resolved through
// TERN_DNS_RESOLVER (never the system's resolver); `connect`, optional, names the IP to
// connect to instead.

import Foundation
import TernCore
import TernDNS
import TernMail

/// One configured receiver of events.
public struct WebhookEndpoint: Sendable, Equatable {
    /// 1 to 64 of a-z, 0-9, _ and -: names its Redis keys, metrics and routes.
    public let name: String
    public let url: String
    public let target: HTTPTarget
    /// The HMAC keys, as the octets of their UTF-8 text: usually one; during a rotation the
    /// new and the old, and each post carries a signature by each.
    public let secrets: [[UInt8]]
    /// The event types posted here; nil for every type.
    public let events: Set<String>?
    /// The organisations whose events are posted here; nil for every event.
    public let orgs: Set<String>?

    /// Whether an event of `type` about `org` (nil: about no organisation) goes here.
    public func wants(type: String, org: String?) -> Bool {
        if let events, !events.contains(type) { return false }
        guard let orgs else { return true }
        return org.map(orgs.contains) ?? false
    }
}

public struct WebhookSettings: Sendable {
    /// Every type the daemons write on `events`; a filter naming another is a typo.
    public static let eventTypes: Set<String> = Set(
        [EventKind.accepted, .delivered, .deferred, .bounced, .complained, .expired,
         .suppressed, .cancelled, .ipPaused, .breakerOpened, .breakerClosed].map(\.rawValue)
            + [IPEventKind.ipListed.rawValue, IPEventKind.ipDelisted.rawValue])

    /// TERN_WEBHOOKS: the endpoints (above). Empty: no webhooks, and the API reads no stream.
    public let endpoints: [WebhookEndpoint]
    /// TERN_WEBHOOK_TIMEOUT: how long one post may take, connecting to the end of the
    /// response header (default 10s); a slower endpoint counts as failed for that attempt.
    public let timeout: Duration
    /// TERN_WEBHOOK_RETRY_FOR: how long a failing event is retried, from its first failure,
    /// before it is given up and kept in the failed list (default 24h).
    public let backoff: WebhookBackoff
    /// TERN_WEBHOOK_CONCURRENCY: posts in flight per endpoint per API process (default 8).
    public let concurrency: Int
    /// TERN_WEBHOOK_CLAIM_IDLE: `events` entries another API process has held this long
    /// unprocessed (it died) are taken over (default 60s).
    public let claimIdle: Duration
    /// TERN_WEBHOOK_FAILED_KEEP: given-up deliveries kept per endpoint for a retry; the
    /// oldest go first (default 10000).
    public let failedKeep: Int
    /// TERN_TLS_CA_FILE, shared with the sender: the CAs an https endpoint's certificate is
    /// checked against; unset uses the system's trust store.
    public let caFile: String?
    /// TERN_DNS_RESOLVER, shared with the other daemons: the one DNS server asked for the
    /// addresses of endpoints named by host (default 127.0.0.1:53). Answers are kept for
    /// their TTL.
    public let dnsResolver: SocketAddress

    public init(_ env: Environment) throws {
        let raw = env.string("TERN_WEBHOOKS", default: "")
        endpoints = raw.isEmpty ? [] : try WebhookSettings.parse(raw)
        timeout = try env.duration("TERN_WEBHOOK_TIMEOUT", default: .seconds(10))
        guard timeout >= .milliseconds(100) else {
            throw ConfigError("TERN_WEBHOOK_TIMEOUT", "must be at least 100ms")
        }
        backoff = WebhookBackoff(
            first: try env.duration("TERN_WEBHOOK_BACKOFF", default: .seconds(10)),
            max: try env.duration("TERN_WEBHOOK_BACKOFF_MAX", default: .seconds(3600)),
            retryFor: try env.duration("TERN_WEBHOOK_RETRY_FOR", default: .seconds(86400)))
        guard backoff.first > .zero, backoff.max >= backoff.first else {
            throw ConfigError("TERN_WEBHOOK_BACKOFF", "must be above 0 and at most "
                              + "TERN_WEBHOOK_BACKOFF_MAX")
        }
        concurrency = try env.int("TERN_WEBHOOK_CONCURRENCY", default: 8, range: 1...256)
        claimIdle = try env.duration("TERN_WEBHOOK_CLAIM_IDLE", default: .seconds(60))
        failedKeep = try env.int("TERN_WEBHOOK_FAILED_KEEP", default: 10000,
                                 range: 1...1_000_000)
        let ca = env.string("TERN_TLS_CA_FILE", default: "")
        caFile = ca.isEmpty ? nil : ca
        dnsResolver = try env.address("TERN_DNS_RESOLVER", default: "127.0.0.1:53")
    }

    /// Whether some endpoint's host must be resolved.
    public var needsResolver: Bool { endpoints.contains { $0.target.address == nil } }

    /// The endpoints from the setting's text: JSON, or the path of a file of JSON.
    static func parse(_ raw: String) throws -> [WebhookEndpoint] {
        let name = "TERN_WEBHOOKS"
        var text = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        if !text.hasPrefix("[") {
            guard let data = FileManager.default.contents(atPath: text) else {
                throw ConfigError(name, "'\(text)' is neither a JSON array nor a readable file")
            }
            text = String(decoding: data, as: UTF8.self)
        }
        guard let list = try? JSONReading.value(Array(text.utf8)) as? [[String: Any]] else {
            throw ConfigError(name, "is not a JSON array of endpoint objects")
        }
        var endpoints: [WebhookEndpoint] = []
        for item in list {
            let endpoint = try endpoint(item)
            guard !endpoints.contains(where: { $0.name == endpoint.name }) else {
                throw ConfigError(name, "two endpoints are named \(endpoint.name)")
            }
            endpoints.append(endpoint)
        }
        return endpoints
    }

    static func endpoint(_ item: [String: Any]) throws -> WebhookEndpoint {
        let v = "TERN_WEBHOOKS"
        let known: Set = ["name", "url", "secret", "old_secrets", "events", "orgs", "connect"]
        if let extra = item.keys.first(where: { !known.contains($0) }) {
            throw ConfigError(v, "unknown field '\(extra)'")
        }
        guard let name = item["name"] as? String, APIKeys.isOrgName(name) else {
            throw ConfigError(v, "each endpoint needs a name of 1 to 64 of a-z, 0-9, _ and -")
        }
        guard let url = item["url"] as? String,
              let target = HTTPTarget(url: url, connect: item["connect"] as? String),
              target.address != nil || DNSResolver.isPlausibleName(target.host) else {
            throw ConfigError(v, "\(name): url must be http(s)://host[:port]/path, the host a "
                              + "name or an IP, and 'connect' an IP if given")
        }
        // RFC 2104 §3: a key shorter than the hash output weakens the MAC.
        guard let secret = item["secret"] as? String, (16...512).contains(secret.utf8.count)
        else {
            throw ConfigError(v, "\(name): secret must be 16 to 512 octets")
        }
        // Rotation: receivers switch to the new secret while posts still verify with the old.
        let old = try strings(item["old_secrets"], v, "\(name): old_secrets") ?? []
        guard old.allSatisfy({ (16...512).contains($0.utf8.count) }) else {
            throw ConfigError(v, "\(name): old_secrets must be 16 to 512 octets each")
        }
        let events = try strings(item["events"], v, "\(name): events")
        if let unknown = events?.first(where: { !eventTypes.contains($0) }) {
            throw ConfigError(v, "\(name): '\(unknown)' is not an event type; types are "
                              + eventTypes.sorted().joined(separator: ", "))
        }
        let orgs = try strings(item["orgs"], v, "\(name): orgs")
        return WebhookEndpoint(name: name, url: url, target: target,
                               secrets: [Array(secret.utf8)] + old.sorted().map { Array($0.utf8) },
                               events: events, orgs: orgs)
    }

    static func strings(_ value: Any?, _ v: String, _ what: String) throws -> Set<String>? {
        guard let value else { return nil }
        guard let list = value as? [String], !list.isEmpty else {
            throw ConfigError(v, "\(what) must be a non-empty array of strings")
        }
        return Set(list)
    }
}

/// When a failed post is tried again: exponential back-off from `first`, doubling up to
/// `max`, for `retryFor` after the event's first failure; then it is given up.
public struct WebhookBackoff: Sendable, Equatable {
    public let first: Duration
    public let max: Duration
    public let retryFor: Duration

    public enum Next: Sendable, Equatable {
        case retry(atMs: Int64)
        case giveUp
    }

    public init(first: Duration, max: Duration, retryFor: Duration) {
        self.first = first
        self.max = max
        self.retryFor = retryFor
    }

    /// The wait after the `failures`-th failure in a row: first × 2^(failures − 1), capped
    /// at `max`, then up to a fifth shorter by `jitter` (0 ..< 1), so that the retries of
    /// many events failed together do not all arrive at the same moment.
    public func delayMs(failures: Int, jitter: Double) -> Int64 {
        let firstMs = first.milliseconds, maxMs = max.milliseconds
        let doublings = Swift.min(Swift.max(failures - 1, 0), 40)
        let nominal = firstMs > maxMs >> doublings ? maxMs : Swift.min(maxMs, firstMs << doublings)
        let shortened = Int64(Double(nominal) * Swift.min(Swift.max(jitter, 0), 1) / 5)
        return Swift.max(nominal - shortened, 1)
    }

    /// What follows a failed attempt at `nowMs`, the event having first failed at
    /// `firstFailureMs`: a retry no later than the deadline, so that the last try is made
    /// at the deadline itself, or giving up once the deadline has passed.
    public func next(failures: Int, firstFailureMs: Int64, nowMs: Int64, jitter: Double)
        -> Next
    {
        let deadline = firstFailureMs + retryFor.milliseconds
        guard nowMs < deadline else { return .giveUp }
        return .retry(atMs: Swift.min(nowMs + delayMs(failures: failures, jitter: jitter),
                                      deadline))
    }
}
