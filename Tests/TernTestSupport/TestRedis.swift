// A private redis-server for one test: on 127.0.0.1, a free port, its own directory, stopped
// by its pid. Tests that need Redis start one of these rather than sharing global state.

import Foundation
import Synchronization
import TernCore

public final class TestRedis: Sendable {
    public let port: Int
    public let url: String
    private let pid: pid_t
    private let dir: String
    private let stopped = Atomic<Bool>(false)

    public init() throws {
        dir = NSTemporaryDirectory() + "tern-redis-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for _ in 0..<5 {
            let port = freePort()
            let pid = try spawn("/usr/bin/redis-server", [
                "--bind", "127.0.0.1", "--port", String(port), "--dir", dir, "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"])
            // Ours, not another test's that took the port first (its own start then fails).
            if waitForPort(port), redisPID(port: port) == pid {
                self.port = port
                self.url = "redis://127.0.0.1:\(port)"
                self.pid = pid
                return
            }
            stopProcess(pid)
        }
        throw ConfigError("redis-server", "did not start")
    }

    public func stop() {
        // Once only: a second SIGTERM could reach a process that reused the pid.
        guard !stopped.exchange(true, ordering: .sequentiallyConsistent) else { return }
        stopProcess(pid)
        try? FileManager.default.removeItem(atPath: dir)
    }

    deinit { stop() }
}

/// Starts a program with stdout and stderr to /dev/null (or `log` when given).
public func spawn(_ path: String, _ args: [String], log: String? = nil,
                  environment: [String: String]? = nil) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    let out = log ?? "/dev/null"
    posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, out, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    let argv = ([path] + args).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    let env = (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0)=\($1)") }
        + [nil]
    defer { env.forEach { free($0) } }
    // The caller's thread may block signals (Dispatch workers do); the child must not
    // inherit that, or it would ignore the SIGTERM that stops it.
    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    var none = sigset_t()
    sigemptyset(&none)
    var all = sigset_t()
    sigfillset(&all)
    posix_spawnattr_setsigmask(&attr, &none)
    posix_spawnattr_setsigdefault(&attr, &all)
    posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, path, &actions, &attr, argv, env)
    guard rc == 0 else { throw ConfigError(path, "posix_spawn failed: \(rc)") }
    return pid
}

/// SIGTERM, then SIGKILL after five seconds; reaps the child.
public func stopProcess(_ pid: pid_t, signal: Int32 = SIGTERM) {
    guard pid > 0 else { return }
    kill(pid, signal)
    var status: Int32 = 0
    for _ in 0..<200 {
        if waitpid(pid, &status, WNOHANG) != 0 { return }
        usleep(25_000)
    }
    kill(pid, SIGKILL)
    waitpid(pid, &status, 0)
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
public func freePort() -> Int {
    let listener = try! TCPListener(address: SocketAddress("127.0.0.1:0")!)
    defer { listener.close() }
    return Int(listener.address.port)
}

/// Waits up to five seconds for something to listen on `host`:`port`.
public func waitForPort(_ port: Int, host: String = "127.0.0.1") -> Bool {
    for _ in 0..<100 {
        if let fd = connected(port, host: host) {
            close(fd)
            return true
        }
        usleep(50_000)
    }
    return false
}

/// A socket connected to `host`:`port`, or nil.
func connected(_ port: Int, host: String = "127.0.0.1") -> Int32? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    sa.sin_port = UInt16(port).bigEndian
    inet_pton(AF_INET, host, &sa.sin_addr)
    let rc = withUnsafePointer(to: &sa) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    if rc == 0 { return fd }
    close(fd)
    return nil
}

/// The process id of the Redis server on 127.0.0.1:`port`, as its INFO tells; nil when
/// nothing answers within two seconds.
func redisPID(port: Int) -> pid_t? {
    guard let fd = connected(port) else { return nil }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 2, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let request = Array("*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n".utf8)
    guard write(fd, request, request.count) == request.count else { return nil }
    var reply: [UInt8] = [], chunk = [UInt8](repeating: 0, count: 4096)
    while reply.count < 1 << 16 {
        let n = read(fd, &chunk, chunk.count)
        guard n > 0 else { break }
        reply += chunk[0..<n]
        // Lines end in CRLF, one Character to Swift: the field is looked for as text lines.
        let lines = String(decoding: reply, as: UTF8.self).split(whereSeparator: \.isNewline)
        if let line = lines.first(where: { $0.hasPrefix("process_id:") }),
           reply.last == 0x0A
        {
            return pid_t(line.dropFirst("process_id:".count))
        }
    }
    return nil
}
