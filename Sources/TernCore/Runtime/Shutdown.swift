// SIGTERM and SIGINT become a shutdown the daemon's tasks can await or poll.

import Dispatch
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

public final class Shutdown: Sendable {
    private let state = Mutex<(requested: Bool, waiters: [CheckedContinuation<Void, Never>])>(
        (false, []))
    // Dispatch sources are thread-safe; they are kept only so they stay alive.
    nonisolated(unsafe) private var sources: [DispatchSourceSignal] = []

    public init() {}

    /// Installs handlers for SIGTERM and SIGINT; SIGPIPE is ignored (send() uses MSG_NOSIGNAL,
    /// but other writes should fail with EPIPE rather than kill the daemon).
    /// Call once, at start-up, before any task runs.
    public func installSignalHandlers() {
        signal(SIGPIPE, SIG_IGN)
        for sig in [SIGTERM, SIGINT] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [self] in request() }
            source.resume()
            sources.append(source)
        }
    }

    public var isRequested: Bool { state.withLock { $0.requested } }

    public func request() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            guard !s.requested else { return [] }
            s.requested = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume() }
    }

    /// Returns once shutdown has been requested.
    public func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.requested { return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }
}
