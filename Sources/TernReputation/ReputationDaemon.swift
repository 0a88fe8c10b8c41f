// The reputation monitor: checks every sending IP against DNS blocklists and its own
// identity (FCrDNS and EHLO name), publishes each pool's active IPs for the scheduler,
// counts delivery outcomes per IP and provider, and runs the warm-up plans.
//
// Four loops share one Redis client and one resolver: blocklist rounds (each IP once per
// TERN_DNSBL_INTERVAL, the IPs spread over it), the `results` and `inbound` consumers (group
// `reputation`, beside the scheduler's), and the warm-up's daily roll. Everything it decides
// is written with the reasons, so an operator can read why an IP is out.

import Foundation
import TernCore
import TernDNS
import TernMail

public struct ReputationDaemon: Daemon {
    let settings: ReputationSettings
    let logger: Logger
    let redis: RedisClient
    let keys: Keys
    let resolver: DNSResolver
    let metrics: ReputationMetrics

    /// One watched address: the EHLO names it announces and the pools it is in.
    struct Watched: Sendable {
        let address: String
        var helos: [String]
        var pools: [String]
    }

    public init(settings: ReputationSettings, logger: Logger) throws {
        self.settings = settings
        self.logger = logger
        self.redis = try RedisClient(url: settings.common.redisURL)
        self.keys = Keys(prefix: settings.common.redisPrefix)
        let metrics = ReputationMetrics(redis: redis, keys: keys, pools: settings.pools)
        self.metrics = metrics
        self.resolver = try DNSResolver(forwarder: settings.dnsResolver,
                                        timeout: settings.dnsTimeout, cache: false,
                                        metrics: metrics.dns)
    }

    public func run(shutdown: Shutdown, ready: @escaping @Sendable (String) -> Void) async throws {
        // Served from the start, so that /health says why while Redis is still missing.
        let endpoint = MetricsEndpoint(registry: metrics.registry, redis: redis,
                                       streams: ReputationMetrics.streams(keys))
        let metricsServer = Task {
            await endpoint.serve(listen: settings.metricsListen, shutdown: shutdown,
                                 logger: logger)
        }
        defer { metricsServer.cancel() }
        // Wait for Redis rather than exit: systemd would only restart us into the same state.
        while !(await redis.ping()) {
            if shutdown.isRequested { return }
            logger.warning("redis is not reachable yet", ("redis", redis.address.description))
            try? await Task.sleep(for: .seconds(2))
        }
        for stream in [StreamName.results, .inbound] {
            try await redis.ensureGroup(stream: keys.stream(stream),
                                        group: StreamName.reputationGroup)
        }
        let watched = watchedIPs()
        ready("watching \(watched.count) IP(s) on \(settings.blocklists.lists.count) list(s)")
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await blocklistLoop(watched, shutdown: shutdown) }
            group.addTask { await consume(.results, shutdown: shutdown) }
            group.addTask { await consume(.inbound, shutdown: shutdown) }
            group.addTask { await warmupLoop(shutdown: shutdown) }
            await shutdown.wait()
            group.cancelAll()
        }
        await metricsServer.value
        await resolver.close()
    }

    func watchedIPs() -> [Watched] {
        var byAddress: [String: Watched] = [:]
        var order: [String] = []
        for name in settings.pools.byName.keys.sorted() {
            for ip in settings.pools.byName[name]! where !ip.address.isEmpty {
                if byAddress[ip.address] == nil {
                    order.append(ip.address)
                    byAddress[ip.address] = Watched(address: ip.address, helos: [], pools: [])
                }
                if !byAddress[ip.address]!.helos.contains(ip.helo) {
                    byAddress[ip.address]!.helos.append(ip.helo)
                }
                byAddress[ip.address]!.pools.append(name)
            }
        }
        return order.map { byAddress[$0]! }
    }

    // MARK: Blocklist rounds

    func blocklistLoop(_ watched: [Watched], shutdown: Shutdown) async {
        var standings: [String: IPStanding] = [:]
        for w in watched { standings[w.address] = await loadStanding(w.address) }
        do {
            _ = try await redis.transaction(settings.pools.byName.keys.sorted().flatMap {
                publish(pool: $0, standings: standings)
            })
        } catch {
            logger.error("publishing the active IPs failed: \(error)")
        }
        guard !watched.isEmpty else { return }
        let clock = ContinuousClock()
        let slot = settings.interval / watched.count
        var due = watched.indices.map { clock.now + slot * $0 }
        while !shutdown.isRequested && !Task.isCancelled {
            let i = due.indices.min { due[$0] < due[$1] }!
            do {
                try await Task.sleep(until: due[i], clock: clock)
            } catch {
                return
            }
            await check(watched[i], standings: &standings)
            due[i] = max(due[i] + settings.interval, clock.now)
        }
    }

    /// One round for one IP: every list and the identity check, then the standing, the
    /// events and the pools' active sets written together.
    func check(_ ip: Watched, standings: inout [String: IPStanding]) async {
        let now = nowMs()
        let answers = await blocklistAnswers(ip.address)
        var standing = standings[ip.address] ?? IPStanding()
        let log = logger.with(("ip", ip.address))
        var errors: [String] = [], unknown: [String] = []
        for list in settings.blocklists.lists {
            switch answers[list.name] {
            case .error(let answer, let meaning):
                errors.append("\(list.name): \(answer) \(meaning)")
                log.error("blocklist answered with an error, not a listing: \(meaning); check "
                          + "TERN_DNS_RESOLVER and the list's terms of use",
                          ("list", list.name), ("zone", list.zone), ("answer", answer))
            case .unknown(let why):
                unknown.append("\(list.name): \(why)")
                log.warning("blocklist did not answer", ("list", list.name), ("why", why))
            default:
                break
            }
        }
        let change = standing.apply(answers, nowMs: now,
                                    cleanChecksNeeded: settings.cleanChecks)
        switch await identity(ip) {
        case .ok:
            standing.identity = "ok"
        case .failed(let why):
            if standing.identity != why {
                log.error("sending IP fails its identity check; not used: \(why)")
            }
            standing.identity = why
        case .unknown(let why):
            log.warning("identity check did not finish: \(why)")
        }
        standings[ip.address] = standing
        for list in settings.blocklists.lists {
            let isListed: Double = standing.listings[list.name] == nil ? 0 : 1
            metrics.listed.set(isListed, ip.address, list.name)
        }

        var cmds = stateCommands(ip, standing, errors: errors, unknown: unknown, nowMs: now)
        if !errors.isEmpty {
            cmds.append(["HINCRBY", .text(keys.counters), "dnsbl.error",
                         .text(String(errors.count))])
        }
        if let change {
            cmds.append(event(change, ip: ip, standing: standing, nowMs: now))
            if change == .listed {
                log.warning("ip listed; taken out of its pools", ("reason", standing.reason))
            } else {
                log.notice("ip delisted; back in its pools",
                           ("clean_checks", String(settings.cleanChecks)))
            }
        }
        for pool in ip.pools { cmds += publish(pool: pool, standings: standings) }
        do {
            _ = try await redis.transaction(cmds)
        } catch {
            // The next round writes the whole standing again.
            log.error("storing the ip's standing failed: \(error)")
        }
    }

    func blocklistAnswers(_ ip: String) async -> [String: BlocklistAnswer] {
        await withTaskGroup(of: (String, BlocklistAnswer)?.self) { group in
            for list in settings.blocklists.lists {
                guard let name = list.queryName(ip) else { continue }
                group.addTask {
                    // Lists answer with A records, for IPv6 addresses too (RFC 5782 §2.4).
                    let answer = list.classify(await resolver.addresses(name, ipv6: false))
                    metrics.dnsblLookups.inc(list.name, ReputationMetrics.result(answer))
                    return (list.name, answer)
                }
            }
            var out: [String: BlocklistAnswer] = [:]
            for await case let (name, answer)? in group { out[name] = answer }
            return out
        }
    }

    func identity(_ ip: Watched) async -> IdentityResult {
        var unknown: String?
        for helo in ip.helos {
            switch await IdentityCheck.check(ip: ip.address, ehlo: helo, resolver: resolver) {
            case .ok: continue
            case .failed(let why): return .failed(why)
            case .unknown(let why): unknown = why
            }
        }
        return unknown.map { .unknown($0) } ?? .ok
    }

    /// Commands that store an IP's standing and its listings.
    func stateCommands(_ ip: Watched, _ s: IPStanding, errors: [String], unknown: [String],
                       nowMs: Int64) -> [[RedisArg]] {
        let fields: [(String, String)] = [
            (IPField.status, s.status), (IPField.reason, s.reason),
            (IPField.since, String(s.listedSinceMs)),
            (IPField.cleanChecks, String(s.cleanChecks)), (IPField.checked, String(nowMs)),
            (IPField.identity, s.identity ?? ""), (IPField.identityChecked, String(nowMs)),
            (IPField.errors, errors.joined(separator: "; ")),
            (IPField.unknown, unknown.joined(separator: "; ")),
            (IPField.pools, ip.pools.joined(separator: ",")),
        ]
        var cmds: [[RedisArg]] = [["HSET", .text(keys.ipState(ip.address))]
            + fields.flatMap { [RedisArg.text($0.0), .text($0.1)] }]
        cmds.append(["DEL", .text(keys.ipListings(ip.address))])
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        for (name, listing) in s.listings.sorted(by: { $0.key < $1.key }) {
            let json = (try? encoder.encode(listing)).map { String(decoding: $0, as: UTF8.self) }
            cmds.append(["HSET", .text(keys.ipListings(ip.address)), .text(name),
                         .text(json ?? "{}")])
        }
        return cmds
    }

    func event(_ change: IPStanding.Change, ip: Watched, standing: IPStanding,
               nowMs: Int64) -> [RedisArg] {
        let kind: IPEventKind = change == .listed ? .ipListed : .ipDelisted
        var lists: [String: Any] = [:]
        for (name, l) in standing.listings { lists[name] = ["code": l.code, "meaning": l.meaning] }
        let object: [String: Any] = ["event": kind.rawValue, "at": timestamp(ms: nowMs),
                                     "ip": ip.address, "pools": ip.pools, "lists": lists]
        let json = (try? JSONSerialization.data(withJSONObject: object, options: .sortedKeys))
            .map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return xadd(keys.stream(.events), [
            (EntryField.event, kind.rawValue), (EntryField.sourceIP, ip.address),
            (EntryField.pool, ip.pools.joined(separator: ",")), (EntryField.json, json),
        ], maxLen: 1_000_000)
    }

    /// The command that publishes a pool's active IPs; a pool left with none is critical.
    func publish(pool: String, standings: [String: IPStanding]) -> [[RedisArg]] {
        let configured = settings.pools.byName[pool] ?? []
        let behaviour = settings.allListed[pool] ?? .hold
        let (active, exhausted) = PoolSelection.active(configured, standings: standings,
                                                       behaviour: behaviour)
        if exhausted {
            logger.critical("every IP of the pool is listed or failing its identity check",
                            ("pool", pool), ("behaviour", behaviour.rawValue),
                            ("sending_from", active.map(\.address).joined(separator: ",")))
        }
        return [["SET", .text(keys.poolActive(pool)), .text(ActiveIPs.encode(active))]]
    }

    func loadStanding(_ ip: String) async -> IPStanding {
        var s = IPStanding()
        guard let state = try? await redis.run("HGETALL", keys.ipState(ip)).fieldMap,
              let listings = try? await redis.run("HGETALL", keys.ipListings(ip)).fieldMap
        else { return s }
        s.listed = state[IPField.status] == "listed"
        s.listedSinceMs = Int64(state[IPField.since] ?? "") ?? 0
        s.cleanChecks = Int(state[IPField.cleanChecks] ?? "") ?? 0
        s.checkedMs = Int64(state[IPField.checked] ?? "") ?? 0
        s.identity = state[IPField.identity].flatMap { $0.isEmpty ? nil : $0 }
        for (name, json) in listings {
            if let l = try? JSONDecoder().decode(IPStanding.Listing.self, from: Data(json.utf8)) {
                s.listings[name] = l
            }
        }
        return s
    }
}
