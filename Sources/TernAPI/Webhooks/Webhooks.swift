// Webhooks: the API posts every event the daemons write on `events` to the configured
// endpoints, signed, in order per message, at least once.
//
// Two loops per process. The reader consumes `events` through the consumer group `webhooks`
// (shared by every API process; entries a dead process held are claimed after
// TERN_WEBHOOK_CLAIM_IDLE) and, per entry, puts the event in the Redis queue of each endpoint
// that wants it and acknowledges the entry in one script. Per endpoint, a poster takes due
// events from Redis (up to TERN_WEBHOOK_CONCURRENCY at once, each the first of its message's
// queue), posts them, and records the outcome: gone, or back in line with exponential
// back-off, or given up after TERN_WEBHOOK_RETRY_FOR and kept for an operator's retry.
// `WebhookStore` holds the Redis side and why order holds.
//
// Limits: `events` is capped at about a million entries, and an API that falls further
// behind than that loses the oldest unread events; it is acceptable while posting is far
// faster than the daemons write events.
//
// Trust: the endpoints are the operator's, but their answers are not trusted beyond their
// status code; the text of a failed answer is shown to operators made printable and short.

import Foundation
import Synchronization
import TernCore
import TernDNS
import TernMail

struct Webhooks: Sendable {
    let settings: WebhookSettings
    let store: WebhookStore
    let consumer: String
    let logger: Logger
    let metrics: WebhookMetrics
    let tls: TLSContext?
    /// For endpoints named by host: TERN_DNS_RESOLVER, answers kept for their TTL.
    let resolver: DNSResolver?
    /// Per endpoint, the connections kept open between posts (as many as may post at once).
    let connections: [String: HTTPConnectionPool]

    /// Nil when no endpoint is configured: then the API reads no stream at all.
    init?(settings: WebhookSettings, redis: RedisClient, keys: Keys, consumer: String,
          logger: Logger, registry: MetricsRegistry) throws {
        guard !settings.endpoints.isEmpty else { return nil }
        self.settings = settings
        store = WebhookStore(redis: redis, keys: keys)
        self.consumer = consumer
        self.logger = logger.with(("subsystem", "webhooks"))
        metrics = WebhookMetrics(registry: registry, store: store,
                                 endpoints: settings.endpoints.map(\.name))
        if settings.endpoints.contains(where: \.target.secure) {
            do {
                tls = try TLSContext.client(caFile: settings.caFile)
            } catch {
                throw ConfigError("TERN_TLS_CA_FILE", "\(error)")
            }
        } else {
            tls = nil
        }
        resolver = settings.needsResolver
            ? try DNSResolver(forwarder: settings.dnsResolver, timeout: settings.timeout) : nil
        connections = Dictionary(uniqueKeysWithValues: settings.endpoints.map {
            ($0.name, HTTPConnectionPool(maxIdle: settings.concurrency))
        })
    }

    /// A key being posted is leased this long: past the lookup's and the post's timeouts, so
    /// that only a process that died lets another post the same event.
    var leaseMs: Int64 { 2 * settings.timeout.milliseconds + 5_000 }

    /// Creates the consumer group; called before the API says it is ready, so that no
    /// event written after that is missed.
    func prepare() async {
        do {
            try await store.ensureGroup()
        } catch {
            logger.warning("cannot create the webhooks group yet: \(error)")
        }
    }

    /// Reads `events` and posts to every endpoint until shutdown.
    func run(shutdown: Shutdown) async {
        for endpoint in settings.endpoints {
            logger.info("webhook endpoint", ("endpoint", endpoint.name),
                        ("url", endpoint.target.description),
                        ("events", endpoint.events?.sorted().joined(separator: ",") ?? "all"))
        }
        while !shutdown.isRequested {
            do {
                try await store.ensureGroup()
                break
            } catch {
                logger.error("cannot create the webhooks group: \(error)")
                try? await Task.sleep(for: .seconds(1))
            }
        }
        await withDiscardingTaskGroup { group in
            group.addTask { await self.read(shutdown: shutdown) }
            for endpoint in settings.endpoints {
                group.addTask { await self.post(to: endpoint, shutdown: shutdown) }
            }
        }
        connections.values.forEach { $0.closeAll() }
        await resolver?.close()
    }

    // MARK: Reading events

    func read(shutdown: Shutdown) async {
        let redis = store.redis
        let stream = store.keys.stream(.events)
        var consumer = StreamConsumer(redis: redis, stream: stream, group: StreamName.events.group,
                                      consumer: consumer, logger: logger)
        consumer.claimIdle = settings.claimIdle
        await consumer.run(shutdown: shutdown, apply: fanOut) { entry in
            try await redis.run("XACK", stream, StreamName.events.group, entry.id)
        }
    }

    @Sendable func fanOut(_ entry: StreamEntry) async throws {
        let event = WebhookEvent(entry: entry)
        if event == nil {
            // Written by a Tern daemon, so a malformed entry is a bug there; it is dropped.
            logger.critical("an events entry is not an event", ("entry", entry.id),
                            ("fields", "\(entry.fields)"))
        }
        let names = event.map { e in
            settings.endpoints.filter { $0.wants(type: e.type, org: e.org) }.map(\.name)
        } ?? []
        try await store.fanOut(entryID: entry.id, event: event, endpoints: names, nowMs: nowMs())
    }

    // MARK: Posting

    /// Claims due events of `endpoint` while it has free slots and posts each in a task.
    func post(to endpoint: WebhookEndpoint, shutdown: Shutdown) async {
        let inFlight = InFlight()
        await withDiscardingTaskGroup { group in
            while !shutdown.isRequested {
                let free = settings.concurrency - inFlight.count
                if free <= 0 {
                    try? await Task.sleep(for: .milliseconds(20))
                    continue
                }
                do {
                    let now = nowMs()
                    let (claims, next) = try await store.claim(
                        endpoint.name, limit: free, nowMs: now, leaseUntilMs: now + leaseMs)
                    for claim in claims {
                        inFlight.add(1)
                        group.addTask {
                            await self.deliver(claim, to: endpoint)
                            inFlight.add(-1)
                        }
                    }
                    if claims.isEmpty {
                        connections[endpoint.name]?.closeExpired()
                        // Idle: look again when the next key is due, at least 4 times a second
                        // (events fanned out by any process are due at once).
                        let wait = min(max((next ?? now + 250) - now, 10), 250)
                        try? await Task.sleep(for: .milliseconds(wait))
                    }
                } catch {
                    logger.error("claiming webhook deliveries failed: \(error)",
                                 ("endpoint", endpoint.name))
                    try? await Task.sleep(for: .seconds(1))
                }
            }
        }
    }

    /// One attempt at one event, and its outcome written back.
    func deliver(_ claim: WebhookStore.Claim, to endpoint: WebhookEndpoint) async {
        let attempt = claim.failures + 1
        let body = Array(claim.body.utf8)
        let headers: HTTPHeaders = [
            "Content-Type": "application/json",
            "User-Agent": "Tern-Webhooks/1",
            "Tern-Event-Id": claim.eventID,
            "Tern-Attempt": String(attempt),
            WebhookSignature.header: WebhookSignature.sign(
                body: body, secrets: endpoint.secrets, unixSeconds: nowMs() / 1000),
        ]
        let started = ContinuousClock.now
        var failure: String?
        do {
            let address = try await self.address(of: endpoint.target)
            let response = try await HTTPClient.post(endpoint.target, at: address,
                                                     headers: headers, body: body,
                                                     timeout: settings.timeout, tls: tls,
                                                     pool: connections[endpoint.name])
            if !(200...299).contains(response.status) {
                let text = String(decoding: response.body.prefix(200), as: UTF8.self)
                failure = "HTTP \(response.status)"
                    + (text.isEmpty ? "" : ": " + Logger.printable(text, limit: 200))
            }
        } catch {
            failure = error.description
        }
        metrics.latency.observe((ContinuousClock.now - started).seconds, endpoint.name)
        let log = logger.with(("endpoint", endpoint.name), ("event_id", claim.eventID),
                              ("key", claim.orderKey), ("attempt", String(attempt)))
        do {
            try await record(claim, endpoint: endpoint, failure: failure, log: log)
        } catch {
            // The lease runs out and the event is posted again: a duplicate, never a loss.
            log.error("cannot record a webhook outcome: \(error)")
        }
    }

    /// The address of a target named by host: its first A record, else its first AAAA.
    func address(of target: HTTPTarget) async throws(HTTPClientError) -> SocketAddress? {
        guard target.address == nil else { return nil }
        guard let resolver else { throw .connect("no resolver for \(target.host)") }
        var why = "\(target.host) has no address"
        for ipv6 in [false, true] {
            switch await resolver.addresses(target.host, ipv6: ipv6) {
            case .records(let list):
                if let a = list.first.flatMap({ SocketAddress(host: $0, port: target.port) }) {
                    return a
                }
            case .noData, .nxDomain: continue
            case .failure(let reason): why = "DNS: \(reason)"
            }
        }
        throw .connect(why)
    }

    func record(_ claim: WebhookStore.Claim, endpoint: WebhookEndpoint, failure: String?,
                log: Logger) async throws {
        let now = nowMs()
        guard let failure else {
            try await store.delivered(endpoint.name, claim, nowMs: now)
            metrics.deliveries.inc(endpoint.name, "delivered")
            log.debug("webhook delivered")
            return
        }
        let failures = claim.failures + 1
        let first = claim.firstFailureMs > 0 ? claim.firstFailureMs : now
        switch settings.backoff.next(failures: failures, firstFailureMs: first, nowMs: now,
                                     jitter: Double.random(in: 0..<1)) {
        case .retry(let at):
            try await store.failed(endpoint.name, claim, error: failure, failures: failures,
                                   firstFailureMs: first, retryAtMs: at, nowMs: now)
            metrics.deliveries.inc(endpoint.name, "failed")
            log.notice("webhook failed, will retry", ("error", failure),
                       ("retry_at", timestamp(ms: at)))
        case .giveUp:
            try await store.gaveUp(endpoint.name, claim, error: failure, failures: failures,
                                   nowMs: now, keep: settings.failedKeep)
            metrics.deliveries.inc(endpoint.name, "given_up")
            log.warning("webhook given up", ("error", failure))
        }
    }
}

/// Posts in flight for one endpoint in this process.
final class InFlight: Sendable {
    private let value = Atomic<Int>(0)
    var count: Int { value.load(ordering: .relaxed) }
    func add(_ n: Int) { value.add(n, ordering: .relaxed) }
}

extension Duration {
    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
