// SIGTERM and SIGINT become a shutdown the daemon's tasks can await or poll; SIGHUP becomes
// a reload request on `reloadRequests`.

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
    private let reloads: AsyncStream<Void>.Continuation
    /// One element per SIGHUP; several before a reload starts count as one. Never ends.
    public let reloadRequests: AsyncStream<Void>

    public init() {
        (reloadRequests, reloads) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Installs handlers for SIGTERM, SIGINT and SIGHUP; SIGPIPE is ignored (send() uses
    /// MSG_NOSIGNAL, but other writes should fail with EPIPE rather than kill the daemon).
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
        // Without a handler SIGHUP would kill the daemon; with one it asks for a reload.
        signal(SIGHUP, SIG_IGN)
        let hangup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        hangup.setEventHandler { [self] in requestReload() }
        hangup.resume()
        sources.append(hangup)
    }

    /// What SIGHUP does; tests call it directly.
    public func requestReload() { reloads.yield() }

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
