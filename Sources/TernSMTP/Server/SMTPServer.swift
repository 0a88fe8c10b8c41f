// The I/O shell around `SMTPServerSession`: accepts connections on a `TCPListener`, runs one
// task per session that reads lines with `LineReader`, feeds them to the state machine and
// carries out what it asks (write a reply, ask the recipient policy, hand over a message).
//
// With a certificate it offers STARTTLS (RFC 3207): after the 220 the session's byte stream
// becomes a `TLSStream` over the same TCP connection. The certificate can be swapped while
// running (`ReloadableTLSContext`); a session keeps the one it started its handshake with.
//
// Shutdown is bounded: the listener closes, idle sessions are told 421 and closed, sessions in
// the middle of a transaction get `drainTimeout` to finish, and whatever is left is closed.

import Synchronization
import TernCore
import TernMail

#if canImport(Glibc)
import Glibc
#endif

/// Decides whether a recipient is accepted. Runs once per RCPT that passed the syntax checks.
public typealias SMTPRecipientPolicy =
    @Sendable (_ recipient: String, _ envelope: SMTPEnvelope) async -> RecipientDecision

/// Takes a complete message (unstuffed, CRLF line ends) and returns the reply to give after
/// the final dot. A 2xx reply means the message is safe: do not return one before that.
public typealias SMTPMessageHandler =
    @Sendable (_ envelope: SMTPEnvelope, _ message: [UInt8]) async -> SMTPReply

public final class SMTPServer: Sendable {
    public let config: SMTPServerConfig
    private let listener: TCPListener
    private let logger: Logger
    private let policy: SMTPRecipientPolicy
    private let handler: SMTPMessageHandler
    private let tls: ReloadableTLSContext?
    private let registry = Mutex(Registry())
    /// Client addresses that waited for the greeting recently: they are greeted at once, so
    /// the pause before the greeting costs a well-behaved reporting MTA (a big provider's
    /// bounce servers) one session a day, not every session. Misbehaving clients never get in.
    private let patient = Mutex([String: ContinuousClock.Instant]())
    static let patienceRemembered: Duration = .seconds(86_400)
    static let patienceCapacity = 100_000

    private struct Registry {
        struct Entry {
            let connection: TCPConnection
            var idle: Bool
        }
        var sessions: [UInt64: Entry] = [:]
        var nextID: UInt64 = 1
        var draining = false
    }

    /// `tls`: the certificate for STARTTLS; nil offers none.
    public init(listener: TCPListener, config: SMTPServerConfig, logger: Logger,
                tls: ReloadableTLSContext? = nil,
                policy: @escaping SMTPRecipientPolicy, handler: @escaping SMTPMessageHandler) {
        self.listener = listener
        var config = config
        config.startTLS = tls != nil
        self.config = config
        self.tls = tls
        self.logger = logger
        self.policy = policy
        self.handler = handler
    }

    /// Where the server listens (the real port when it was bound to port 0).
    public var address: SocketAddress { listener.address }

    /// Sessions open right now.
    public var sessionCount: Int { registry.withLock { $0.sessions.count } }

    /// Accepts and serves connections until `shutdown` is requested, then drains and returns.
    public func run(shutdown: Shutdown) async {
        await withDiscardingTaskGroup { group in
            group.addTask {
                await shutdown.wait()
                self.beginDrain()
            }
            while true {
                let connection: TCPConnection
                do {
                    connection = try await listener.accept()
                } catch {
                    if registry.withLock({ $0.draining }) { break }
                    if Task.isCancelled {
                        // Cancelled from outside: stop as if asked to, which also ends the
                        // task above that waits for the request.
                        shutdown.request()
                        break
                    }
                    logger.error("accept failed: \(error)")
                    try? await Task.sleep(for: .milliseconds(100))
                    continue
                }
                guard let (id, admission) = register(connection) else {
                    connection.close()
                    break
                }
                group.addTask {
                    await self.serve(connection, id: id, admission: admission)
                    connection.close()
                    self.registry.withLock { _ = $0.sessions.removeValue(forKey: id) }
                }
            }
            if await !drained() {
                let left = sessionCount
                logger.warning("closing \(left) session(s) still open after the drain timeout")
                let open = registry.withLock { $0.sessions.values.map(\.connection) }
                for c in open { c.close() }
                group.cancelAll()
            }
        }
    }

    // MARK: - Sessions

    /// Whether a new connection gets a session.
    enum Admission {
        case accepted
        /// Over `maxSessions`.
        case serverFull
        /// Over `maxSessionsPerClient` for its address.
        case clientFull
    }

    /// Records a new connection; nil once draining.
    private func register(_ connection: TCPConnection) -> (UInt64, Admission)? {
        registry.withLock { r in
            guard !r.draining else { return nil }
            let id = r.nextID
            r.nextID += 1
            let host = connection.remote?.host
            let fromClient = r.sessions.values.count { $0.connection.remote?.host == host }
            let admission: Admission = r.sessions.count >= config.maxSessions ? .serverFull
                : fromClient >= config.maxSessionsPerClient ? .clientFull : .accepted
            r.sessions[id] = Registry.Entry(connection: connection, idle: false)
            return (id, admission)
        }
    }

    /// Notes whether the session is between transactions; true when it should stop now.
    private func markIdle(_ id: UInt64, _ idle: Bool) -> Bool {
        registry.withLock { r in
            r.sessions[id]?.idle = idle
            return r.draining && idle
        }
    }

    private func serve(_ connection: TCPConnection, id: UInt64, admission: Admission) async {
        let peer = connection.remote
        let log = logger.with(("peer", peer?.description ?? "?"))
        var session = SMTPServerSession(config: config, peer: peer)
        let reader = LineReader(connection)
        var stream: any ByteStream = connection
        let sessionDeadline = ContinuousClock.now + config.sessionTimeout
        log.debug("session opened")
        var action: SMTPServerAction
        switch admission {
        case .serverFull:
            action = session.greet(accepting: false)
        case .clientFull:
            action = session.tooManyFromClient()
        case .accepted:
            let host = peer?.host ?? ""
            if wasPatient(host) {
                action = session.greet(accepting: true)
            } else if await spokeEarly(connection) {
                action = session.earlyTalker()
            } else {
                rememberPatient(host)
                action = session.greet(accepting: true)
            }
        }
        while true {
            switch action {
            case .reply(let reply), .close(let reply):
                if reply.code >= 400 { log.debug("replied \(reply.code)", ("reply", reply.text)) }
                do {
                    try await stream.write(Array(reply.render().utf8),
                                           deadline: .now + config.idleTimeout)
                } catch {
                    log.debug("session ended while writing: \(error)")
                    return
                }
                if case .close = action {
                    log.debug("session closed by server")
                    await letReplyArrive(connection)
                    return
                }
            case .none:
                break
            case .checkRecipient(let recipient, let envelope):
                action = session.recipientDecided(await policy(recipient, envelope))
                continue
            case .deliver(let envelope, let message):
                action = session.messageHandled(await handler(envelope, message))
                continue
            case .startTLS(let reply):
                guard let tls,
                      let secure = try? TLSStream.server(over: connection, context: tls.context)
                else {
                    action = session.tlsUnavailable()
                    continue
                }
                do {
                    try await connection.write(Array(reply.render().utf8),
                                               deadline: .now + config.idleTimeout)
                    // RFC 3207 §4.2: commands pipelined behind STARTTLS came in clear text.
                    reader.discardBuffered()
                    try await secure.accept(deadline: .now + config.idleTimeout)
                } catch {
                    log.info("TLS handshake failed: \(error)")
                    return
                }
                stream = secure
                reader.stream = secure
                log.debug("TLS started", ("tls", secure.info.summary))
                action = session.tlsStarted(secure.info.summary)
                continue
            }
            if markIdle(id, session.isIdle) {
                action = session.shuttingDown()
                continue
            }
            if ContinuousClock.now >= sessionDeadline {
                action = session.sessionTooLong()
                continue
            }
            do {
                guard let line = try await reader.readLine(
                    limit: config.lineBufferCap,
                    deadline: min(.now + config.idleTimeout, sessionDeadline))
                else {
                    if let stop = stopAfterEndOfInput(&session, id: id) {
                        action = stop
                        continue
                    }
                    log.debug("session ended by client", ("phase", "\(session.phase)"))
                    return
                }
                action = session.receive(line, endedBare: reader.lastLineEndedBare)
            } catch LineError.tooLong {
                action = session.lineOverflow()
            } catch IOError.timedOut {
                action = ContinuousClock.now >= sessionDeadline ? session.sessionTooLong()
                    : session.timedOut()
            } catch LineError.endOfStream {
                if let stop = stopAfterEndOfInput(&session, id: id) {
                    action = stop
                    continue
                }
                log.debug("session ended by client mid-line", ("phase", "\(session.phase)"))
                return
            } catch {
                log.debug("session ended: \(error)", ("phase", "\(session.phase)"))
                return
            }
        }
    }

    /// Input ends for an idle session when the drain shut its reading side: it still gets
    /// its 421. Any other end of input is the client's.
    private func stopAfterEndOfInput(_ session: inout SMTPServerSession, id: UInt64)
        -> SMTPServerAction?
    {
        guard session.isIdle, registry.withLock({ $0.draining }) else { return nil }
        return session.shuttingDown()
    }

    /// Closing a socket with unread input makes the kernel send a reset, which can destroy
    /// the last reply before the client reads it. So: end our side, read what the client
    /// still sends until it closes, within a bound, and only then close.
    private func letReplyArrive(_ connection: TCPConnection) async {
        _ = Glibc.shutdown(connection.fd, Int32(SHUT_WR))
        let deadline = ContinuousClock.now + .seconds(2)
        var discarded = 0
        while discarded < 65536 {
            guard let more = try? await connection.read(max: 16384, deadline: deadline),
                  !more.isEmpty
            else { return }
            discarded += more.count
        }
    }

    /// True when the client sent something before the greeting (RFC 5321 §3.1). Waits up
    /// to `greetingDelay` for it; with no delay, checks only what has arrived already.
    private func wasPatient(_ host: String) -> Bool {
        guard !host.isEmpty, config.greetingDelay > .zero else { return false }
        return patient.withLock { cache in
            guard let since = cache[host] else { return false }
            return ContinuousClock.now - since < Self.patienceRemembered
        }
    }

    private func rememberPatient(_ host: String) {
        guard !host.isEmpty, config.greetingDelay > .zero else { return }
        patient.withLock { cache in
            if cache.count >= Self.patienceCapacity {
                let now = ContinuousClock.now
                cache = cache.filter { now - $0.value < Self.patienceRemembered }
                if cache.count >= Self.patienceCapacity { cache.removeAll() }
            }
            cache[host] = .now
        }
    }

    private func spokeEarly(_ connection: TCPConnection) async -> Bool {
        do {
            let early = try await connection.read(max: 512, deadline: .now + config.greetingDelay)
            // An empty read is a client that left at once; greeting it fails harmlessly.
            return !early.isEmpty
        } catch {
            return false
        }
    }

    // MARK: - Shutdown

    /// Stops accepting and wakes idle sessions: shutting the reading side of their sockets
    /// ends their wait for a line, and they answer 421 before closing.
    private func beginDrain() {
        let idle = registry.withLock { r -> [TCPConnection] in
            r.draining = true
            return r.sessions.values.filter(\.idle).map(\.connection)
        }
        listener.close()
        for c in idle { _ = Glibc.shutdown(c.fd, Int32(SHUT_RD)) }
    }

    /// Waits until every session has ended, up to `drainTimeout`; false on timeout.
    private func drained() async -> Bool {
        let deadline = ContinuousClock.now + config.drainTimeout
        while ContinuousClock.now < deadline && !Task.isCancelled {
            if sessionCount == 0 { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return sessionCount == 0
    }
}
