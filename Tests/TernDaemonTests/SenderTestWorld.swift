// Test helpers for the sender: the python test world (DNS and MX hosts on loopback, see
// testworld/README.md) started on free ports, and a SenderDaemon running in-process against
// a private Redis, fed by hand the way the scheduler would feed it.

import Foundation
import Synchronization
import Testing
import TernCore
import TernMail
import TernSender
import TernTestSupport

/// One running `testworld/world.py`, stopped by its pid.
final class SenderTestWorld: Sendable {
    let pid: pid_t
    let dir: String
    let spool: String
    let dnsPort: UInt16
    let smtpPort: UInt16
    /// The self-signed certificate of the STARTTLS host (mx.tls.example), as a CA file.
    let tlsCert: String

    /// A message the world accepted: its sidecar JSON and the exact bytes.
    struct Spooled {
        let meta: [String: Any]
        let raw: [UInt8]
        var rcpts: [String] { meta["rcpt_tos"] as? [String] ?? [] }
        subscript(_ key: String) -> String? { meta[key] as? String }
    }

    static var root: String { repositoryRoot }

    static var python: String { python3 }

    private init(pid: pid_t, dir: String, spool: String, dnsPort: UInt16, smtpPort: UInt16,
                 tlsCert: String) {
        self.pid = pid
        self.dir = dir
        self.spool = spool
        self.dnsPort = dnsPort
        self.smtpPort = smtpPort
        self.tlsCert = tlsCert
    }

    /// `records` as extra zone TXT records, name -> strings (DKIM keys, say).
    static func start(txt records: [String: [String]]) async throws -> SenderTestWorld {
        try await start(records: records.mapValues { ["TXT": $0] })
    }

    /// `records` go over the world's zone (testworld/README.md, "The zone is a dict").
    static func start(records: [String: Any] = [:]) async throws -> SenderTestWorld {
        let dir = NSTemporaryDirectory() + "tern-world-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let spool = dir + "/spool", describe = dir + "/world.json", config = dir + "/config.json"
        try JSONSerialization.data(withJSONObject: ["records": records])
            .write(to: URL(fileURLWithPath: config))
        let pid = try spawn(python, [root + "/testworld/world.py", "--config", config,
                                     "--dns-port", "0", "--smtp-port", "0", "--spool", spool,
                                     "--describe", describe], log: dir + "/world.log")
        for _ in 0..<300 {
            if let data = FileManager.default.contents(atPath: describe),
               let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
               let dns = json["dns"] as? [String: Any], let dnsPort = dns["port"] as? Int,
               let smtpPort = json["smtp_port"] as? Int
            {
                return SenderTestWorld(pid: pid, dir: dir, spool: spool,
                                       dnsPort: UInt16(dnsPort), smtpPort: UInt16(smtpPort),
                                       tlsCert: json["tls_cert"] as? String ?? "")
            }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        stopProcess(pid)
        let log = (try? String(contentsOfFile: dir + "/world.log", encoding: .utf8)) ?? ""
        throw ConfigError("testworld", "did not start: \(log)")
    }

    func stop() {
        stopProcess(pid)
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Every message spooled so far.
    func spooled() -> [Spooled] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: spool)) ?? []
        return names.filter { $0.hasSuffix(".json") && !$0.hasPrefix(".") }.sorted().compactMap {
            guard let data = FileManager.default.contents(atPath: spool + "/" + $0),
                  let meta = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let file = meta["file"] as? String,
                  let raw = FileManager.default.contents(atPath: spool + "/" + file)
            else { return nil }
            return Spooled(meta: meta, raw: Array(raw))
        }
    }

    func spooled(for rcpt: String) -> [Spooled] { spooled().filter { $0.rcpts.contains(rcpt) } }
}

/// Redis, the world and a SenderDaemon running in-process.
final class SenderHarness: Sendable {
    let server: TestRedis
    let redis: RedisClient
    let world: SenderTestWorld
    let keys = Keys()
    let verp: VERP
    let env: Environment
    let logs = MemoryLogSink()
    let shutdown = Shutdown()
    private let task: Mutex<[Task<Void, any Error>]> = Mutex([])

    static let secret = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

    /// `trustWorld`: the world's certificate is the sender's CA file (TERN_TLS_CA_FILE).
    init(env extra: [String: String] = [:], trustWorld: Bool = false, start: Bool = true,
         records: [String: Any] = [:]) async throws {
        server = try TestRedis()
        redis = try RedisClient(url: server.url)
        world = try await SenderTestWorld.start(records: records)
        var values = [
            "TERN_REDIS_URL": server.url, "TERN_INSTANCE": "t",
            "TERN_DNS_RESOLVER": "127.0.0.1:\(world.dnsPort)",
            "TERN_SMTP_PORT": String(world.smtpPort),
            "TERN_VERP_DOMAIN": "bounces.tern.example", "TERN_VERP_SECRET": Self.secret,
            "TERN_DNS_TIMEOUT": "10s", "TERN_SMTP_TIMEOUT_CONNECT": "5s",
        ]
        if trustWorld { values["TERN_TLS_CA_FILE"] = world.tlsCert }
        values.merge(extra) { _, b in b }
        env = Environment(values)
        verp = VERP(secret: Crypto.bytes(hex: Self.secret)!, domain: "bounces.tern.example")
        // The group exists before anything is submitted or counted, whether or not the
        // daemon has got as far as creating it (it tolerates an existing group).
        try await redis.ensureGroup(stream: keys.stream(.ready), group: "sender")
        if start { try startDaemon() }
    }

    /// Starts the sender in-process; `instance` names a second one beside the first.
    func startDaemon(instance: String? = nil) throws {
        var values = env.values
        if let instance { values["TERN_INSTANCE"] = instance }
        let env = Environment(values)
        let settings = try SenderSettings(env, common: CommonSettings(env, role: "sender"))
        let daemon = try SenderDaemon(settings: settings,
                                      logger: Logger(label: "sender", sink: logs))
        let shutdown = self.shutdown
        let t = Task { try await daemon.run(shutdown: shutdown) { _ in } }
        task.withLock { $0.append(t) }
    }

    /// Requests shutdown and waits for the daemons to return.
    func stopDaemon() async throws {
        shutdown.request()
        for t in task.withLock({ $0 }) { try await t.value }
    }

    func stop() async {
        try? await stopDaemon()
        world.stop()
        server.stop()
    }

    /// Writes a message record as the API and scheduler leave it, then a `ready` entry.
    func submit(to rcpt: String, body: String = "Subject: test\r\n\r\nHello.\r\n",
                ip: String = "127.0.0.2", helo: String = "out1.tern.example",
                state: String = "sending") async throws -> String {
        let id = MessageID.generate()
        let domain = String(rcpt.split(separator: "@").last!)
        _ = try await redis.transaction([
            ["HSET", .text(keys.message(id)), "id", .text(id), "org", "acme", "pool", "default",
             "from", "sender@tern.example", "rcpt", .text(rcpt), "domain", .text(domain),
             "body", .data(Array(body.utf8)), "metadata", "{}", "state", .text(state),
             "attempts", "1"],
            xadd(keys.stream(.ready), [("id", id), ("attempt", "1"), ("ip", ip),
                                       ("helo", helo)]),
        ])
        return id
    }

    /// The results entries written so far for `id`.
    func results(_ id: String) async throws -> [[String: String]] {
        let all = try await redis.run("XRANGE", keys.stream(.results), "-", "+")
        return (all.array ?? []).compactMap { $0.array?[1].fieldMap }.filter { $0["id"] == id }
    }

    /// Waits (up to 60 s) for the one results entry of `id`.
    func result(_ id: String) async throws -> [String: String] {
        for _ in 0..<1200 {
            if let first = try await results(id).first { return first }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ConfigError("results", "no result for \(id)")
    }

    /// Waits (up to 10 s) until `ready` holds `n` entries: acknowledged ones are trimmed a
    /// moment after their transaction. False when it never does.
    func readyLength(settlesAt n: Int) async throws -> Bool {
        for _ in 0..<200 {
            if try await redis.run("XLEN", keys.stream(.ready)).int == n { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    /// Entries of `ready` read but not acknowledged.
    func pendingCount() async throws -> Int {
        let reply = try await redis.run("XPENDING", keys.stream(.ready), "sender")
        return reply.array?.first?.int ?? -1
    }
}

/// `testworld/peer.py` on the world's SMTP port: MX hosts with profiles and counters.
final class TestPeer: Sendable {
    let pid: pid_t
    let stats: String

    /// `hosts`: address -> profile (see peer.py).
    init(port: UInt16, dir: String, hosts: [String: String]) async throws {
        stats = dir + "/peer.json"
        pid = try spawn(SenderTestWorld.python,
                        [SenderTestWorld.root + "/testworld/peer.py", "--port", String(port),
                         "--stats", stats] + hosts.map { "\($0.key)=\($0.value)" },
                        log: dir + "/peer.log")
        for _ in 0..<200 where FileManager.default.contents(atPath: stats) == nil {
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    func stop() { stopProcess(pid) }

    /// The counters of one address (connections, open, max_open, messages, rsets, ...).
    func counters(_ addr: String) -> [String: Any] {
        guard let data = FileManager.default.contents(atPath: stats),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { return [:] }
        return json[addr] as? [String: Any] ?? [:]
    }

    func count(_ addr: String, _ key: String) -> Int { counters(addr)[key] as? Int ?? -1 }

    /// Messages accepted on each closed connection of `addr` (the last 50).
    func perConnection(_ addr: String) -> [Int] { counters(addr)["per_connection"] as? [Int] ?? [] }

    /// Waits (up to 20 s) until `key` of `addr` reaches `n`.
    func wait(_ addr: String, _ key: String, atLeast n: Int) async throws {
        for _ in 0..<400 where count(addr, key) < n {
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}
