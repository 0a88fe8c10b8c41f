// What one delivery attempt came to, as a value: the outcome the scheduler acts on, the
// remote reply that decided it (or, when no reply did, why not), and where it happened.
//
// Every way an attempt can end, from DNS to the final dot, produces one of these; nothing
// is thrown past the sender. Codes and statuses beside each case cite the RFC they follow.

import TernCore
import TernMail

/// The step of the attempt at which the outcome was decided. The raw values are the `stage`
/// field of the `results` stream.
public enum DeliveryStage: String, Sendable, Equatable, CaseIterable {
    /// Looking up MX and address records, before any connection.
    case dns
    /// Opening the TCP connection.
    case connect
    /// Waiting for the server's 220 (RFC 5321 §3.1).
    case greeting
    /// EHLO, or the HELO it fell back to (RFC 5321 §4.1.1.1).
    case ehlo
    /// STARTTLS and the TLS handshake (RFC 3207), or a TLS policy that was not met.
    case tls
    case mail
    case rcpt
    /// DATA and the message text up to the final dot (RFC 5321 §4.1.1.4).
    case data
    /// The reply to the final dot, which is the server's acceptance (RFC 5321 §4.1.1.4).
    case dot
}

/// Where to go after an attempt at one address did not decide the message.
public enum DeliveryFallback: Sendable, Equatable {
    /// The result stands: the host answered in SMTP.
    case none
    /// No SMTP conversation happened (refused, unreachable, no greeting): try the host's
    /// next address, then the next MX (RFC 5321 §5.1).
    case nextAddress
    /// The host turned the connection away with 554 in its greeting: treat it as a
    /// permanent failure for this host only and try the next MX (RFC 5321 §3.1).
    case nextHost
    /// The TLS handshake failed under the opportunistic policy: the connection is unusable,
    /// so connect to the same address again without STARTTLS (RFC 3207 §4.1 lets a client
    /// go on in clear when it does not insist on TLS).
    case withoutTLS
}

/// How long the steps of one attempt took, in ms. A message sent on a session opened for an
/// earlier one (`reused`) spent nothing on connect, greeting or TLS.
public struct DeliveryTimings: Sendable, Equatable {
    /// The TCP connection.
    public var connectMs: Int64 = 0
    /// From connected to ready for a message: the greeting, EHLO (both of them with
    /// STARTTLS), less the TLS handshake.
    public var greetingMs: Int64 = 0
    /// The TLS handshake alone; 0 in clear text.
    public var tlsMs: Int64 = 0
    /// The transaction: MAIL to the reply to the final dot (or to where it ended).
    public var dataMs: Int64 = 0
    public var reused = false

    public init() {}
}

/// The result of one attempt, ready to be written to the `results` stream.
public struct DeliveryResult: Sendable, Equatable {
    public var outcome: AttemptOutcome
    /// The reply that decided the outcome; nil when none did (DNS, connection, timeout).
    public var reply: SMTPReply?
    public var stage: DeliveryStage
    /// The MX host name tried last ("" when none was reached).
    public var mxHost: String
    /// The address of `mxHost` tried last ("" when none).
    public var address: String
    /// The TLS session the outcome was decided over; nil in clear text.
    public var tls: TLSSessionInfo?
    /// Why, in words, when no reply says it; also notes an ambiguous outcome.
    public var detail: String
    /// The RFC 3463 status for an outcome without a reply (4.4.1 for no answer, ...).
    public var status: EnhancedStatus?
    public var fallback: DeliveryFallback
    /// The steps' durations, as far as the attempt got.
    public var timings = DeliveryTimings()

    public init(outcome: AttemptOutcome, reply: SMTPReply? = nil, stage: DeliveryStage,
                mxHost: String = "", address: String = "", tls: TLSSessionInfo? = nil,
                detail: String = "", status: EnhancedStatus? = nil,
                fallback: DeliveryFallback = .none) {
        self.outcome = outcome
        self.reply = reply
        self.stage = stage
        self.mxHost = mxHost
        self.address = address
        self.tls = tls
        self.detail = detail
        self.status = status
        self.fallback = fallback
    }

    /// "" or the TLS version and cipher ("TLSv1.3 TLS_AES_256_GCM_SHA384"), the `tls` field.
    public var tlsSummary: String { tls?.summary ?? "" }

    /// The reply code, 0 when no reply decided (the contract's "none was read").
    public var code: Int { reply?.code ?? 0 }

    /// The enhanced status from the reply, else the one chosen for a reply-less outcome.
    public var enhanced: String { (reply?.enhanced ?? status)?.description ?? "" }

    /// The reply's lines joined by "\n", then the detail when there is one.
    public var text: String {
        switch (reply, detail.isEmpty) {
        case (let reply?, true): return reply.text
        case (let reply?, false): return reply.text + "\n" + detail
        case (nil, _): return detail
        }
    }

    /// Adds `note` (if any) after the detail, "; "-separated.
    public mutating func append(note: String) {
        guard !note.isEmpty else { return }
        detail = detail.isEmpty ? note : detail + "; " + note
    }
}

extension EnhancedStatus {
    /// 4.4.1: no answer from host (RFC 3463 §3.5).
    static let noAnswer = EnhancedStatus(statusClass: 4, subject: 4, detail: 1)
    /// 4.4.2: bad connection, lost or timed out mid-session (RFC 3463 §3.5).
    static let badConnection = EnhancedStatus(statusClass: 4, subject: 4, detail: 2)
    /// 4.5.0: the server broke the protocol (RFC 3463 §3.6).
    static let protocolError = EnhancedStatus(statusClass: 4, subject: 5, detail: 0)
    /// 5.1.3: an address Tern cannot put on the wire (RFC 3463 §3.2).
    static let badAddressSyntax = EnhancedStatus(statusClass: 5, subject: 1, detail: 3)
    /// 5.3.4: larger than the server's SIZE (RFC 3463 §3.4, RFC 1870 §6).
    static let tooBig = EnhancedStatus(statusClass: 5, subject: 3, detail: 4)
    /// 4.7.5: cryptographic failure, here a TLS handshake or a certificate (RFC 3463 §3.8).
    static let tlsFailure = EnhancedStatus(statusClass: 4, subject: 7, detail: 5)
    /// 4.7.10: encryption needed and not available (the IANA registry of RFC 5248).
    static let encryptionNeeded = EnhancedStatus(statusClass: 4, subject: 7, detail: 10)
    /// 5.6.7: a non-ASCII address and no SMTPUTF8 (RFC 6531 §3.2).
    static let needsUTF8 = EnhancedStatus(statusClass: 5, subject: 6, detail: 7)
}
