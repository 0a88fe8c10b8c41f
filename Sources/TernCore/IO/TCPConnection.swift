// Non-blocking TCP sockets for Swift tasks: connect (from a chosen source address), accept,
// read and write, each suspending on the event loop instead of blocking a thread.

import CLinux
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A byte stream a protocol runs over: plain TCP, or TLS on top of it.
public protocol ByteStream: AnyObject, Sendable {
    /// Up to `max` bytes; an empty array means the peer closed its side.
    func read(max: Int, deadline: ContinuousClock.Instant?) async throws -> [UInt8]
    /// What has arrived already, without waiting: nil when nothing has, an empty array when
    /// the peer closed its side.
    func readIfReady(max: Int) throws -> [UInt8]?
    func write(_ bytes: [UInt8], deadline: ContinuousClock.Instant?) async throws
    func close()
}

/// One TCP connection. One task reads and one task writes at a time; `close` from anywhere.
public final class TCPConnection: ByteStream, @unchecked Sendable {
    public let fd: Int32
    public let local: SocketAddress?
    public let remote: SocketAddress?
    private let closed = Atomic<Bool>(false)

    init(fd: Int32, remote: SocketAddress?) {
        self.fd = fd
        self.remote = remote
        local = Sys.localAddress(fd)
    }

    deinit { close() }

    /// Connects to `remote`, binding `source` first when given (the pool's sending IP).
    public static func connect(
        to remote: SocketAddress, from source: SocketAddress? = nil,
        deadline: ContinuousClock.Instant? = nil
    ) async throws -> TCPConnection {
        let fd = try Sys.socket(remote.domain)
        var handedOver = false
        defer {
            if !handedOver {
                EventLoop.shared.deregister(fd)
                Glibc.close(fd)
            }
        }
        if let source {
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_IP), IP_BIND_ADDRESS_NO_PORT, &one, 4)
            let rc = source.withSockaddr { Glibc.bind(fd, $0, $1) }
            if rc != 0 { throw IOError.system(call: "bind \(source.host)", errno: errno) }
        }
        let rc = remote.withSockaddr { Glibc.connect(fd, $0, $1) }
        if rc != 0 {
            guard errno == EINPROGRESS else {
                throw IOError.system(call: "connect \(remote)", errno: errno)
            }
            try await EventLoop.shared.waitWritable(fd, deadline: deadline)
            var err: Int32 = 0
            var len = socklen_t(4)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
            if err != 0 { throw IOError.system(call: "connect \(remote)", errno: err) }
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, 4)
        handedOver = true
        return TCPConnection(fd: fd, remote: remote)
    }

    public func read(max: Int = 65536, deadline: ContinuousClock.Instant? = nil)
        async throws -> [UInt8]
    {
        while true {
            if closed.load(ordering: .relaxed) { throw IOError.closed }
            // The buffer exists only while data is there to read: thousands of sessions
            // waiting on slow servers must not each hold one.
            if let bytes = try readNow(max: max) { return bytes }
            try await EventLoop.shared.waitReadable(fd, deadline: deadline, closed: isClosed)
        }
    }

    public func readIfReady(max: Int = 65536) throws -> [UInt8]? {
        if closed.load(ordering: .relaxed) { throw IOError.closed }
        return try readNow(max: max)
    }

    private func isClosed() -> Bool { closed.load(ordering: .sequentiallyConsistent) }

    /// What the socket holds now (empty at end of stream); nil when it would block.
    private func readNow(max: Int) throws -> [UInt8]? {
        while true {
            // Not zero-filled first: read() writes what it returns, and only that is kept.
            var failure: Int32 = 0
            let buffer = [UInt8](unsafeUninitializedCapacity: max) { raw, count in
                let n = Glibc.read(fd, raw.baseAddress, max)
                count = Swift.max(n, 0)
                if n < 0 { failure = errno }
            }
            if failure == 0 { return buffer }
            switch failure {
            case EAGAIN, EWOULDBLOCK: return nil
            case EINTR: continue
            case let code: throw IOError.system(call: "read", errno: code)
            }
        }
    }

    public func write(_ bytes: [UInt8], deadline: ContinuousClock.Instant? = nil) async throws {
        var offset = 0
        while offset < bytes.count {
            if closed.load(ordering: .relaxed) { throw IOError.closed }
            let n = bytes.withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            }
            if n >= 0 {
                offset += n
                continue
            }
            switch errno {
            case EAGAIN, EWOULDBLOCK:
                try await EventLoop.shared.waitWritable(fd, deadline: deadline, closed: isClosed)
            case EINTR: continue
            case let code: throw IOError.system(call: "send", errno: code)
            }
        }
    }

    /// Waits until the socket is readable without consuming anything (used by TLS).
    public func waitReadable(deadline: ContinuousClock.Instant?) async throws {
        try await EventLoop.shared.waitReadable(fd, deadline: deadline, closed: isClosed)
    }

    public func waitWritable(deadline: ContinuousClock.Instant?) async throws {
        try await EventLoop.shared.waitWritable(fd, deadline: deadline, closed: isClosed)
    }

    public func close() {
        guard !closed.exchange(true, ordering: .sequentiallyConsistent) else { return }
        EventLoop.shared.deregister(fd)
        Glibc.close(fd)
    }
}

/// A listening TCP socket. `close` may be called more than once (a server closes its listener
/// at shutdown, its owner may too); only the first closes the descriptor.
public final class TCPListener: Sendable {
    public let fd: Int32
    public let address: SocketAddress
    private let closed = Atomic<Bool>(false)

    /// Binds and listens on `address` (port 0 picks a free one; `address` reports it).
    public init(address: SocketAddress, backlog: Int32 = 1024) throws {
        let fd = try Sys.socket(address.domain)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, 4)
        if address.bindRC(fd) != 0 {
            let code = errno
            Glibc.close(fd)
            throw IOError.system(call: "bind \(address)", errno: code)
        }
        guard Glibc.listen(fd, backlog) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw IOError.system(call: "listen \(address)", errno: code)
        }
        self.fd = fd
        self.address = Sys.localAddress(fd) ?? address
    }

    /// Adopts a socket that is already listening (systemd socket activation).
    public init(adopting fd: Int32) throws {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        self.fd = fd
        guard let address = Sys.localAddress(fd) else {
            throw IOError.system(call: "getsockname", errno: errno)
        }
        self.address = address
    }

    /// Whether a client waits in the accept queue, asked without waiting.
    public var hasWaitingClient: Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) == 1 && p.revents & Int16(POLLIN) != 0
    }

    public func accept() async throws -> TCPConnection {
        while true {
            var storage = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let client = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    accept4(fd, $0, &len, Int32(SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue))
                }
            }
            if client >= 0 {
                var one: Int32 = 1
                setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &one, 4)
                return TCPConnection(fd: client, remote: SocketAddress.from(storage))
            }
            switch errno {
            case EAGAIN, EWOULDBLOCK:
                try await EventLoop.shared.waitReadable(fd) {
                    closed.load(ordering: .sequentiallyConsistent)
                }
            case EINTR, ECONNABORTED: continue
            case EMFILE, ENFILE:
                // Out of descriptors: wait instead of spinning; sessions will end and free some.
                try await Task.sleep(for: .milliseconds(100))
            case let code: throw IOError.system(call: "accept", errno: code)
            }
        }
    }

    /// A second close must do nothing: the number may already be another socket's, whose
    /// waiters `deregister` would fail and whose connection `close` would cut.
    public func close() {
        guard !closed.exchange(true, ordering: .sequentiallyConsistent) else { return }
        EventLoop.shared.deregister(fd)
        Glibc.close(fd)
    }
}

extension SocketAddress {
    func bindRC(_ fd: Int32) -> Int32 { withSockaddr { Glibc.bind(fd, $0, $1) } }
}

enum Sys {
    static func localAddress(_ fd: Int32) -> SocketAddress? {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let ok = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return ok == 0 ? SocketAddress.from(storage) : nil
    }

    static func socket(_ domain: Int32) throws -> Int32 {
        let type = Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue)
        let fd = Glibc.socket(domain, type, 0)
        if fd < 0 { throw IOError.system(call: "socket", errno: errno) }
        return fd
    }
}
