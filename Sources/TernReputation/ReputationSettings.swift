// The reputation monitor's settings, each with its variable, default and reason.

import Foundation
import TernCore
import TernMail

public struct ReputationSettings: Sendable {
    public let common: CommonSettings
    /// TERN_POOLS: the pools whose IPs are watched (the scheduler reads the same setting).
    public let pools: Pools
    /// TERN_POOL_ALL_LISTED: what a pool does when none of its IPs may be used.
    public let allListed: [String: AllListedBehaviour]
    /// TERN_DNS_RESOLVER: required here. Blocklists answer by who asks, so the operator must
    /// name a resolver of their own; there is no default that could reach the Internet.
    public let dnsResolver: SocketAddress
    /// TERN_DNS_TIMEOUT: one lookup's limit; a timeout is an unknown answer.
    public let dnsTimeout: Duration
    /// TERN_DNSBL_FILE: the blocklists (JSON, see config/dnsbl.json).
    public let blocklists: BlocklistSet
    /// TERN_DNSBL_INTERVAL: each IP is checked once per interval, the IPs spread over it.
    public let interval: Duration
    /// TERN_DNSBL_CLEAN_CHECKS: clean rounds in a row before a listed IP returns.
    public let cleanChecks: Int
    /// TERN_WARMUP: IPs on a warm-up plan, `ip` or `ip@yyyy-mm-dd` (the plan's first day;
    /// without one, the day the monitor first sees it), comma-separated.
    public let warmup: [String: Int?]
    /// TERN_WARMUP_SCHEDULE and TERN_WARMUP_MIN_SAMPLE: the daily caps and the smallest
    /// day worth judging.
    public let warmupPolicy: WarmupPolicy
    /// TERN_PROVIDERS_FILE: the provider profiles, read as the scheduler reads them, so
    /// statistics and warm-up caps are kept under the names the scheduler throttles by.
    public let providers: ProviderCatalog

    /// TERN_METRICS_LISTEN: /metrics and /health (default 127.0.0.1:9104; `off` for none).
    public let metricsListen: SocketAddress?

    public init(_ env: Environment, common: CommonSettings) throws {
        self.common = common
        metricsListen = try MetricsListen.parse(env, default: "127.0.0.1:9104")
        pools = try Pools(env)
        allListed = try AllListedBehaviour.parse(env.string("TERN_POOL_ALL_LISTED",
                                                            default: "hold"), pools: pools)
        guard let resolver = env.values["TERN_DNS_RESOLVER"], !resolver.isEmpty else {
            throw ConfigError("TERN_DNS_RESOLVER", "required: the resolver blocklist "
                + "lookups go through, e.g. 127.0.0.1:53 for a resolver on this host")
        }
        dnsResolver = try env.address("TERN_DNS_RESOLVER", default: resolver)
        dnsTimeout = try env.duration("TERN_DNS_TIMEOUT", default: .seconds(30))
        blocklists = try BlocklistSet(file: env.string("TERN_DNSBL_FILE",
                                                       default: "/etc/tern/dnsbl.json"))
        interval = try env.duration("TERN_DNSBL_INTERVAL", default: .seconds(900))
        guard interval >= .seconds(1) else {
            throw ConfigError("TERN_DNSBL_INTERVAL", "must be at least 1s")
        }
        cleanChecks = try env.int("TERN_DNSBL_CLEAN_CHECKS", default: 2, range: 1...100)

        var warmup: [String: Int?] = [:]
        let known = Set(pools.byName.values.joined().map(\.address))
        for item in env.string("TERN_WARMUP", default: "").split(separator: ",") {
            let parts = item.trimmingCharacters(in: .whitespaces).split(separator: "@")
            let ip = parts.first.map(String.init) ?? ""
            guard known.contains(ip), !ip.isEmpty else {
                throw ConfigError("TERN_WARMUP", "'\(ip)' is not an address of TERN_POOLS")
            }
            var start: Int?
            if parts.count == 2 {
                guard let d = WarmupPlan.day(text: String(parts[1])) else {
                    throw ConfigError("TERN_WARMUP", "'\(parts[1])' is not a day like 2026-12-01")
                }
                start = d
            }
            warmup[ip] = start
        }
        self.warmup = warmup
        var policy = WarmupPolicy()
        if let raw = env.values["TERN_WARMUP_SCHEDULE"], !raw.isEmpty {
            let caps = raw.split(separator: ",").compactMap {
                Int($0.trimmingCharacters(in: .whitespaces))
            }
            guard !caps.isEmpty, caps.count == raw.split(separator: ",").count,
                  caps.allSatisfy({ $0 > 0 })
            else {
                throw ConfigError("TERN_WARMUP_SCHEDULE", "'\(raw)' is not a list of daily caps")
            }
            policy.schedule = WarmupSchedule(caps: caps)
        }
        policy.minSample = try env.int("TERN_WARMUP_MIN_SAMPLE", default: 100,
                                       range: 1...1_000_000)
        warmupPolicy = policy
        providers = try ProviderCatalog.load(overrides: env.values["TERN_PROVIDERS_FILE"])
    }
}
