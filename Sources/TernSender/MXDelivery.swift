// One delivery attempt for one message: find where the recipient domain takes mail, then try
// its hosts in order until one answers in SMTP (RFC 5321 §5.1).
//
// A null MX fails the message at once without connecting (RFC 7505 §3); no MX means the
// domain's own address (RFC 5321 §5.1). Each host's addresses are tried in turn; a refused or
// silent connection moves on to the next address and host, a 554 greeting to the next host
// (RFC 5321 §3.1), and any other SMTP answer ends the attempt. When every host is exhausted
// the attempt defers, also when every host refused us in its greeting.
//
// Connections come from the `SessionPool`: an idle session to the same address from the same
// source IP, opened under the same STARTTLS policy, is reused. A new one is opened by
// `SMTPClient.open`, as a lone delivery would: STARTTLS by the recipient domain's policy, and
// under the opportunistic one a failed handshake is followed at once by a clear connection.
// A reused session that fails before the first reply of the transaction (the server closed
// it while idle, or says 421 to MAIL) costs nothing: the message is offered once more on a
// fresh connection.
//
// The provider of the recipient domain (by its name, else by the MX host, from the same catalog
// as the scheduler's) sets the session's limits: at most its `messagesPerConnection` messages
// on one session, and at most its `connectionsPerIP` sessions from one source IP to it, held
// as leases in Redis across every sender (`GroupLeases`, scope `{ip}|{provider}`, or
// `{ip}|mx:{host}` for a domain of no known provider: unrelated servers share nothing).

import TernCore
import TernMail
import TernSMTP
import TernDNS

public struct MXDelivery: Sendable {
    public let resolver: DNSResolver
    /// The port every MX host is reached on (TERN_SMTP_PORT).
    public let port: UInt16
    public let timeouts: SMTPClientTimeouts
    public let pool: SessionPool
    /// TERN_GROUP_CONNECTION_WAIT: how long a message waits for a connection.
    public let groupWait: Duration
    /// The provider profiles (TERN_PROVIDERS_FILE over the built-in ones).
    public let providers: ProviderCatalog
    /// TERN_GROUP_MAX_CONNECTIONS: the most connections any profile may allow one IP.
    public let maxConnections: Int
    public let logger: Logger
    /// STARTTLS settings; nil sends everything in clear text.
    public let tls: SMTPClientTLS?

    public init(resolver: DNSResolver, port: UInt16, timeouts: SMTPClientTimeouts,
                pool: SessionPool, groupWait: Duration, logger: Logger,
                tls: SMTPClientTLS? = nil, providers: ProviderCatalog = .builtin,
                maxConnections: Int = .max) {
        self.providers = providers
        self.maxConnections = maxConnections
        self.resolver = resolver
        self.port = port
        self.timeouts = timeouts
        self.pool = pool
        self.groupWait = groupWait
        self.logger = logger
        self.tls = tls
    }

    /// Delivers `message` to the MX hosts of `domain`, connecting from `source` (nil: the
    /// kernel picks) and announcing `helo`.
    public func deliver(_ message: OutboundMessage, domain: String,
                        source: SocketAddress?, helo: String) async -> DeliveryResult {
        let plan: MXPlan
        switch await resolver.mx(domain) {
        case .records(let records): plan = MXOrdering.plan(for: domain, records: records)
        case .noData: plan = MXOrdering.plan(for: domain, records: [])
        case .nxDomain:
            // RFC 3463 §3.2: 5.1.2, bad destination system address.
            return DeliveryResult(outcome: .failed, stage: .dns,
                                  detail: "the recipient domain \(domain) does not exist "
                                      + "(DNS NXDOMAIN)", status: Self.status(5, 1, 2))
        case .failure(let why):
            // RFC 3463 §3.5: 4.4.3, directory server failure.
            return DeliveryResult(outcome: .deferred, stage: .dns,
                                  detail: "MX lookup for \(domain) failed: \(why)",
                                  status: Self.status(4, 4, 3))
        }
        let hosts: [String]
        var implicit = false
        switch plan {
        case .nullMX:
            // RFC 7505 §3 and §4.2: 5.1.10, the domain accepts no mail.
            return DeliveryResult(outcome: .failed, stage: .dns,
                                  detail: "\(domain) publishes a null MX: it accepts no mail "
                                      + "(RFC 7505)", status: Self.status(5, 1, 10))
        case .implicit(let host):
            hosts = [host]
            implicit = true
        case .hosts(let list): hosts = list
        }
        return await tryHosts(hosts, implicit: implicit, message: message,
                              domain: domain, source: source, helo: helo)
    }

    private func tryHosts(_ hosts: [String], implicit: Bool, message: OutboundMessage,
                          domain: String, source: SocketAddress?, helo: String)
        async -> DeliveryResult
    {
        var unreachable: DeliveryResult?
        var refusal: DeliveryResult?
        var lookupTrouble: String?
        for host in hosts {
            let (addresses, trouble) = await addresses(of: host, source: source)
            if let trouble { lookupTrouble = trouble }
            hostLoop: for address in addresses {
                guard let remote = SocketAddress(host: address, port: port) else { continue }
                if Task.isCancelled {
                    return DeliveryResult(outcome: .deferred, stage: .connect, mxHost: host,
                                          address: address, detail: "cancelled")
                }
                let result = await attempt(message, to: remote, mxHost: host, domain: domain,
                                           source: source, helo: helo)
                switch result.fallback {
                case .none, .withoutTLS:
                    return result
                case .nextAddress:
                    logger.debug("no SMTP answer, trying on", ("mx", host),
                                 ("addr", address), ("why", result.text))
                    unreachable = result
                case .nextHost:
                    logger.debug("host refused service, trying the next MX", ("mx", host),
                                 ("addr", address), ("code", String(result.code)))
                    refusal = result
                    break hostLoop
                }
            }
        }
        if var refusal, unreachable == nil, lookupTrouble == nil {
            // Every host turned us away in its greeting (RFC 5321 §3.1). That is about the
            // connecting side (most often our IP's standing), not the recipient: wait.
            refusal.outcome = .deferred
            refusal.fallback = .none
            return refusal
        }
        if var unreachable {
            unreachable.fallback = .none
            return unreachable
        }
        if var refusal {
            // Some host refused for good, another could not be asked: try again later.
            refusal.outcome = .deferred
            refusal.fallback = .none
            refusal.detail = "another MX host could not be asked: " + (lookupTrouble ?? "")
            return refusal
        }
        if let lookupTrouble {
            return DeliveryResult(outcome: .deferred, stage: .dns, detail: lookupTrouble,
                                  status: Self.status(4, 4, 3))
        }
        // RFC 3463 §3.5: 5.4.4, unable to route: the names exist but lead nowhere.
        let what = implicit ? "\(domain) has no MX and no address record"
            : "no MX host of \(domain) has an address record"
        return DeliveryResult(outcome: .failed, stage: .dns, detail: what,
                              status: Self.status(5, 4, 4))
    }

    /// One address: a pooled session or a new one, the message, the session given back.
    private func attempt(_ message: OutboundMessage, to remote: SocketAddress, mxHost: String,
                         domain: String, source: SocketAddress?, helo: String)
        async -> DeliveryResult
    {
        let policy = SMTPClient.policy(tls, domain: domain, mxHost: mxHost)
        let key = SessionKey(source: source?.host ?? "", mxHost: mxHost, address: remote.host,
                             port: remote.port, tls: policy)
        let profile = providers.provider(forDomain: domain, mxHosts: [mxHost])
        let scope = Self.leaseScope(source: key.source, profile: profile, mxHost: mxHost)
        let limit = min(profile.connectionsPerIP, maxConnections)
        for _ in 0..<2 {
            let session: PooledSession
            var reused = false
            var note = ""
            switch await pool.session(for: key, group: scope, limit: limit,
                                      maxMessages: profile.messagesPerConnection,
                                      wait: groupWait, connect: {
                await SMTPClient.open(to: remote, mxHost: mxHost, from: source, helo: helo,
                                      timeouts: timeouts, tls: tls, domain: domain)
            }) {
            case .failed(let result): return result
            case .busy:
                // RFC 3463 §3.5: 4.4.5, system congestion (our own limit for the provider).
                return DeliveryResult(outcome: .deferred, stage: .connect, mxHost: mxHost,
                                      address: remote.host, detail: "\(scope) had all its "
                                          + "\(limit) connections busy for \(groupWait)",
                                      status: Self.status(4, 4, 5))
            case .opened(let s, let why):
                session = s
                note = why
            case .reused(let s):
                session = s
                reused = true
            }
            var result = await session.connection.send(message)
            result.append(note: note)
            await pool.giveBack(session)
            if reused, Self.isStale(result) {
                logger.debug("reused session was gone; opening a new one",
                             ("mx", mxHost), ("addr", remote.host), ("why", result.text))
                continue
            }
            return result
        }
        return DeliveryResult(outcome: .deferred, stage: .connect, mxHost: mxHost,
                              address: remote.host, detail: "no usable session",
                              status: Self.status(4, 4, 2))
    }

    /// What a connection lease counts against: the source IP ("*" when the kernel picks)
    /// and the provider, or the MX host for a domain of no known provider.
    static func leaseScope(source: String, profile: ProviderProfile, mxHost: String) -> String {
        let ip = source.isEmpty ? "*" : source
        return ip + "|" + (profile.name == "default" ? "mx:" + mxHost.lowercased() : profile.name)
    }

    /// A reused session that ended before the transaction got a real answer: the server
    /// dropped it while idle (closed, or a 421 waiting in the buffer).
    static func isStale(_ r: DeliveryResult) -> Bool {
        r.outcome == .deferred && r.stage == .mail && (r.reply == nil || r.code == 421)
    }

    /// The addresses to try for `host`: A records for an IPv4 source, AAAA for an IPv6
    /// one, both (A first) when the kernel picks. Also says why a lookup failed, if one did.
    private func addresses(of host: String, source: SocketAddress?)
        async -> ([String], String?)
    {
        let families: [Bool] = switch source?.family {
        case .inet: [false]
        case .inet6: [true]
        case nil: [false, true]
        }
        var found: [String] = []
        var trouble: String?
        for ipv6 in families {
            switch await resolver.addresses(host, ipv6: ipv6) {
            case .records(let list): found += list
            case .noData, .nxDomain: break
            case .failure(let why):
                trouble = "\(ipv6 ? "AAAA" : "A") lookup for \(host) failed: \(why)"
            }
        }
        return (found, trouble)
    }

    static func status(_ c: Int, _ s: Int, _ d: Int) -> EnhancedStatus {
        EnhancedStatus(statusClass: c, subject: s, detail: d)
    }
}
