// The bounce receiver's settings, each with its variable, default and reason.

import Foundation
import TernCore
import TernMail
import TernSMTP

public struct BounceSettings: Sendable {
    public let common: CommonSettings
    /// TERN_BOUNCE_LISTEN: where to listen for bounces (default 0.0.0.0:25, the port remote
    /// MTAs use). A socket passed by systemd (socket activation) wins over this.
    public let listen: SocketAddress
    /// TERN_METRICS_LISTEN: /metrics and /health (default 127.0.0.1:9103; `off` for none).
    public let metricsListen: SocketAddress?
    /// TERN_VERP_DOMAIN and TERN_VERP_SECRET: the return paths that are ours, and the key
    /// that verifies them (required; the sender signs with the same ones).
    public let verp: VERP
    /// TERN_FBL_ADDRESSES: comma list of feedback-loop addresses (the ones registered with
    /// mailbox providers for complaint reports), lowercased; mail to them is taken and
    /// classified too (default: none).
    public let feedbackAddresses: Set<String>
    /// TERN_HOSTNAME: the name in the greeting (default: the host name).
    public let hostname: String
    /// TERN_BOUNCE_MAX_SIZE: largest bounce taken, in octets (default 10 MB; a DSN is small,
    /// but some return the whole original message).
    public let maxMessageSize: Int
    /// TERN_BOUNCE_MAX_LINE: longest line of message text taken, in octets without CR LF
    /// (default 10000). RFC 5321 §4.5.3.1.6 sets 1000, but real bounces quote longer lines;
    /// a message with a longer one is refused with 554 5.6.0.
    public let maxTextLine: Int
    /// TERN_BOUNCE_MAX_RECIPIENTS: recipients per transaction (default 100, RFC 5321
    /// §4.5.3.1.8's minimum; a bounce has one).
    public let maxRecipients: Int
    /// TERN_BOUNCE_MAX_SESSIONS: sessions at once (default 200).
    public let maxSessions: Int
    /// TERN_BOUNCE_MAX_SESSIONS_PER_CLIENT: sessions at once from one address (default 20).
    public let maxSessionsPerClient: Int
    /// TERN_BOUNCE_MAX_COMMANDS: commands in one session before 421 (default 1000).
    public let maxCommands: Int
    /// TERN_BOUNCE_MAX_ERRORS: refused commands in one session before 421 (default 20).
    public let maxErrors: Int
    /// TERN_BOUNCE_SESSION_TIMEOUT: longest a session may last in all (default 30m).
    public let sessionTimeout: Duration
    /// TERN_BOUNCE_IDLE_TIMEOUT: wait for each line (default 5m, RFC 5321 §4.5.3.2.7).
    public let idleTimeout: Duration
    /// TERN_BOUNCE_GREET_DELAY: pause before the greeting in which a client that speaks is
    /// refused as an early talker (default 500ms; 0 checks only what already arrived).
    public let greetingDelay: Duration
    /// TERN_BOUNCE_DRAIN_TIMEOUT: on shutdown, time given to open transactions (default 20s,
    /// under systemd's default stop timeout of 90s).
    public let drainTimeout: Duration
    /// TERN_BOUNCE_TLS_CERT and TERN_BOUNCE_TLS_KEY: PEM certificate chain and private key
    /// for STARTTLS; both or neither (then no STARTTLS). Re-read on SIGHUP.
    public let tlsCertificate: String?
    public let tlsKey: String?
    /// TERN_DNS_RESOLVER: the one DNS server asked for DKIM keys (default 127.0.0.1:53, a
    /// resolver on this host; never the system resolver).
    public let dnsResolver: SocketAddress
    /// TERN_BOUNCE_DKIM_TIMEOUT: longest wait for a DKIM key before the report is recorded
    /// with dkim=temperror (default 5s; the remote MTA waits for our reply meanwhile).
    public let dkimTimeout: Duration

    public init(_ env: Environment, common: CommonSettings) throws {
        self.common = common
        listen = try env.address("TERN_BOUNCE_LISTEN", default: "0.0.0.0:25")
        metricsListen = try MetricsListen.parse(env, default: "127.0.0.1:9103")
        verp = try VERP(env)
        var fbl: Set<String> = []
        for item in env.string("TERN_FBL_ADDRESSES", default: "").split(separator: ",") {
            let address = item.trimmingCharacters(in: .whitespaces).lowercased()
            guard case .success = EmailAddress.parse(address), address.contains("@") else {
                throw ConfigError("TERN_FBL_ADDRESSES", "'\(address)' is not an address")
            }
            fbl.insert(address)
        }
        feedbackAddresses = fbl
        hostname = env.string("TERN_HOSTNAME", default: ProcessInfo.processInfo.hostName)
        maxMessageSize = try env.int("TERN_BOUNCE_MAX_SIZE", default: 10 * 1024 * 1024,
                                     range: 1024...(1 << 30))
        maxTextLine = try env.int("TERN_BOUNCE_MAX_LINE", default: 10000, range: 998...1_000_000)
        maxRecipients = try env.int("TERN_BOUNCE_MAX_RECIPIENTS", default: 100, range: 1...10_000)
        maxSessions = try env.int("TERN_BOUNCE_MAX_SESSIONS", default: 200, range: 1...100_000)
        maxSessionsPerClient = try env.int("TERN_BOUNCE_MAX_SESSIONS_PER_CLIENT", default: 20,
                                           range: 1...100_000)
        maxCommands = try env.int("TERN_BOUNCE_MAX_COMMANDS", default: 1000, range: 10...1_000_000)
        maxErrors = try env.int("TERN_BOUNCE_MAX_ERRORS", default: 20, range: 1...10_000)
        sessionTimeout = try env.duration("TERN_BOUNCE_SESSION_TIMEOUT", default: .seconds(1800))
        idleTimeout = try env.duration("TERN_BOUNCE_IDLE_TIMEOUT", default: .seconds(300))
        greetingDelay = try env.duration("TERN_BOUNCE_GREET_DELAY", default: .milliseconds(500))
        drainTimeout = try env.duration("TERN_BOUNCE_DRAIN_TIMEOUT", default: .seconds(20))
        let cert = env.string("TERN_BOUNCE_TLS_CERT", default: "")
        let key = env.string("TERN_BOUNCE_TLS_KEY", default: "")
        if cert.isEmpty != key.isEmpty {
            throw ConfigError(cert.isEmpty ? "TERN_BOUNCE_TLS_CERT" : "TERN_BOUNCE_TLS_KEY",
                              "STARTTLS needs both TERN_BOUNCE_TLS_CERT and TERN_BOUNCE_TLS_KEY")
        }
        dnsResolver = try env.address("TERN_DNS_RESOLVER", default: "127.0.0.1:53")
        dkimTimeout = try env.duration("TERN_BOUNCE_DKIM_TIMEOUT", default: .seconds(5))
        tlsCertificate = cert.isEmpty ? nil : cert
        tlsKey = key.isEmpty ? nil : key
    }

    /// The STARTTLS certificate, loaded; nil when none is configured. A file that cannot be
    /// read or a key that does not match is a configuration error.
    public func loadTLS() throws -> ReloadableTLSContext? {
        guard let tlsCertificate, let tlsKey else { return nil }
        do {
            return try ReloadableTLSContext(certificateFile: tlsCertificate, keyFile: tlsKey)
        } catch {
            throw ConfigError("TERN_BOUNCE_TLS_CERT", "\(error)")
        }
    }

    /// The SMTP server's configuration from these settings.
    public var server: SMTPServerConfig {
        SMTPServerConfig(hostname: hostname, maxMessageSize: maxMessageSize,
                         maxRecipients: maxRecipients, maxTextLine: maxTextLine,
                         lineBufferCap: max(65536, maxTextLine + 2), maxCommands: maxCommands,
                         maxErrors: maxErrors, idleTimeout: idleTimeout,
                         maxSessions: maxSessions, maxSessionsPerClient: maxSessionsPerClient,
                         sessionTimeout: sessionTimeout, greetingDelay: greetingDelay,
                         drainTimeout: drainTimeout)
    }
}
