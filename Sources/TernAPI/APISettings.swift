// The API daemon's settings, each with its variable, default and reason. A bad value stops
// the daemon at start with the variable named, rather than serving half-configured.

import Foundation
import TernCore
import TernMail

public struct APISettings: Sendable {
    public let common: CommonSettings
    /// TERN_API_LISTEN: address and port of the HTTP API (default 127.0.0.1:8025, loopback:
    /// put a TLS-terminating proxy in front to expose it). A systemd socket, if passed, wins.
    public let listen: SocketAddress
    /// TERN_API_KEYS: comma list of `key`, `key:org`, `key:@ops` or `key:@all` (APIKeys.swift);
    /// a key bound to an org may only send and read that org's messages, an @ops key may
    /// operate and read but not send. Required: an API without keys would refuse everyone.
    public let keys: APIKeys
    /// TERN_API_MAX_BODY: largest request body in octets (default 10485760, 10 MiB); a
    /// message and its JSON escaping must fit. At most 64 MiB: the built message (up to three
    /// times larger once quoted-printable) must stay far below Redis's 512 MB string limit.
    public let maxBody: Int
    /// TERN_API_MAX_BATCH: most messages in one POST /v1/send/batch (default 1000; 1 to
    /// 10000). The whole batch must also fit TERN_API_MAX_BODY.
    public let maxBatch: Int
    /// TERN_API_IDEMPOTENCY_TTL: how long the answer to a request sent with an
    /// Idempotency-Key is kept for its retries (default 24h, at least 1m).
    public let idempotencyTTL: Duration
    /// TERN_API_MAX_MESSAGE: largest message once built, in octets (default 10485760,
    /// 10 MiB, near Postfix's default message_size_limit; receivers refuse bigger ones
    /// anyway). Attachments grow by a third in base64, so it is checked on the built bytes.
    public let maxMessage: Int
    /// TERN_HOSTNAME: the right-hand side of Message-ID fields (default the host name).
    public let hostname: String
    /// TERN_MAX_AGE and TERN_RECORD_TTL. The API sets their sum as a backstop expiry, so a
    /// record whose message somehow never ends does not stay in Redis forever; the
    /// scheduler shortens it at the final event.
    public let lifetime: MessageLifetime
    /// TERN_API_IDLE_TIMEOUT: how long a kept-alive connection may wait idle (default 30s).
    public let idleTimeout: Duration
    /// TERN_API_REQUEST_TIMEOUT: how long one request may take to arrive (default 60s).
    public let requestTimeout: Duration
    /// TERN_API_MAX_CONNECTIONS: connections served at once (default 1024).
    public let maxConnections: Int
    /// TERN_API_SHUTDOWN_GRACE: at shutdown, how long requests in progress may take (10s).
    public let shutdownGrace: Duration
    /// TERN_DKIM_KEYS: the file listing the DKIM keys, one `domain selector algorithm
    /// keyfile` per line (DKIMKeys.swift). Unset: no message is signed. Read once at start;
    /// a line that cannot be used stops the daemon naming the file and the line.
    public let dkimKeys: DKIMKeyTable
    /// TERN_POOLS, the scheduler's setting, read here for its pool names only: all daemons
    /// share one environment file, and a request naming a pool the scheduler does not know
    /// is refused (422) rather than accepted and bounced. Unset: any pool name is accepted.
    public let pools: Set<String>?
    /// TERN_POOLS as a whole: the source IPs the operator endpoints list.
    public let ipPools: Pools
    /// TERN_PROVIDERS_FILE, the scheduler's setting, read here to name each group's provider
    /// in the state endpoints as the scheduler does.
    public let providers: ProviderCatalog
    /// TERN_CFBL_ADDRESS: the complaint feedback address written into every message as
    /// CFBL-Address (RFC 9477), with a CFBL-Feedback-ID tagged with TERN_VERP_SECRET (then
    /// required). Unset: no CFBL fields. Its domain must be one that DKIM signs (d=) for
    /// providers to use it.
    public let cfbl: CFBL?
    /// TERN_ORG_DOMAINS and TERN_ORG_UNSIGNED (SendingDomains.swift): the domains a key bound
    /// to an organisation may send from, and whether its mail must be DKIM-signed. Unset:
    /// nil, nothing is checked.
    public let sendingDomains: SendingDomains?
    /// TERN_WEBHOOKS and the TERN_WEBHOOK_* settings (Webhooks/WebhookSettings.swift).
    public let webhooks: WebhookSettings

    public init(_ env: Environment, common: CommonSettings) throws {
        self.common = common
        listen = try env.address("TERN_API_LISTEN", default: "127.0.0.1:8025")
        keys = try APIKeys(env.string("TERN_API_KEYS", default: ""), variable: "TERN_API_KEYS")
        maxBody = try env.int("TERN_API_MAX_BODY", default: 10_485_760, range: 1024...(64 << 20))
        maxBatch = try env.int("TERN_API_MAX_BATCH", default: 1000, range: 1...10_000)
        idempotencyTTL = try env.duration("TERN_API_IDEMPOTENCY_TTL", default: .seconds(86400))
        guard idempotencyTTL >= .seconds(60) else {
            throw ConfigError("TERN_API_IDEMPOTENCY_TTL", "must be at least 1m: an answer must "
                + "outlive the claim of the request that made it")
        }
        maxMessage = try env.int("TERN_API_MAX_MESSAGE", default: 10_485_760,
                                 range: 1024...(64 << 20))
        hostname = env.string("TERN_HOSTNAME", default: ProcessInfo.processInfo.hostName)
        lifetime = try MessageLifetime(env)
        idleTimeout = try env.duration("TERN_API_IDLE_TIMEOUT", default: .seconds(30))
        requestTimeout = try env.duration("TERN_API_REQUEST_TIMEOUT", default: .seconds(60))
        maxConnections = try env.int("TERN_API_MAX_CONNECTIONS", default: 1024, range: 1...65536)
        shutdownGrace = try env.duration("TERN_API_SHUTDOWN_GRACE", default: .seconds(10))
        let poolText = env.string("TERN_POOLS", default: "")
        pools = poolText.isEmpty ? nil : try APISettings.poolNames(poolText)
        ipPools = try Pools(env)
        providers = try ProviderCatalog.load(overrides: env.values["TERN_PROVIDERS_FILE"])
        let cfblAddress = env.string("TERN_CFBL_ADDRESS", default: "")
        if cfblAddress.isEmpty {
            cfbl = nil
        } else {
            guard case .success = EmailAddress.parse(cfblAddress), cfblAddress.contains("@")
            else {
                throw ConfigError("TERN_CFBL_ADDRESS", "'\(cfblAddress)' is not an address")
            }
            cfbl = CFBL(address: cfblAddress, verp: try VERP(env))
        }
        let orgDomains = env.string("TERN_ORG_DOMAINS", default: "")
        sendingDomains = orgDomains.isEmpty ? nil : try SendingDomains(
            domains: orgDomains, unsigned: env.string("TERN_ORG_UNSIGNED", default: ""))
        webhooks = try WebhookSettings(env)
        let dkimPath = env.string("TERN_DKIM_KEYS", default: "")
        do throws(DKIMKeyFileError) {
            dkimKeys = dkimPath.isEmpty ? .empty : try DKIMKeyTable.load(path: dkimPath)
        } catch {
            throw ConfigError("TERN_DKIM_KEYS", error.description)
        }
    }

    /// The names in `name=ip/helo,…;name2=…`. The addresses are the scheduler's business;
    /// a part without a name is refused here as the scheduler refuses it.
    static func poolNames(_ text: String) throws -> Set<String> {
        var names: Set<String> = []
        for part in text.split(separator: ";") {
            let pair = part.split(separator: "=", maxSplits: 1)
            let name = pair.first?.trimmingCharacters(in: .whitespaces) ?? ""
            guard pair.count == 2, !name.isEmpty else {
                throw ConfigError("TERN_POOLS", "'\(part)' is not name=ip/helo,…")
            }
            names.insert(name)
        }
        guard !names.isEmpty else { throw ConfigError("TERN_POOLS", "no pools") }
        return names
    }

    var server: HTTPServerSettings {
        var s = HTTPServerSettings(maxBody: maxBody)
        s.idleTimeout = idleTimeout
        s.requestTimeout = requestTimeout
        s.maxConnections = maxConnections
        s.shutdownGrace = shutdownGrace
        return s
    }
}
