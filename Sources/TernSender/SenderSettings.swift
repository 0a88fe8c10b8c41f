// The sender's settings, each with its variable, default and reason.

import Foundation
import TernCore
import TernMail
import TernSMTP

public struct SenderSettings: Sendable {
    public let common: CommonSettings
    /// TERN_DNS_RESOLVER: the one DNS server asked, `127.0.0.1:53` by default (a resolver on
    /// this host). The system resolver is never used.
    public let dnsResolver: SocketAddress
    /// TERN_DNS_TIMEOUT: longest wait for one DNS answer before the attempt is deferred.
    public let dnsTimeout: Duration
    /// TERN_SMTP_PORT: the port of every MX host, 25 by default (SMTP's assigned port).
    /// Tests point it at the loopback test world.
    public let smtpPort: UInt16
    /// TERN_VERP_DOMAIN and TERN_VERP_SECRET (hex, at least 16 bytes): the signed return
    /// paths; the bounce receiver must hold the same pair.
    public let verp: VERP
    /// TERN_SENDER_CONCURRENCY: deliveries in flight at once (default 2000). Each costs a
    /// task, its message and, while it talks, a connection: a few tens of KB.
    public let concurrency: Int
    /// TERN_MAX_MESSAGES_PER_CONNECTION: the most messages one SMTP session carries before
    /// QUIT, whatever the provider profile allows (default 100); 1 turns connection reuse off.
    public let maxMessagesPerConnection: Int
    /// TERN_CONNECTION_IDLE: an idle session is closed with QUIT after this (default 30s).
    public let connectionIdle: Duration
    /// TERN_GROUP_MAX_CONNECTIONS: the most connections one source IP may have open to one
    /// provider across all senders, whatever its profile's `connectionsPerIP` (default 10),
    /// held as leases in Redis.
    public let groupMaxConnections: Int
    /// TERN_GROUP_CONNECTION_WAIT: how long a message waits for a connection when its group
    /// has all it may open; then the attempt defers (default 2m).
    public let groupConnectionWait: Duration
    /// TERN_SENDER_CLAIM_IDLE: `ready` entries pending this long on another sender (a dead
    /// one) are taken over. It must exceed the longest attempt; this process keeps its own
    /// in-flight entries fresh, so only abandoned ones ever look this idle.
    public let claimIdle: Duration
    /// TERN_SENDER_GRACE: on shutdown, how long deliveries in flight may take to finish;
    /// those still running then are abandoned and stay pending for a later claim.
    public let grace: Duration
    /// TERN_SMTP_TIMEOUT_{CONNECT,GREETING,EHLO,MAIL,RCPT,DATA,BLOCK,TEXT,DOT,QUIT}: the waits
    /// of RFC 5321 §4.5.3.2 (defaults are its minimums) and three of Tern's own.
    public let timeouts: SMTPClientTimeouts
    /// TERN_HOSTNAME: the EHLO name when a `ready` entry carries none.
    public let hostname: String
    /// TERN_TLS_POLICY (default opportunistic) and TERN_TLS_POLICY_DOMAINS
    /// (`example.com=required,foo.example=disabled`): STARTTLS per recipient domain.
    public let tlsPolicies: TLSPolicies
    /// TERN_TLS_CA_FILE: the CAs certificates are checked against (PEM); nil uses the
    /// system's trust store.
    public let tlsCAFile: String?
    /// TERN_TLS_FALLBACK_TTL: how long an MX host whose TLS handshake failed is sent to in
    /// clear text without trying TLS (default 1h).
    public let tlsFallbackTTL: Duration

    /// TERN_PROVIDERS_FILE: the provider profiles whose connection limits apply, the same
    /// file the scheduler reads.
    public let providers: ProviderCatalog

    /// TERN_METRICS_LISTEN: /metrics and /health (default 127.0.0.1:9102, or 9110 + N for
    /// a numeric TERN_INSTANCE N, as `tern-sender@N` sets it; `off` for none).
    public let metricsListen: SocketAddress?

    public init(_ env: Environment, common: CommonSettings) throws {
        metricsListen = try MetricsListen.parse(env, default: MetricsListen.senderDefault(env))
        self.common = common
        dnsResolver = try env.address("TERN_DNS_RESOLVER", default: "127.0.0.1:53")
        dnsTimeout = try env.duration("TERN_DNS_TIMEOUT", default: .seconds(30))
        smtpPort = UInt16(try env.int("TERN_SMTP_PORT", default: 25, range: 1...65535))
        verp = try VERP(env)
        concurrency = try env.int("TERN_SENDER_CONCURRENCY", default: 2000,
                                  range: 1...100_000)
        maxMessagesPerConnection = try env.int("TERN_MAX_MESSAGES_PER_CONNECTION",
                                               default: 100, range: 1...1_000_000)
        connectionIdle = try env.duration("TERN_CONNECTION_IDLE", default: .seconds(30))
        groupMaxConnections = try env.int("TERN_GROUP_MAX_CONNECTIONS", default: 10,
                                          range: 1...100_000)
        groupConnectionWait = try env.duration("TERN_GROUP_CONNECTION_WAIT",
                                               default: .seconds(120))
        claimIdle = try env.duration("TERN_SENDER_CLAIM_IDLE", default: .seconds(600))
        guard claimIdle >= .seconds(1) else {
            throw ConfigError("TERN_SENDER_CLAIM_IDLE", "must be at least 1s")
        }
        grace = try env.duration("TERN_SENDER_GRACE", default: .seconds(30))
        var t = SMTPClientTimeouts()
        t.connect = try env.duration("TERN_SMTP_TIMEOUT_CONNECT", default: t.connect)
        t.greeting = try env.duration("TERN_SMTP_TIMEOUT_GREETING", default: t.greeting)
        t.ehlo = try env.duration("TERN_SMTP_TIMEOUT_EHLO", default: t.ehlo)
        t.mail = try env.duration("TERN_SMTP_TIMEOUT_MAIL", default: t.mail)
        t.rcpt = try env.duration("TERN_SMTP_TIMEOUT_RCPT", default: t.rcpt)
        t.dataInitiation = try env.duration("TERN_SMTP_TIMEOUT_DATA", default: t.dataInitiation)
        t.dataBlock = try env.duration("TERN_SMTP_TIMEOUT_BLOCK", default: t.dataBlock)
        t.text = try env.duration("TERN_SMTP_TIMEOUT_TEXT", default: t.text)
        t.dataTermination = try env.duration("TERN_SMTP_TIMEOUT_DOT", default: t.dataTermination)
        t.quit = try env.duration("TERN_SMTP_TIMEOUT_QUIT", default: t.quit)
        timeouts = t
        hostname = env.string("TERN_HOSTNAME", default: ProcessInfo.processInfo.hostName)
        let policy = env.string("TERN_TLS_POLICY", default: "opportunistic")
        guard let fallback = TLSPolicy(rawValue: policy) else {
            throw ConfigError("TERN_TLS_POLICY",
                              "'\(policy)' is not opportunistic, required or disabled")
        }
        switch TLSPolicies.parseDomains(env.string("TERN_TLS_POLICY_DOMAINS", default: "")) {
        case .success(let domains):
            tlsPolicies = TLSPolicies(default: fallback, domains: domains)
        case .failure(let error):
            throw ConfigError("TERN_TLS_POLICY_DOMAINS", "'\(error.entry)' is not "
                + "domain=policy with a policy of opportunistic, required or disabled")
        }
        let ca = env.string("TERN_TLS_CA_FILE", default: "")
        tlsCAFile = ca.isEmpty ? nil : ca
        tlsFallbackTTL = try env.duration("TERN_TLS_FALLBACK_TTL", default: .seconds(3600))
        providers = try ProviderCatalog.load(overrides: env.values["TERN_PROVIDERS_FILE"])
    }

    /// The client TLS context and policies; a CA file that cannot be read is a
    /// configuration error.
    public func clientTLS() throws -> SMTPClientTLS {
        let context: TLSContext
        do {
            context = try TLSContext.client(caFile: tlsCAFile)
        } catch {
            throw ConfigError("TERN_TLS_CA_FILE", "\(error)")
        }
        return SMTPClientTLS(context: context, policies: tlsPolicies,
                             fallbacks: TLSFallbackCache(ttl: tlsFallbackTTL))
    }
}
