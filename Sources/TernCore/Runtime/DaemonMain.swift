// The skeleton every Tern daemon runs on: settings, logging, signals, systemd, exit codes.
//
// A daemon's `main.swift` only names the daemon and builds it from its settings; start-up,
// readiness, the watchdog, a clean stop on SIGTERM and a reload on SIGHUP live here, once.

import Foundation

/// A daemon's library entry point, driven by `DaemonMain` in production and by tests directly.
public protocol Daemon: Sendable {
    /// Runs until `shutdown` is requested, then finishes or hands back the work it holds.
    /// Calls `ready` once it can do its work (connected, groups created, listening).
    func run(shutdown: Shutdown, ready: @escaping @Sendable (String) -> Void) async throws

    /// SIGHUP (`systemctl reload`): re-reads what can change while running (certificates)
    /// without dropping work. A failure is logged by the daemon and the old state stays.
    func reload() async
}

extension Daemon {
    public func reload() async {}
}

/// Settings every daemon reads.
public struct CommonSettings: Sendable {
    /// TERN_REDIS_URL: the Redis server, `redis://[:password@]host:port[/db]`, checked here so
    /// that a bad one is refused as a setting, named, before anything connects.
    public let redisURL: String
    /// TERN_REDIS_PREFIX: prefix of every key and stream name.
    public let redisPrefix: String
    /// TERN_LOG_LEVEL: trace, debug, info (default), notice, warning, error, critical.
    public let logLevel: LogLevel
    /// TERN_INSTANCE: this process's consumer name within its group; unique per process of
    /// one role (systemd passes the template instance, `tern-sender@3` -> `3`).
    public let instance: String

    /// `checkingRedisURL` false leaves a bad TERN_REDIS_URL to the first connection: for
    /// `ternctl config check`, which reports it per daemon.
    public init(_ env: Environment, role: String, checkingRedisURL: Bool = true) throws {
        redisURL = env.string("TERN_REDIS_URL", default: "redis://127.0.0.1:6379")
        if checkingRedisURL, let problem = CommonSettings.problem(redisURL: redisURL) {
            throw problem
        }
        redisPrefix = env.string("TERN_REDIS_PREFIX", default: "tern:")
        logLevel = try env.logLevel()
        let host = ProcessInfo.processInfo.hostName
        instance = role + "-" + env.string("TERN_INSTANCE", default: host)
    }
}

extension CommonSettings {
    /// A TERN_REDIS_URL the Redis client cannot parse, as the setting error that names it.
    public static func problem(redisURL: String) -> ConfigError? {
        do throws(RedisError) {
            _ = try RedisURL(redisURL)
            return nil
        } catch {
            return ConfigError("TERN_REDIS_URL", "'\(RedisURL.masked(redisURL))' is not "
                + "redis://[:password@]host[:port][/db] with a numeric host")
        }
    }
}

/// sysexits(3) codes the daemons exit with, so systemd and operators can tell failures apart.
public enum ExitCode: Int32 {
    case ok = 0
    case software = 70   // EX_SOFTWARE: an internal error
    case unavailable = 69 // EX_UNAVAILABLE: a service it needs (Redis) is not there
    case config = 78      // EX_CONFIG: a setting is wrong
}

public enum DaemonMain {
    /// Builds the daemon with `make`, runs it, and exits the process.
    public static func run(
        _ role: String, make: (Environment, CommonSettings, Logger) throws -> any Daemon
    ) async -> Never {
        let env = Environment()
        let shutdown = Shutdown()
        shutdown.installSignalHandlers()
        let common: CommonSettings
        var logger = Logger(label: role)
        let daemon: any Daemon
        do {
            common = try CommonSettings(env, role: role)
            logger.level = common.logLevel
            daemon = try make(env, common, logger)
        } catch {
            logger.critical("configuration error: \(error)")
            exit(ExitCode.config.rawValue)
        }
        logger.info("starting", ("instance", common.instance),
                    ("redis", RedisURL.masked(common.redisURL)))
        let log = logger
        // Lives until the process exits; reloads run one at a time, never during start-up.
        Task {
            for await _ in shutdown.reloadRequests {
                log.info("reload requested (SIGHUP)")
                await daemon.reload()
            }
        }
        do {
            try await daemon.run(shutdown: shutdown) { status in
                log.info("ready: \(status)")
                Systemd.ready(status: status)
                // The ping comes from a task, so a daemon whose tasks no longer run (a
                // blocked cooperative pool, a deadlock) stops pinging and systemd restarts it.
                Systemd.startWatchdog { true }
            }
            Systemd.stopping()
            logger.info("stopped")
            exit(ExitCode.ok.rawValue)
        } catch let error as ConfigError {
            logger.critical("configuration error: \(error)")
            exit(ExitCode.config.rawValue)
        } catch {
            logger.critical("stopped by an error: \(error)")
            exit(ExitCode.software.rawValue)
        }
    }
}
