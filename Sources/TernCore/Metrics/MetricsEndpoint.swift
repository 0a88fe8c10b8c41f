// GET /metrics and GET /health for every daemon, on its own loopback address
// (TERN_METRICS_LISTEN) or, for the API, beside its own routes.
//
// /health answers 200 only when the daemon can work: Redis answers and every consumer group
// it reads from exists. Otherwise 503 with the reason, so a load balancer or an operator
// sees why, not just that.

import Foundation

/// A stream a daemon reads through a consumer group: sampled for metrics, checked by /health.
public struct ConsumedStream: Sendable {
    /// The contract's name (`submit`), used as the `stream` label.
    public let name: String
    /// The Redis key, with the prefix.
    public let key: String
    public let group: String

    public init(name: String, key: String, group: String) {
        self.name = name
        self.key = key
        self.group = group
    }
}

public struct MetricsEndpoint: Sendable {
    public let registry: MetricsRegistry
    let redis: RedisClient
    let streams: [ConsumedStream]
    /// How long a scrape or a health check waits for Redis.
    let timeout: Duration

    public init(registry: MetricsRegistry, redis: RedisClient, streams: [ConsumedStream],
                timeout: Duration = .seconds(1)) {
        self.registry = registry
        self.redis = redis
        self.streams = streams
        self.timeout = timeout
    }

    /// The answer for /metrics and /health; nil for any other path.
    public func handle(_ request: HTTPRequest) async -> HTTPResponse? {
        guard request.path == "/metrics" || request.path == "/health" else { return nil }
        guard request.method == "GET" || request.method == "HEAD" else {
            return .error(405, "method not allowed; use GET, HEAD",
                          headers: ["Allow": "GET, HEAD"])
        }
        if request.path == "/health" {
            if let reason = await problem() {
                return .json(503, ["status": "unavailable", "reason": reason])
            }
            return .json(200, ["status": "ok"])
        }
        return .text(200, await registry.scrape(), contentType: "text/plain; version=0.0.4")
    }

    /// Why the daemon cannot work right now, or nil when it can.
    public func problem() async -> String? {
        var commands: [[RedisArg]] = [["PING"]]
        commands += streams.map { ["XINFO", "GROUPS", .text($0.key)] }
        let replies: [RedisValue]
        do {
            replies = try await redis.pipeline(commands, within: timeout)
        } catch {
            return "redis at \(redis.address) is not reachable: \(error)"
        }
        if replies.first?.string != "PONG" { return "redis does not answer PING" }
        for (stream, reply) in zip(streams, replies.dropFirst()) {
            let names = (reply.array ?? []).compactMap { $0.fieldMap["name"] }
            if !names.contains(stream.group) {
                return "consumer group \(stream.group) of stream \(stream.key) is missing"
            }
        }
        return nil
    }

    /// Serves /metrics and /health on `listen` until shutdown; nil serves nothing.
    public func serve(listen: SocketAddress?, shutdown: Shutdown, logger: Logger) async {
        guard let listen else { return }
        // A taken port costs the operator the metrics, not the daemon its work: logged, and
        // the daemon carries on delivering.
        let listener: TCPListener
        do {
            listener = try TCPListener(address: listen)
        } catch {
            logger.error("cannot serve metrics: \(error)", ("metrics_listen", listen.description))
            return
        }
        var settings = HTTPServerSettings(maxBody: 0)
        settings.maxConnections = 16
        settings.shutdownGrace = .seconds(1)
        let server = HTTPServer(listener: listener, settings: settings, logger: logger) {
            await self.handle($0) ?? .error(404, "no such resource; try /metrics or /health")
        }
        logger.info("serving metrics", ("metrics_listen", server.address.description))
        await server.serve(until: shutdown)
    }
}

/// TERN_METRICS_LISTEN: where a daemon serves /metrics and /health; `off` serves nothing.
public enum MetricsListen {
    public static func parse(_ env: Environment, default value: String) throws -> SocketAddress? {
        let raw = env.string("TERN_METRICS_LISTEN", default: value)
        if raw == "off" { return nil }
        return try env.address("TERN_METRICS_LISTEN", default: value)
    }

    /// A sender's default: 127.0.0.1:9102, or 127.0.0.1:(9110 + N) for a numeric instance
    /// (`tern-sender@N`), so the senders of one host never share a port.
    public static func senderDefault(_ env: Environment) -> String {
        if let raw = env.values["TERN_INSTANCE"], let n = Int(raw), (0...800).contains(n) {
            return "127.0.0.1:\(9110 + n)"
        }
        return "127.0.0.1:9102"
    }
}
