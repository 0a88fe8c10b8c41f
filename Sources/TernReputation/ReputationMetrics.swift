// What the reputation monitor counts for /metrics: blocklist answers, each watched IP's
// listing per list, the active IPs of each pool as published in Redis, its DNS lookups and
// the streams it reads.

import TernCore
import TernDNS
import TernMail

struct ReputationMetrics: Sendable {
    let registry = MetricsRegistry()
    let dnsblLookups: Counter
    let listed: Gauge
    let dns: DNSMetrics

    init(redis: RedisClient, keys: Keys, pools: Pools) {
        dnsblLookups = registry.counter(
            "tern_reputation_dnsbl_lookups_total",
            "Blocklist lookups by list and result (listed, clean, unknown, error).",
            labels: ["list", "result"])
        listed = registry.gauge(
            "tern_reputation_ip_listed",
            "1 while the list lists the IP (as of its last round), 0 otherwise.",
            labels: ["ip", "list"])
        let active = registry.gauge(
            "tern_reputation_pool_active_ips",
            "IPs of the pool the scheduler may use, as published (every configured IP "
                + "before the first publication).",
            labels: ["pool"])
        dns = DNSMetrics(registry: registry)
        registry.redisCounters(redis: redis, key: keys.counters, prefixes: ["dnsbl."])
        registry.streamMetrics(redis: redis, streams: Self.streams(keys))
        ProcessMetrics.register(in: registry)
        let names = pools.byName.keys.sorted()
        registry.addCollector {
            let commands: [[RedisArg]] = names.map { ["GET", .text(keys.poolActive($0))] }
            guard !names.isEmpty,
                  let replies = try? await redis.pipeline(commands, within: .seconds(1))
            else { return }
            for (pool, reply) in zip(names, replies) {
                let usable = ActiveIPs.usable(pools.byName[pool] ?? [], published: reply.string)
                active.set(Double(usable.count), pool)
            }
        }
    }

    static func streams(_ keys: Keys) -> [ConsumedStream] {
        [StreamName.results, .inbound].map {
            ConsumedStream(name: $0.rawValue, key: keys.stream($0),
                           group: StreamName.reputationGroup)
        }
    }

    static func result(_ answer: BlocklistAnswer) -> String {
        switch answer {
        case .listed: return "listed"
        case .clean: return "clean"
        case .unknown: return "unknown"
        case .error: return "error"
        }
    }
}
