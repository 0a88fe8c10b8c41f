// The client side of one SMTP session (RFC 5321) as a pure state machine: replies and link
// failures in, actions out (bytes to send, a reply to wait for, a result). It does no I/O and
// keeps no clock, so every dialogue can be tested as a table of replies; `SMTPClientConnection`
// runs it over a socket.
//
// A session is opened once (greeting, EHLO) and then carries transactions, one after the
// other: after a refused RCPT or DATA the next one starts with RSET (RFC 5321 §4.1.1.5).
// With PIPELINING (RFC 2920) MAIL, RCPT and DATA (and that RSET) go in one write and their
// replies are read in order; MAIL's and RCPT's are weighed only once DATA's is in.
//
// STARTTLS (RFC 3207) follows the first EHLO when the server offers it and the policy allows:
// after the handshake, which the shell performs when asked with `.startTLS`, the session
// knows nothing the server said before (§4.2) and says EHLO again.
//
// Decisions (RFC 5321 §4.2.1 and §4.5.4.1): 4yz defers, 5yz at MAIL, RCPT, DATA or the final
// dot fails the message, 421 anywhere defers and ends the session (§3.8). A lost connection
// defers; lost after the final dot it is ambiguous, the message may have arrived, and so is
// an answer to the dot that neither accepts nor refuses.

import Foundation
import TernCore
import TernMail

/// How long the client waits at each step. Defaults are RFC 5321 §4.5.3.2's minimums.
public struct SMTPClientTimeouts: Sendable, Equatable {
    /// Opening the TCP connection (not in the RFC; a dead host should not hold a slot).
    public var connect: Duration = .seconds(30)
    /// The 220 greeting: 5 minutes (§4.5.3.2.1).
    public var greeting: Duration = .seconds(300)
    /// The EHLO or HELO reply: the RFC names none; 5 minutes like MAIL.
    public var ehlo: Duration = .seconds(300)
    /// The MAIL reply: 5 minutes (§4.5.3.2.2).
    public var mail: Duration = .seconds(300)
    /// The RCPT reply: 5 minutes (§4.5.3.2.3).
    public var rcpt: Duration = .seconds(300)
    /// The 354 reply to DATA: 2 minutes (§4.5.3.2.4).
    public var dataInitiation: Duration = .seconds(120)
    /// Each chunk of the message text written: 3 minutes (§4.5.3.2.5).
    public var dataBlock: Duration = .seconds(180)
    /// All of the message text written, however the server paces its reading (Tern's own:
    /// the RFC bounds each chunk only, so a server taking a chunk every 179 s could hold a
    /// session for hours). 30 minutes carries 25 MB at 15 KB a second.
    public var text: Duration = .seconds(1800)
    /// The reply to the final dot: 10 minutes (§4.5.3.2.6).
    public var dataTermination: Duration = .seconds(600)
    /// The QUIT reply; the outcome is known by then, so this is short.
    public var quit: Duration = .seconds(10)

    public init() {}
}

/// One message for one recipient, as the session puts it on the wire.
public struct OutboundMessage: Sendable, Equatable {
    /// The envelope sender (the VERP address), without angle brackets.
    public var returnPath: String
    public var recipient: String
    /// The RFC 5322 message; it is normalised to CRLF and dot-stuffed on the way out.
    public var content: [UInt8]

    public init(returnPath: String, recipient: String, content: [UInt8]) {
        self.returnPath = returnPath
        self.recipient = recipient
        self.content = content
    }
}

/// Why the link to the server failed.
public enum SMTPLinkFailure: Sendable, Equatable, CustomStringConvertible {
    /// The server closed the connection (or reset it).
    case closed
    case timedOut
    /// The server sent something that is not a reply (RFC 5321 §4.2).
    case protocolError(String)
    /// Any other I/O error, described.
    case io(String)

    public var description: String {
        switch self {
        case .closed: return "connection closed by the server"
        case .timedOut: return "timed out"
        case .protocolError(let why): return "protocol error: " + why
        case .io(let why): return why
        }
    }
}

/// What the I/O shell must do next.
public enum SMTPClientAction: Sendable, Equatable {
    /// Wait up to `timeout` for a reply.
    case receive(timeout: Duration)
    /// Write `bytes`, allowing `writeTimeout` per chunk written, then wait up to
    /// `replyTimeout` for a reply.
    case send([UInt8], writeTimeout: Duration, replyTimeout: Duration)
    /// The session is open: a message may be sent.
    case ready
    /// The message (or the opening) is decided; the connection is still in step, so the
    /// shell may QUIT politely.
    case finished(DeliveryResult)
    /// The connection is no use any more: close it without QUIT. Carries the result when
    /// one was being decided.
    case close(DeliveryResult?)
    /// The server said 220 to STARTTLS: make the TLS handshake within `timeout`, then call
    /// `tlsEstablished` or `tlsFailed`.
    case startTLS(timeout: Duration)
}

public struct SMTPClientSession: Sendable {
    public enum Phase: Sendable, Equatable {
        /// Connected, nothing read yet.
        case connected
        case greeting, ehlo, helo
        /// STARTTLS sent, its reply awaited.
        case startTLS
        /// The shell is making the TLS handshake.
        case handshake
        /// Open and idle: a message may be sent.
        case ready
        /// RSET sent before a transaction, its reply awaited.
        case reset
        case mail, rcpt, data
        /// The message text is being sent, then the final reply awaited.
        case text
        /// Pipelined DATA got 354 though MAIL or RCPT was refused: an empty text was sent
        /// to close it (RFC 2920 §3.1), and its reply is not the answer.
        case abandon
        /// The server refused the session in its greeting or to EHLO/HELO; only QUIT is left.
        case refused
        case quit
        case closed
    }

    public private(set) var phase: Phase = .connected
    /// What the server offered to EHLO; empty after a HELO fall-back.
    public private(set) var extensions = ServiceExtensions()
    /// The greeting's lines, kept for logs.
    public private(set) var greeting: SMTPReply?
    /// A RCPT or DATA failed, so the server may hold a half transaction: a later message on
    /// this connection needs RSET first (RFC 5321 §4.1.1.5).
    public private(set) var needsReset = false
    /// The TLS session once STARTTLS succeeded; nil in clear text.
    public private(set) var tls: TLSSessionInfo?
    public let tlsPolicy: TLSPolicy

    public let helo: String
    public let mxHost: String
    public let address: String
    public let timeouts: SMTPClientTimeouts
    private var message: OutboundMessage?
    /// The MAIL command waiting for RSET's reply (without PIPELINING).
    private var mailCommand = ""
    /// True while the replies of one write of MAIL, RCPT and DATA are being read.
    private var pipelined = false
    /// MAIL's or RCPT's refusal read in a pipelined batch, decided once DATA's reply is in.
    private var refusal: (stage: DeliveryStage, reply: SMTPReply)?

    /// `tlsPolicy` is the one for this connection: `.disabled` when the shell has no TLS
    /// context, or skips TLS for a host whose handshake failed lately.
    public init(helo: String, mxHost: String, address: String,
                timeouts: SMTPClientTimeouts = SMTPClientTimeouts(),
                tlsPolicy: TLSPolicy = .disabled) {
        self.helo = helo
        self.mxHost = mxHost
        self.address = address
        self.timeouts = timeouts
        self.tlsPolicy = tlsPolicy
    }

    public var isReady: Bool { phase == .ready }

    // MARK: Inputs

    /// The connection is up: wait for the greeting (RFC 5321 §3.1: the client speaks second).
    public mutating func start() -> SMTPClientAction {
        guard phase == .connected else { return unusable("the session was already started") }
        phase = .greeting
        return .receive(timeout: timeouts.greeting)
    }

    /// Starts sending `message`; only in `.ready`.
    public mutating func send(_ message: OutboundMessage) -> SMTPClientAction {
        guard phase == .ready else {
            return unusable("the session cannot take a message now")
        }
        for address in [message.returnPath, message.recipient]
        where address.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F || $0 == 0x3C || $0 == 0x3E })
        {
            return .finished(result(.failed, .mail, status: .badAddressSyntax,
                                    detail: "address cannot be sent: "
                                        + Logger.printable(address)))
        }
        var command = "MAIL FROM:<\(message.returnPath)>"
        if let limit = extensions.sizeLimit, message.content.count > limit {
            // RFC 1870 §6: a client that knows the message is too big does not send it.
            return .finished(result(.failed, .mail, status: .tooBig, detail:
                "message of \(message.content.count) octets exceeds the server's SIZE "
                + "limit of \(limit)"))
        }
        if extensions.size { command += " SIZE=\(message.content.count)" }
        // RFC 6152: 8-bit text is declared when the server offers 8BITMIME. A server that
        // does not offer it still gets the text unchanged: nearly all take it, and
        // converting to 7 bit would break DKIM signatures made over the original.
        if extensions.eightBitMIME, MessageBody.hasEightBit(message.content) {
            command += " BODY=8BITMIME"
        }
        let needsUTF8 = !message.returnPath.utf8.allSatisfy { $0 < 0x80 }
            || !message.recipient.utf8.allSatisfy { $0 < 0x80 }
        if needsUTF8 {
            guard extensions.smtpUTF8 else {
                return .finished(result(.failed, .mail, status: .needsUTF8, detail:
                    "non-ASCII address and the server does not offer SMTPUTF8"))
            }
            command += " SMTPUTF8"
        }
        self.message = message
        refusal = nil
        pipelined = extensions.pipelining
        let reset = needsReset
        phase = reset ? .reset : .mail
        if pipelined {
            let rcpt = "RCPT TO:<\(message.recipient)>"
            let lines = (reset ? ["RSET"] : []) + [command, rcpt, "DATA"]
            return .send(Array(lines.map { $0 + "\r\n" }.joined().utf8),
                         writeTimeout: timeouts.mail, replyTimeout: timeouts.mail)
        }
        if reset {
            mailCommand = command
            return sendLine("RSET", timeouts.mail)
        }
        return sendLine(command, timeouts.mail)
    }

    /// Ends the session politely; the shell closes the connection after the reply.
    public mutating func quit() -> SMTPClientAction {
        switch phase {
        case .ready, .refused:
            phase = .quit
            return sendLine("QUIT", timeouts.quit)
        default:
            phase = .closed
            return .close(nil)
        }
    }

    /// A complete reply arrived.
    public mutating func receive(_ reply: SMTPReply) -> SMTPClientAction {
        switch phase {
        case .greeting: return greeted(reply)
        case .ehlo, .helo: return helloed(reply)
        case .startTLS: return startTLSAnswered(reply)
        case .reset:
            guard reply.isPositive else {
                // A server that cannot reset is out of step; the message was not offered.
                message = nil
                phase = .closed
                return .close(result(.deferred, .mail, reply: reply, status: .protocolError,
                                     detail: "RSET refused"))
            }
            needsReset = false
            phase = .mail
            return pipelined ? .receive(timeout: timeouts.mail)
                : sendLine(mailCommand, timeouts.mail)
        case .mail:
            if pipelined {
                return pipelinedReply(reply, .mail, next: .rcpt, timeout: timeouts.rcpt)
            }
            guard reply.isPositive else { return refusedTransaction(reply, .mail) }
            phase = .rcpt
            return sendLine("RCPT TO:<\(message?.recipient ?? "")>", timeouts.rcpt)
        case .rcpt:
            if pipelined {
                return pipelinedReply(reply, .rcpt, next: .data,
                                      timeout: timeouts.dataInitiation)
            }
            guard reply.isPositive else { return refusedTransaction(reply, .rcpt) }
            phase = .data
            return sendLine("DATA", timeouts.dataInitiation)
        case .data:
            if let refusal, reply.code != 421 {
                guard reply.code == 354 else {
                    return refusedTransaction(refusal.reply, refusal.stage)
                }
                phase = .abandon
                message = nil
                return .send(Array(".\r\n".utf8), writeTimeout: timeouts.dataBlock,
                             replyTimeout: timeouts.dataTermination)
            }
            guard reply.code == 354 else { return refusedTransaction(reply, .data) }
            phase = .text
            let payload = MessageBody.dataPayload(message?.content ?? [])
            message = nil
            return .send(payload, writeTimeout: timeouts.dataBlock,
                         replyTimeout: timeouts.dataTermination)
        case .text:
            if !reply.isPositive && !reply.isTransient && !reply.isPermanent {
                // Neither acceptance nor refusal (a 3yz), which leaves the server's decision
                // as unknown as a garbled reply or none does (RFC 5321 §4.3.2, §6.1).
                phase = .closed
                return .close(result(.ambiguous, .dot, status: .protocolError, detail:
                    "unexpected reply \(reply.code) to the final dot: the outcome is "
                    + "ambiguous, the message may have been delivered"))
            }
            guard reply.isPositive else { return refusedTransaction(reply, .dot) }
            phase = .ready
            return .finished(result(.delivered, .dot, reply: reply))
        case .abandon:
            guard let refusal else { return unusable("no refusal to report") }
            needsReset = true
            return refusedTransaction(refusal.reply, refusal.stage)
        case .quit:
            phase = .closed
            return .close(nil)
        case .connected, .ready, .refused, .handshake, .closed:
            // Nothing was asked: a server that talks out of turn is out of step.
            phase = .closed
            return .close(nil)
        }
    }

    /// The link failed while writing (`whileWriting`) or while waiting for a reply.
    public mutating func linkFailed(_ failure: SMTPLinkFailure, whileWriting: Bool = false)
        -> SMTPClientAction
    {
        let before = phase
        phase = .closed
        let status: EnhancedStatus = {
            if case .protocolError = failure { return .protocolError }
            return .badConnection
        }()
        switch before {
        case .connected, .greeting:
            // No SMTP answer at all: like an unreachable host, the next address may do.
            return .close(result(.deferred, .greeting, status: .noAnswer,
                                 detail: "\(failure) before the greeting",
                                 fallback: .nextAddress))
        case .ehlo, .helo:
            return .close(result(.deferred, .ehlo, status: status,
                                 detail: "\(failure) waiting for the reply to EHLO"))
        case .startTLS, .handshake:
            return .close(result(.deferred, .tls, status: status,
                                 detail: "\(failure) waiting for the reply to STARTTLS"))
        case .abandon:
            // The refusal already decided this message; only the session is lost.
            return .close(refusal.map {
                result($0.reply.isPermanent ? .failed : .deferred, $0.stage, reply: $0.reply)
            })
        case .reset, .mail, .rcpt, .data:
            let stage: DeliveryStage = before == .rcpt ? .rcpt : before == .data ? .data : .mail
            let command = stage == .data ? "DATA" : stage.rawValue.uppercased()
            return .close(result(.deferred, stage, status: status,
                                 detail: "\(failure) waiting for the reply to \(command)"))
        case .text where whileWriting:
            return .close(result(.deferred, .data, status: status,
                                 detail: "\(failure) while sending the message text"))
        case .text:
            // RFC 5321 §4.5.3.2.6 and §6.1: the server may have taken the message already;
            // retrying may deliver it twice, giving up may lose it. The scheduler decides
            // (TERN_AMBIGUOUS_RETRIES).
            return .close(result(.ambiguous, .dot, status: status, detail:
                "\(failure) after the final dot with no reply: the outcome is ambiguous, "
                + "the message may have been delivered"))
        case .ready, .refused, .quit, .closed:
            return .close(nil)
        }
    }

    // MARK: Steps

    private mutating func greeted(_ reply: SMTPReply) -> SMTPClientAction {
        greeting = reply
        switch reply.code {
        case 220:
            phase = .ehlo
            return sendLine("EHLO \(helo)", timeouts.ehlo)
        case 421:
            phase = .closed
            return .close(result(.deferred, .greeting, reply: reply))
        case 554:
            // RFC 5321 §3.1: this host will not serve us; it is a permanent answer for the
            // host, not for the domain, so the next MX may still take the message.
            phase = .refused
            return .finished(result(.failed, .greeting, reply: reply, fallback: .nextHost))
        default:
            phase = .refused
            return .finished(result(.deferred, .greeting, reply: reply))
        }
    }

    private mutating func helloed(_ reply: SMTPReply) -> SMTPClientAction {
        if reply.isPositive {
            extensions = phase == .ehlo ? ServiceExtensions(ehlo: reply) : ServiceExtensions()
            guard tls == nil, tlsPolicy != .disabled else {
                phase = .ready
                return .ready
            }
            if extensions.startTLS {
                phase = .startTLS
                return sendLine("STARTTLS", timeouts.ehlo)
            }
            if tlsPolicy == .required {
                phase = .refused
                return .finished(result(.deferred, .tls, status: .encryptionNeeded, detail:
                    "TLS is required for this destination and \(mxHost) does not offer "
                    + "STARTTLS"))
            }
            phase = .ready
            return .ready
        }
        if reply.code == 421 {
            phase = .closed
            return .close(result(.deferred, .ehlo, reply: reply))
        }
        if phase == .ehlo && reply.isPermanent {
            // RFC 5321 §4.1.4 and §3.2: a server that does not know EHLO gets HELO.
            phase = .helo
            return sendLine("HELO \(helo)", timeouts.ehlo)
        }
        // The server refuses our name or address: a matter of our reputation, not of the
        // recipient, so the message waits rather than bounces.
        phase = .refused
        return .finished(result(.deferred, .ehlo, reply: reply))
    }

    /// The reply to STARTTLS: 220 starts the handshake (RFC 3207 §4); 454 and the rest
    /// leave the session in clear text as it was, which only a required policy refuses.
    private mutating func startTLSAnswered(_ reply: SMTPReply) -> SMTPClientAction {
        if reply.code == 220 {
            phase = .handshake
            return .startTLS(timeout: timeouts.ehlo)
        }
        if reply.code == 421 {
            phase = .closed
            return .close(result(.deferred, .tls, reply: reply))
        }
        guard tlsPolicy != .required else {
            // The refusal is kept as text, not as the reply: its code may be 5yz, and a
            // destination that will not encrypt is a reason to wait, not to bounce.
            phase = .refused
            return .finished(result(.deferred, .tls, status: .encryptionNeeded, detail:
                "TLS is required for this destination and \(mxHost) refused STARTTLS: "
                + "\(reply.code) " + reply.text.replacingOccurrences(of: "\n", with: " ")))
        }
        phase = .ready
        return .ready
    }

    // MARK: TLS, as the shell reports it

    /// The handshake succeeded: forget the first EHLO's answer and say EHLO again
    /// (RFC 3207 §4.2), unless a required policy finds the certificate unverified.
    public mutating func tlsEstablished(_ info: TLSSessionInfo) -> SMTPClientAction {
        guard phase == .handshake else { return unusable("TLS established out of turn") }
        tls = info
        extensions = ServiceExtensions()
        if tlsPolicy == .required && !info.verified {
            phase = .refused
            return .finished(result(.deferred, .tls, status: .tlsFailure, detail:
                "TLS is required for this destination and the certificate of \(mxHost) "
                + "did not verify: \(info.verifyError)"))
        }
        phase = .ehlo
        return sendLine("EHLO \(helo)", timeouts.ehlo)
    }

    /// The handshake failed; the connection cannot carry SMTP any more. An opportunistic
    /// session asks for a clear-text connection instead.
    public mutating func tlsFailed(_ why: String) -> SMTPClientAction {
        phase = .closed
        let opportunistic = tlsPolicy == .opportunistic
        return .close(result(.deferred, .tls, status: .tlsFailure,
                             detail: "STARTTLS with \(mxHost) failed: \(why)",
                             fallback: opportunistic ? .withoutTLS : .none))
    }

    /// One reply of a pipelined batch before DATA's: kept, unless it ends the session.
    private mutating func pipelinedReply(_ reply: SMTPReply, _ stage: DeliveryStage,
                                         next: Phase, timeout: Duration) -> SMTPClientAction {
        if reply.code == 421 { return refusedTransaction(reply, stage) }
        if !reply.isPositive && refusal == nil { refusal = (stage, reply) }
        phase = next
        return .receive(timeout: timeout)
    }

    private mutating func refusedTransaction(_ reply: SMTPReply, _ stage: DeliveryStage)
        -> SMTPClientAction
    {
        message = nil
        refusal = nil
        if reply.code == 421 {
            phase = .closed
            return .close(result(.deferred, stage, reply: reply))
        }
        if reply.isTransient || reply.isPermanent {
            needsReset = needsReset || stage != .mail
            phase = .ready
            return .finished(result(reply.isPermanent ? .failed : .deferred, stage, reply: reply))
        }
        // A 2yz or 3yz where the protocol allows neither: the dialogue is out of step.
        phase = .closed
        return .close(result(.deferred, stage, reply: reply, status: .protocolError,
                             detail: "unexpected reply \(reply.code) at \(stage.rawValue)"))
    }

    // MARK: Helpers

    private func sendLine(_ line: String, _ timeout: Duration) -> SMTPClientAction {
        .send(Array((line + "\r\n").utf8), writeTimeout: timeout, replyTimeout: timeout)
    }

    private mutating func unusable(_ why: String) -> SMTPClientAction {
        phase = .closed
        return .close(result(.deferred, .connect, status: .protocolError, detail: why))
    }

    private func result(_ outcome: AttemptOutcome, _ stage: DeliveryStage,
                        reply: SMTPReply? = nil, status: EnhancedStatus? = nil,
                        detail: String = "", fallback: DeliveryFallback = .none)
        -> DeliveryResult
    {
        DeliveryResult(outcome: outcome, reply: reply, stage: stage, mxHost: mxHost,
                       address: address, tls: tls, detail: detail, status: status,
                       fallback: fallback)
    }
}
