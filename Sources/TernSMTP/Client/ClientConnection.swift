// The I/O shell around `SMTPClientSession`: it writes what the session asks, reads replies
// line by line with a deadline each, and hands every reply or failure back to the session.
// All decisions stay in the session; this file only moves bytes and maps errors.
//
// Everything read comes from a server we do not trust: lines are capped in length, replies
// in line count and size, and the text is only ever stored and logged, never interpreted
// beyond its code and a few EHLO keywords. A reply must answer a command: one already
// waiting when the next command is due puts the session out of step.

import TernCore
import TernMail

#if canImport(Glibc)
import Glibc
#endif

/// One SMTP client connection. One task drives it at a time.
public final class SMTPClientConnection: @unchecked Sendable {
    /// RFC 5321 §4.5.3.1.5 allows 512 octets per reply line; real servers send longer
    /// ones, so this is lenient, but still bounded.
    public static let maxReplyLine = 4096
    /// Lines in one reply (an EHLO reply has a dozen or so).
    public static let maxReplyLines = 200
    /// Octets in one reply: over a hundred lines of the RFC's 512, more than any real reply
    /// needs, and little enough to store with every attempt and to hold in every session.
    public static let maxReplySize = 65536
    /// The message text is written in chunks of this size, each within the data-block
    /// timeout (RFC 5321 §4.5.3.2.5 times each TCP send, not the whole text).
    public static let chunkSize = 65536

    /// TCP, then the TLS session over it after STARTTLS.
    private var stream: any ByteStream
    private let reader: LineReader
    private var session: SMTPClientSession
    private let tlsContext: TLSContext?
    private var closed = false
    /// What opening the session took; the first message's result carries it.
    public internal(set) var openTimings = DeliveryTimings()
    private var messagesSent = 0

    /// Runs a session over a stream that is already connected. STARTTLS is used as
    /// `tlsPolicy` says when `tlsContext` is given, never without it.
    public init(stream: any ByteStream, helo: String, mxHost: String, address: String,
                timeouts: SMTPClientTimeouts = SMTPClientTimeouts(),
                tlsContext: TLSContext? = nil, tlsPolicy: TLSPolicy = .disabled) {
        self.stream = stream
        reader = LineReader(stream)
        self.tlsContext = tlsContext
        session = SMTPClientSession(helo: helo, mxHost: mxHost, address: address,
                                    timeouts: timeouts,
                                    tlsPolicy: tlsContext == nil ? .disabled : tlsPolicy)
    }

    /// Opens a TCP connection to `address`, from `source` when given (the pool's IP).
    /// Throws `IOError` when no connection can be made.
    public static func connect(
        to address: SocketAddress, from source: SocketAddress?, helo: String, mxHost: String,
        timeouts: SMTPClientTimeouts = SMTPClientTimeouts(),
        tlsContext: TLSContext? = nil, tlsPolicy: TLSPolicy = .disabled
    ) async throws -> SMTPClientConnection {
        let started = ContinuousClock.now
        let tcp = try await TCPConnection.connect(to: address, from: source,
                                                  deadline: .now + timeouts.connect)
        let connection = SMTPClientConnection(stream: tcp, helo: helo, mxHost: mxHost,
                                              address: address.host, timeouts: timeouts,
                                              tlsContext: tlsContext, tlsPolicy: tlsPolicy)
        connection.openTimings.connectMs = (ContinuousClock.now - started).milliseconds
        return connection
    }

    /// The TLS session, once STARTTLS succeeded.
    public var tls: TLSSessionInfo? { session.tls }
    /// The STARTTLS policy this connection runs under (`.disabled` without a TLS context).
    public var tlsPolicy: TLSPolicy { session.tlsPolicy }

    /// What the server offered to EHLO.
    public var extensions: ServiceExtensions { session.extensions }
    /// True while a message may be sent.
    public var isReady: Bool { !closed && session.isReady }
    public var phase: SMTPClientSession.Phase { session.phase }

    /// Reads the greeting and says EHLO (HELO if need be). Nil when the session is ready
    /// for a message; otherwise the result that ends this attempt at this address.
    public func open() async -> DeliveryResult? {
        let started = ContinuousClock.now
        var result: DeliveryResult?
        switch await run(session.start()) {
        case .ready: result = nil
        case .finished(let r): result = r
        case .close(let r): result = r ?? lostResult(.greeting)
        case .receive, .send, .startTLS: result = lostResult(.greeting)
        }
        openTimings.greetingMs = (ContinuousClock.now - started).milliseconds
            - openTimings.tlsMs
        result?.timings = openTimings
        return result
    }

    /// Sends one message; the session must be ready. The result carries the session's
    /// opening times when it is the first message on it.
    public func send(_ message: OutboundMessage) async -> DeliveryResult {
        let started = ContinuousClock.now
        var result: DeliveryResult
        // A session that idled since its last reply should have nothing to say: what it sent
        // meanwhile is buffered now, and found out of step before MAIL (see `run`).
        if messagesSent > 0 && !closed { reader.readAvailable() }
        switch await run(session.send(message)) {
        case .finished(let r): result = r
        case .close(let r): result = r ?? lostResult(.mail)
        case .ready, .receive, .send, .startTLS: result = lostResult(.mail)
        }
        if messagesSent == 0 {
            result.timings = openTimings
        } else {
            result.timings = DeliveryTimings()
            result.timings.reused = true
        }
        result.timings.dataMs = (ContinuousClock.now - started).milliseconds
        messagesSent += 1
        return result
    }

    /// QUIT, then close. Failures are ignored: the outcome is already known.
    public func quit() async {
        if !closed { _ = await run(session.quit()) }
        close()
    }

    public func close() {
        guard !closed else { return }
        closed = true
        stream.close()
    }

    // MARK: Driving the session

    /// Carries out actions until the session needs its caller (ready, finished, closed).
    private func run(_ first: SMTPClientAction) async -> SMTPClientAction {
        var action = first
        while true {
            switch action {
            case .receive(let timeout):
                action = await readReply(timeout: timeout)
            case .send(let bytes, let writeTimeout, let replyTimeout):
                if reader.buffered > 0 {
                    // RFC 5321 §4.2, RFC 2920 §3.1: one reply per command. A reply unread
                    // before the next command answers none of ours; read later it would
                    // pass for the answer to the text or the next MAIL.
                    action = session.linkFailed(
                        .protocolError("the server replied before it was asked"),
                        whileWriting: true)
                } else if let failure = await write(bytes, chunkTimeout: writeTimeout) {
                    action = session.linkFailed(failure, whileWriting: true)
                } else {
                    action = await readReply(timeout: replyTimeout)
                }
            case .startTLS(let timeout):
                action = await startTLS(timeout: timeout)
            case .ready, .finished:
                return action
            case .close:
                close()
                return action
            }
        }
    }

    /// The client's TLS handshake on the open connection (RFC 3207 §4). Anything the server
    /// sent after its 220 is dropped unread: it came before TLS and cannot be trusted.
    private func startTLS(timeout: Duration) async -> SMTPClientAction {
        guard let tlsContext, !closed else { return session.tlsFailed("no TLS context") }
        reader.discardBuffered()
        let started = ContinuousClock.now
        defer { openTimings.tlsMs = (ContinuousClock.now - started).milliseconds }
        do {
            let tls = try await TLSStream.connect(over: stream, context: tlsContext,
                                                  host: session.mxHost,
                                                  deadline: .now + timeout)
            stream = tls
            reader.stream = tls
            return session.tlsEstablished(tls.info)
        } catch {
            return session.tlsFailed("\(error)")
        }
    }

    private func write(_ bytes: [UInt8], chunkTimeout: Duration) async -> SMTPLinkFailure? {
        if closed { return .closed }
        var offset = 0
        let whole = ContinuousClock.now + session.timeouts.text
        do {
            repeat {
                let end = min(bytes.count, offset + Self.chunkSize)
                let chunk = offset == 0 && end == bytes.count ? bytes : Array(bytes[offset..<end])
                try await stream.write(chunk, deadline: min(.now + chunkTimeout, whole))
                offset = end
            } while offset < bytes.count
            return nil
        } catch {
            return Self.failure(error)
        }
    }

    private func readReply(timeout: Duration) async -> SMTPClientAction {
        if closed { return session.linkFailed(.closed) }
        let deadline = ContinuousClock.now + timeout
        var parser = SMTPReplyParser()
        var lines = 0, octets = 0
        do {
            while true {
                guard let line = try await reader.readLine(limit: Self.maxReplyLine,
                                                           deadline: deadline) else {
                    return session.linkFailed(.closed)
                }
                lines += 1
                octets += line.count
                if lines > Self.maxReplyLines {
                    return session.linkFailed(.protocolError("reply of over "
                        + "\(Self.maxReplyLines) lines"))
                }
                if octets > Self.maxReplySize {
                    return session.linkFailed(.protocolError("reply of over "
                        + "\(Self.maxReplySize) octets"))
                }
                if let reply = try parser.feed(line) { return session.receive(reply) }
            }
        } catch {
            return session.linkFailed(Self.failure(error))
        }
    }

    static func failure(_ error: any Error) -> SMTPLinkFailure {
        switch error {
        case IOError.timedOut: return .timedOut
        case IOError.closed, LineError.endOfStream: return .closed
        case IOError.system(_, let code) where code == ECONNRESET || code == EPIPE:
            return .closed
        case LineError.tooLong(let limit):
            return .protocolError("reply line longer than \(limit) octets")
        case let e as SMTPReplyError: return .protocolError(Logger.printable(e.description))
        default: return .io("\(error)")
        }
    }

    private func lostResult(_ stage: DeliveryStage) -> DeliveryResult {
        DeliveryResult(outcome: .deferred, stage: stage, mxHost: session.mxHost,
                       address: session.address, detail: "the session ended unexpectedly",
                       status: .badConnection)
    }
}

/// Opening sessions and whole attempts at one address, as the sender makes them.
public enum SMTPClient {
    /// What opening a session at one address came to.
    public enum Opening: Sendable {
        /// Greeted and EHLO answered (over TLS if the policy asked for it): a message may be
        /// sent. `note` is non-empty when TLS failed and the session is in clear text.
        case ready(SMTPClientConnection, note: String)
        /// The result for this address: no connection, a refusing greeting, TLS refused...
        case failed(DeliveryResult)
    }

    /// The STARTTLS policy a new connection to `mxHost` runs under for mail to `domain`:
    /// `.disabled` without TLS settings, and for an opportunistic one while `mxHost` is
    /// remembered as having broken TLS.
    public static func policy(_ tls: SMTPClientTLS?, domain: String, mxHost: String)
        -> TLSPolicy
    {
        guard let tls else { return .disabled }
        let policy = tls.policies.policy(for: domain)
        if policy == .opportunistic, tls.fallbacks.avoidsTLS(mxHost) { return .disabled }
        return policy
    }

    /// Connects and opens a session (greeting, EHLO, STARTTLS as the policy for `domain`,
    /// the recipient's, says). A connection that cannot be made comes back deferred at
    /// stage `connect` with fallback `.nextAddress`.
    ///
    /// Under the opportunistic policy a failed handshake is followed at once by a clear-text
    /// connection to the same address, and the host is remembered so that the next
    /// deliveries to it skip TLS until the memory expires.
    public static func open(
        to address: SocketAddress, mxHost: String, from source: SocketAddress?, helo: String,
        timeouts: SMTPClientTimeouts = SMTPClientTimeouts(),
        tls: SMTPClientTLS? = nil, domain: String = ""
    ) async -> Opening {
        let policy = policy(tls, domain: domain, mxHost: mxHost)
        let first = await openOnce(to: address, mxHost: mxHost, from: source, helo: helo,
                                   timeouts: timeouts, tlsContext: tls?.context,
                                   tlsPolicy: policy)
        guard case .failed(let broken) = first, broken.fallback == .withoutTLS, let tls else {
            return first
        }
        tls.fallbacks.remember(mxHost)
        let why = "sent without TLS: " + broken.detail
        switch await openOnce(to: address, mxHost: mxHost, from: source, helo: helo,
                              timeouts: timeouts, tlsContext: nil, tlsPolicy: .disabled) {
        case .ready(let connection, _):
            return .ready(connection, note: why)
        case .failed(var clear):
            clear.append(note: why)
            return .failed(clear)
        }
    }

    /// Connects, opens the session as `open` does, sends `message` and quits.
    public static func deliver(
        _ message: OutboundMessage, to address: SocketAddress, mxHost: String,
        from source: SocketAddress?, helo: String,
        timeouts: SMTPClientTimeouts = SMTPClientTimeouts(),
        tls: SMTPClientTLS? = nil, domain: String = ""
    ) async -> DeliveryResult {
        switch await open(to: address, mxHost: mxHost, from: source, helo: helo,
                          timeouts: timeouts, tls: tls, domain: domain) {
        case .failed(let result):
            return result
        case .ready(let connection, let note):
            var result = await connection.send(message)
            await connection.quit()
            result.append(note: note)
            return result
        }
    }

    private static func openOnce(
        to address: SocketAddress, mxHost: String, from source: SocketAddress?, helo: String,
        timeouts: SMTPClientTimeouts, tlsContext: TLSContext?, tlsPolicy: TLSPolicy
    ) async -> Opening {
        let connection: SMTPClientConnection
        let started = ContinuousClock.now
        do {
            connection = try await SMTPClientConnection.connect(
                to: address, from: source, helo: helo, mxHost: mxHost, timeouts: timeouts,
                tlsContext: tlsContext, tlsPolicy: tlsPolicy)
        } catch {
            let why = error as? IOError == .timedOut ? "connect timed out" : "\(error)"
            var failed = DeliveryResult(outcome: .deferred, stage: .connect, mxHost: mxHost,
                                        address: address.host, detail: why,
                                        status: .noAnswer, fallback: .nextAddress)
            failed.timings.connectMs = (ContinuousClock.now - started).milliseconds
            return .failed(failed)
        }
        if let refused = await connection.open() {
            await connection.quit()
            return .failed(refused)
        }
        return .ready(connection, note: "")
    }
}
