// The reputation monitor's daemon shell: connects to Redis, reports ready, and stops cleanly.
//
// Known limit: it does no monitoring yet. Blocklist checks, warm-up schedules and per-IP and
// per-provider statistics are still to be built; until then every configured IP stays in its
// pool and nothing caps its volume.

import TernCore
import TernMail

public struct ReputationDaemon: Daemon {
    let logger: Logger
    let redis: RedisClient
    let keys: Keys

    public init(common: CommonSettings, logger: Logger) throws {
        self.logger = logger
        self.redis = try RedisClient(url: common.redisURL)
        self.keys = Keys(prefix: common.redisPrefix)
    }

    public func run(shutdown: Shutdown, ready: @escaping @Sendable (String) -> Void) async throws {
        // Wait for Redis rather than exit: systemd would only restart us into the same state.
        while !(await redis.ping()) {
            if shutdown.isRequested { return }
            logger.warning("redis is not reachable yet", ("redis", redis.address.description))
            try? await Task.sleep(for: .seconds(2))
        }
        ready("connected to redis; monitoring not built yet")
        await shutdown.wait()
    }
}
