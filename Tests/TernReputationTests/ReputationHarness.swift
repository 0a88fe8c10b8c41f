// Test helpers for the reputation monitor: the python test world (testworld/) serving
// blocklist zones under .example from a config file that a test rewrites and reloads with
// SIGHUP, and a ReputationDaemon running in-process against a private Redis.

import Foundation
import Synchronization
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernReputation

/// One running `testworld/world.py` with a config file of extra records.
final class BlocklistWorld: Sendable {
    let pid: pid_t
    let dir: String
    let dnsPort: UInt16

    static var root: String { repositoryRoot }

    static var python: String { python3 }

    var config: String { dir + "/config.json" }
    var describe: String { dir + "/world.json" }

    private init(pid: pid_t, dir: String, dnsPort: UInt16) {
        self.pid = pid
        self.dir = dir
        self.dnsPort = dnsPort
    }

    static func start(records: [String: Any]) async throws -> BlocklistWorld {
        let dir = NSTemporaryDirectory() + "tern-blworld-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let config = dir + "/config.json", describe = dir + "/world.json"
        try JSONSerialization.data(withJSONObject: ["records": records])
            .write(to: URL(fileURLWithPath: config))
        let pid = try spawn(python, [root + "/testworld/world.py", "--config", config,
                                     "--dns-port", "0", "--smtp-port", "0",
                                     "--spool", dir + "/spool", "--describe", describe],
                            log: dir + "/world.log")
        for _ in 0..<300 {
            if let json = Self.read(describe), let dns = json["dns"] as? [String: Any],
               let port = dns["port"] as? Int
            {
                return BlocklistWorld(pid: pid, dir: dir, dnsPort: UInt16(port))
            }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        stopProcess(pid)
        let log = (try? String(contentsOfFile: dir + "/world.log", encoding: .utf8)) ?? ""
        throw ConfigError("testworld", "did not start: \(log)")
    }

    static func read(_ path: String) -> [String: Any]? {
        FileManager.default.contents(atPath: path).flatMap {
            try? JSONSerialization.jsonObject(with: $0) as? [String: Any]
        }
    }

    /// Replaces the extra records and waits until the world serves them.
    func reload(records: [String: Any]) async throws {
        let before = Self.read(describe)?["zone_serial"] as? Int ?? 0
        try JSONSerialization.data(withJSONObject: ["records": records])
            .write(to: URL(fileURLWithPath: config))
        kill(pid, SIGHUP)
        for _ in 0..<200 {
            if (Self.read(describe)?["zone_serial"] as? Int ?? 0) > before { return }
            try await Task.sleep(for: .milliseconds(25))
        }
        throw ConfigError("testworld", "did not reload")
    }

    func stop() {
        stopProcess(pid)
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// Redis and a ReputationDaemon running in-process; the world is optional.
final class ReputationHarness: Sendable {
    let server: TestRedis
    let redis: RedisClient
    let keys = Keys()
    let logs = MemoryLogSink()
    let shutdown = Shutdown()
    let task: Task<Void, any Error>

    init(env extra: [String: String]) async throws {
        server = try TestRedis()
        redis = try RedisClient(url: server.url)
        var values = ["TERN_REDIS_URL": server.url, "TERN_INSTANCE": "t",
                      "TERN_DNSBL_FILE": BlocklistWorld.root + "/testworld/dnsbl.json",
                      "TERN_DNSBL_INTERVAL": "1s", "TERN_DNS_TIMEOUT": "1s"]
        values.merge(extra) { _, b in b }
        let environment = Environment(values)
        let settings = try ReputationSettings(
            environment, common: CommonSettings(environment, role: "reputation"))
        let daemon = try ReputationDaemon(
            settings: settings, logger: Logger(label: "test", level: .debug, sink: logs))
        let shutdown = self.shutdown
        task = Task { try await daemon.run(shutdown: shutdown) { _ in } }
    }

    func stop() async {
        shutdown.request()
        _ = try? await task.value
        server.stop()
    }

    func active(_ pool: String) async throws -> String? {
        try await redis.run("GET", keys.poolActive(pool)).string
    }

    func state(_ ip: String) async throws -> [String: String] {
        try await redis.run("HGETALL", keys.ipState(ip)).fieldMap
    }

    /// IP events on the stream, oldest first: (event, ip, json).
    func ipEvents() async throws -> [(String, String, String)] {
        let all = try await redis.run("XRANGE", keys.stream(.events), "-", "+")
        return (all.array ?? []).compactMap { v in
            let f = v.array?[1].fieldMap ?? [:]
            guard let e = f["event"], e.hasPrefix("ip_") else { return nil }
            return (e, f["ip"] ?? "", f["json"] ?? "")
        }
    }

    func waitFor(_ what: String, _ check: () async throws -> Bool) async throws {
        // Generous: a loaded machine (CI) may take many times longer than a quiet one, and
        // a listing answer may be held for its DNS TTL (60 s in the test world) before a
        // delisting shows.
        let deadline = ContinuousClock.now + .seconds(150)
        while ContinuousClock.now < deadline {
            if try await check() { return }
            try await Task.sleep(for: .milliseconds(25))
        }
        Issue.record("timed out waiting for \(what)")
        throw ConfigError("test", "timed out waiting for \(what)")
    }
}
