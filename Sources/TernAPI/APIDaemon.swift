// The API daemon: Tern's front door. It listens for HTTP, checks keys and requests, and
// turns each accepted message into its Redis record, history and `submit` entry in one
// MULTI/EXEC, so a message is either wholly accepted or not at all. It also answers what
// became of a message and whether Redis is reachable.
//
// Routes: POST /v1/send, POST /v1/send/batch, GET /v1/messages/{id}, GET /health,
// GET /metrics, and the operators' routes (OperatorEndpoints, IPEndpoints,
// ControlEndpoints). Everything the client sends is untrusted: the HTTP server bounds sizes
// and times, `SendRequest` validates every field, and only what passed both reaches Redis.

import Foundation
import TernCore
import TernMail

public struct APIDaemon: Daemon {
    let settings: APISettings
    /// The daemon's logger; while a request is handled, one that names the request.
    var logger: Logger
    let redis: RedisClient
    let keys: Keys
    let signer: DKIMSigner
    let metrics: APIMetrics
    /// Posts events to TERN_WEBHOOKS (Webhooks/); nil when none is configured.
    let webhooks: Webhooks?

    public init(settings: APISettings, logger: Logger) throws {
        self.settings = settings
        self.logger = logger
        self.redis = try RedisClient(url: settings.common.redisURL)
        self.keys = Keys(prefix: settings.common.redisPrefix)
        self.signer = DKIMSigner(keys: settings.dkimKeys)
        self.metrics = APIMetrics(redis: redis, keys: keys)
        self.webhooks = try Webhooks(settings: settings.webhooks, redis: redis, keys: keys,
                                     consumer: settings.common.instance, logger: logger,
                                     registry: metrics.registry)
    }

    public func run(shutdown: Shutdown, ready: @escaping @Sendable (String) -> Void) async throws {
        let listener = try Systemd.listenDescriptor().map { try TCPListener(adopting: $0) }
            ?? TCPListener(address: settings.listen)
        let server = HTTPServer(listener: listener, settings: settings.server, logger: logger) {
            await self.handle($0)
        }
        // Without Redis the API still answers: 503 to senders, "down" to health checks, which
        // is more use to a load balancer than a process that will not start.
        if !(await redis.ping()) {
            logger.warning("redis is not reachable; answering 503 until it is",
                           ("redis", redis.address.description))
        }
        for key in settings.dkimKeys.allKeys {
            logger.info("dkim key", ("domain", key.domain), ("selector", key.selector),
                        ("algorithm", key.algorithm.rawValue), ("dns_name", key.dnsName),
                        ("record", key.dnsRecord))
        }
        if let cfbl = settings.cfbl {
            // RFC 9477 §4: providers use the CFBL-Address only under an aligned signature.
            let aligned = !settings.dkimKeys.keys(for: cfbl.domain).isEmpty
            if aligned {
                logger.info("cfbl address", ("cfbl_address", cfbl.address))
            } else {
                logger.warning("cfbl address has no DKIM key for its domain; providers will "
                               + "ignore it", ("cfbl_address", cfbl.address))
            }
        }
        if let domains = settings.sendingDomains {
            for org in domains.organisations where domains.requiresDKIM(org: org) {
                // A `*.` entry is checked by its parent's name, as a From under it would be.
                for domain in domains.domains(of: org).map({ $0.replacingOccurrences(
                    of: "*.", with: "x.") }) where settings.dkimKeys.keys(for: domain).isEmpty {
                    logger.warning("an organisation's sending domain has no DKIM key; its mail "
                                   + "will be refused", ("org", org), ("domain", domain))
                }
            }
        }
        logger.info("listening", ("listen", server.address.description),
                    ("keys", String(settings.keys.count)),
                    ("dkim_keys", String(settings.dkimKeys.allKeys.count)),
                    ("contract", String(Contract.version)))
        await webhooks?.prepare()
        ready("listening on \(server.address)")
        Systemd.startWatchdog { true }
        async let posting: Void = webhooks?.run(shutdown: shutdown) ?? ()
        await server.serve(until: shutdown)
        await posting
    }

    // MARK: Routing

    func handle(_ request: HTTPRequest) async -> HTTPResponse {
        // Every line logged for the request names it, as its answer does (X-Request-Id).
        var scoped = self
        scoped.logger = logger.with(("request_id", request.requestID))
        return await scoped.route(request)
    }

    func route(_ request: HTTPRequest) async -> HTTPResponse {
        let path = request.path
        let readOnly = request.method == "GET" || request.method == "HEAD"
        if path == "/health" {
            guard readOnly else { return notAllowed("GET, HEAD") }
            return await health()
        }
        if path == "/metrics" {
            guard readOnly else { return notAllowed("GET, HEAD") }
            return .text(200, await metrics.registry.scrape(),
                         contentType: "text/plain; version=0.0.4")
        }
        if path == "/v1/send" {
            guard request.method == "POST" else { return notAllowed("POST") }
            let response = await send(request)
            if !response.headers.contains("Idempotent-Replayed") { metrics.answered(response) }
            return response
        }
        if path == "/v1/send/batch" {
            guard request.method == "POST" else { return notAllowed("POST") }
            return await sendBatch(request)
        }
        if let answer = await operatorRoute(request) { return answer }
        if let answer = await controlRoute(request) { return answer }
        if let answer = await ipRoute(request) { return answer }
        if let answer = await webhookRoute(request) { return answer }
        if let answer = await engagementRoute(request) { return answer }
        let prefix = "/v1/messages/"
        if path.hasPrefix(prefix) {
            let id = path.dropFirst(prefix.count)
            guard !id.isEmpty, !id.contains("/") else { return notFound() }
            guard readOnly else { return notAllowed("GET, HEAD") }
            return await message(String(id), request)
        }
        return notFound()
    }

    func notFound() -> HTTPResponse { .error(404, "no such resource") }

    /// RFC 9110 §15.5.6: a 405 lists the methods the resource has in Allow.
    func notAllowed(_ allow: String) -> HTTPResponse {
        .error(405, "method not allowed; use \(allow)", headers: ["Allow": allow])
    }

    /// Checks the key: what it may do, or the answer that refuses the request.
    func authorize(_ request: HTTPRequest) -> Result<APIKeys.Grant, Refusal> {
        // RFC 9110 §5.3: a field that is not a list may appear once; with two, which key is
        // meant is a guess, and a proxy may have checked the other one.
        guard request.headers.values("Authorization").count <= 1 else {
            return .failure(Refusal(.error(400, "more than one Authorization field",
                                           field: "Authorization")))
        }
        switch settings.keys.check(request.headers["Authorization"]) {
        case .allowed(let grant):
            return .success(grant)
        case .missing:
            // RFC 9110 §11.6.1: a 401 names the scheme in WWW-Authenticate (RFC 6750 §3).
            return .failure(Refusal(.error(
                401, "an API key is required: Authorization: Bearer <key>",
                headers: ["WWW-Authenticate": #"Bearer realm="tern""#])))
        case .wrong:
            logger.notice("refused a request with an unknown API key",
                          ("peer", request.remote?.host ?? ""), ("path", request.path))
            return .failure(Refusal(.error(403, "the API key is not valid")))
        }
    }

    /// An operator endpoint's check: a key bound to an organisation may not see or change
    /// the system's own state.
    func authorizeOperator(_ request: HTTPRequest, what: String) -> HTTPResponse? {
        switch authorize(request) {
        case .failure(let refusal): return refusal.response
        case .success(let grant) where !grant.mayOperate:
            return .error(403, "\(what) need an operator key (one bound to no organisation, "
                + "or an @ops key)")
        case .success: return nil
        }
    }

    /// A sending endpoint's check: what the key may do, or a refusal.
    func authorizeSender(_ request: HTTPRequest) -> Result<APIKeys.Grant, Refusal> {
        switch authorize(request) {
        case .failure(let refusal): return .failure(refusal)
        case .success(let grant) where !grant.maySend:
            return .failure(Refusal(.error(403, "this API key is scoped to operations and "
                + "cannot send")))
        case .success(let grant): return .success(grant)
        }
    }

    struct Refusal: Error {
        let response: HTTPResponse
        init(_ response: HTTPResponse) { self.response = response }
    }

    // MARK: GET /health

    /// Ready when Redis answers and, with webhooks configured, the `webhooks` group the API
    /// reads `events` through exists (without it no event would be posted).
    func health() async -> HTTPResponse {
        guard webhooks != nil else {
            return await redis.ping() ? .json(200, ["redis": "ok"]) : .json(503, ["redis": "down"])
        }
        let events = ConsumedStream(name: StreamName.events.rawValue,
                                    key: keys.stream(.events), group: StreamName.events.group)
        let check = MetricsEndpoint(registry: metrics.registry, redis: redis, streams: [events])
        guard let problem = await check.problem() else {
            return .json(200, ["redis": "ok", "webhooks": "ok"])
        }
        if await redis.ping() {
            return .json(503, ["redis": "ok", "webhooks": problem])
        }
        return .json(503, ["redis": "down", "webhooks": problem])
    }
}
