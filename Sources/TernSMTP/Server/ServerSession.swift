// The server side of one SMTP session (RFC 5321) as a pure state machine: a line in, an
// action out (a reply to send, a question for the recipient policy, a message for the
// handler), and the state moves on. It does no I/O and keeps no clock, so every dialogue can
// be tested as a table of lines and codes; `SMTPServer` runs it over a socket.
//
// Everything it reads comes from an untrusted peer: every input has a bounded cost, every
// malformed line gets a reply rather than a crash, and the limits of `SMTPServerConfig`
// end sessions that misbehave (421, RFC 5321 §3.8).

import TernCore
import TernMail

/// The BODY parameter of MAIL (RFC 6152).
public enum SMTPBodyType: String, Sendable, Equatable {
    case sevenBit = "7BIT"
    case eightBitMIME = "8BITMIME"
}

/// What the client has said about the transaction in progress.
public struct SMTPEnvelope: Sendable, Equatable {
    /// The address the connection comes from.
    public var peer: SocketAddress?
    /// The name given with HELO or EHLO; "" before either.
    public var helo: String = ""
    /// True after EHLO, false after HELO: only EHLO allows ESMTP parameters (RFC 5321 §4.1.1.1).
    public var extended = false
    /// The reverse path without brackets; "" for the null path `<>` that bounces use.
    public var mailFrom = ""
    /// SIZE=n given with MAIL (RFC 1870), nil when absent.
    public var declaredSize: Int?
    public var body: SMTPBodyType = .sevenBit
    /// SMTPUTF8 given with MAIL (RFC 6531 §3.4).
    public var smtputf8 = false
    /// Recipients the policy accepted, as the client wrote them (brackets removed).
    public var recipients: [String] = []
    /// The TLS version and cipher after STARTTLS ("TLSv1.3 TLS_AES_256_GCM_SHA384"), else "".
    public var tls = ""

    public init(peer: SocketAddress? = nil) { self.peer = peer }
}

/// The recipient policy's answer for one RCPT.
public enum RecipientDecision: Sendable, Equatable {
    case accept
    /// Refuse with this reply; a 421 also ends the session.
    case refuse(SMTPReply)
}

/// What the I/O shell must do next.
public enum SMTPServerAction: Sendable, Equatable {
    /// Send the reply, then read the next line.
    case reply(SMTPReply)
    /// Send the reply, then close the connection.
    case close(SMTPReply)
    /// Nothing to send (a line of message text was taken); read the next line.
    case none
    /// Ask the recipient policy about this mailbox; give its answer to `recipientDecided`.
    case checkRecipient(String, SMTPEnvelope)
    /// A complete message, unstuffed: hand it to the message handler and give its reply to
    /// `messageHandled`. Nothing may be acknowledged before that reply is sent.
    case deliver(SMTPEnvelope, [UInt8])
    /// STARTTLS was accepted: send the 220, drop any input already buffered (RFC 3207 §4.2:
    /// it arrived before TLS, and obeying it would let a man in the middle inject commands),
    /// make the handshake, then call `tlsStarted`; when the handshake fails, close.
    case startTLS(SMTPReply)
}

extension SMTPReply {
    /// A server reply with its RFC 3463 status, written "550", "5.7.1", "text".
    public init(_ code: Int, _ status: String, _ text: String) {
        let enhanced = EnhancedStatus(status)
            ?? EnhancedStatus(statusClass: code / 100, subject: 0, detail: 0)
        self.init(code: code, enhanced: enhanced, text: text)
    }
}

public struct SMTPServerSession: Sendable {
    public enum Phase: Sendable, Hashable {
        /// Accepted, not yet greeted: anything the client says now is early talk.
        case connected
        /// Greeted; waiting for HELO or EHLO.
        case greeted
        /// HELO or EHLO given, no transaction open.
        case ready
        /// MAIL accepted, no recipient accepted yet.
        case mail
        /// At least one recipient accepted.
        case recipients
        /// Reading message text after 354.
        case data
        /// Waiting for `recipientDecided`.
        case checkingRecipient
        /// Waiting for `messageHandled`.
        case delivering
        /// Waiting for `tlsStarted` or `tlsUnavailable`.
        case startingTLS
        case closed
    }

    public let config: SMTPServerConfig
    public private(set) var phase: Phase = .connected
    public private(set) var envelope: SMTPEnvelope
    /// Command lines received so far (message text not counted).
    public private(set) var commands = 0
    /// Refusals given so far; past `config.maxErrors` the session ends.
    public private(set) var errors = 0

    private var pendingRecipient = ""
    private var data: [UInt8] = []
    private var dataOctets = 0
    private var dataTooBig = false
    private var dataLineTooLong = false
    /// Whether the text line before this one ended with a bare LF (see `dataLine`).
    private var previousLineEndedBare = false

    public init(config: SMTPServerConfig, peer: SocketAddress? = nil) {
        self.config = config
        self.envelope = SMTPEnvelope(peer: peer)
    }

    /// True between transactions: a session here loses nothing if it is closed now.
    public var isIdle: Bool { phase == .greeted || phase == .ready }

    // MARK: - Inputs

    /// The greeting (RFC 5321 §4.3.1, no enhanced code per RFC 2034 §3), or 421 when the
    /// server is over its session limit.
    public mutating func greet(accepting: Bool = true) -> SMTPServerAction {
        guard phase == .connected else { return internalError() }
        guard accepting else {
            phase = .closed
            return .close(SMTPReply(421, "4.3.2",
                                    "\(config.hostname) too many connections, try again later"))
        }
        phase = .greeted
        return .reply(SMTPReply(code: 220, lines: ["\(config.hostname) ESMTP Tern"]))
    }

    /// The client's address already has `maxSessionsPerClient` sessions open.
    public mutating func tooManyFromClient() -> SMTPServerAction {
        phase = .closed
        return .close(SMTPReply(421, "4.7.0",
                                "\(config.hostname) too many connections from your address"))
    }

    /// The session has lasted `sessionTimeout`.
    public mutating func sessionTooLong() -> SMTPServerAction {
        phase = .closed
        return .close(SMTPReply(421, "4.4.2", "\(config.hostname) session too long, closing"))
    }

    /// The client spoke before the greeting (RFC 5321 §3.1: it must wait for it).
    public mutating func earlyTalker() -> SMTPServerAction {
        phase = .closed
        return .close(SMTPReply(554, "5.5.1",
                                "\(config.hostname) protocol error: you spoke before my greeting"))
    }

    /// No line within `idleTimeout` (RFC 5321 §4.5.3.2.7).
    public mutating func timedOut() -> SMTPServerAction {
        phase = .closed
        return .close(SMTPReply(421, "4.4.2", "\(config.hostname) idle too long, closing"))
    }

    /// A line longer than `lineBufferCap`: it cannot be skipped, so the session ends. In
    /// message text it is the message that is refused (a media error, RFC 3463 §3.7), not
    /// a command.
    public mutating func lineOverflow() -> SMTPServerAction {
        let inText = phase == .data
        phase = .closed
        if inText {
            let text = "message refused: a line is longer than \(config.maxTextLine) octets"
            return .close(SMTPReply(554, "5.6.0", text + "; closing connection"))
        }
        return .close(SMTPReply(500, "5.5.6", "line too long, closing connection"))
    }

    /// The server is stopping; only sent to idle sessions.
    public mutating func shuttingDown() -> SMTPServerAction {
        phase = .closed
        return .close(SMTPReply(421, "4.3.2", "\(config.hostname) shutting down, try again later"))
    }

    /// One line from the client, without its CR LF; `endedBare` when it ended with a bare LF.
    public mutating func receive(_ line: [UInt8], endedBare: Bool = false) -> SMTPServerAction {
        switch phase {
        case .connected: return earlyTalker()
        case .data: return dataLine(line, endedBare: endedBare)
        case .greeted, .ready, .mail, .recipients: return command(line)
        case .checkingRecipient, .delivering, .startingTLS, .closed: return internalError()
        }
    }

    /// The handshake after STARTTLS succeeded: the session starts afresh, as if just
    /// greeted, and the client must say EHLO again (RFC 3207 §4.2). Nothing to send.
    public mutating func tlsStarted(_ summary: String) -> SMTPServerAction {
        guard phase == .startingTLS else { return internalError() }
        resetTransaction()
        envelope.helo = ""
        envelope.extended = false
        envelope.tls = summary
        phase = .greeted
        return .none
    }

    /// TLS could not be set up before the 220 was sent (RFC 3207 §4: 454, try later); the
    /// session goes on in clear text.
    public mutating func tlsUnavailable() -> SMTPServerAction {
        guard phase == .startingTLS else { return internalError() }
        phase = .ready
        return .reply(SMTPReply(454, "4.7.0", "TLS not available due to temporary reason"))
    }

    /// The policy's answer to `.checkRecipient`.
    public mutating func recipientDecided(_ decision: RecipientDecision) -> SMTPServerAction {
        guard phase == .checkingRecipient else { return internalError() }
        switch decision {
        case .accept:
            envelope.recipients.append(pendingRecipient)
            phase = .recipients
            return .reply(SMTPReply(250, "2.1.5", "recipient OK"))
        case .refuse(let reply):
            phase = envelope.recipients.isEmpty ? .mail : .recipients
            if reply.code == 421 {
                phase = .closed
                return .close(reply)
            }
            return counted(reply)
        }
    }

    /// The handler's reply to `.deliver`; the transaction is over either way (§4.1.1.4).
    public mutating func messageHandled(_ reply: SMTPReply) -> SMTPServerAction {
        guard phase == .delivering else { return internalError() }
        resetTransaction()
        phase = .ready
        if reply.code == 421 {
            phase = .closed
            return .close(reply)
        }
        return .reply(reply)
    }

    // MARK: - Commands

    /// One row of the command table: how the verb is used and what it does.
    struct Command: Sendable {
        enum Argument: Sendable { case none, optional, required }

        let verb: String
        let argument: Argument
        /// Phases in which the command is in sequence; elsewhere it gets 503 5.5.1.
        let phases: Set<Phase>
        /// Said with the 503 reply.
        let sequenceHint: String
        let run: @Sendable (inout SMTPServerSession, Substring) -> SMTPServerAction
    }

    static let anyTime: Set<Phase> = [.greeted, .ready, .mail, .recipients]

    /// Every command the server knows (RFC 5321 §4.1.1). Verbs not here get 500 5.5.1.
    static let commandTable: [Command] = [
        Command(verb: "EHLO", argument: .required, phases: anyTime, sequenceHint: "",
                run: { s, a in s.hello(a, extended: true) }),
        Command(verb: "HELO", argument: .required, phases: anyTime, sequenceHint: "",
                run: { s, a in s.hello(a, extended: false) }),
        Command(verb: "MAIL", argument: .required, phases: [.ready],
                sequenceHint: "send EHLO first, and RSET before a second MAIL",
                run: { s, a in s.mail(a) }),
        Command(verb: "RCPT", argument: .required, phases: [.mail, .recipients],
                sequenceHint: "send MAIL first", run: { s, a in s.rcpt(a) }),
        Command(verb: "DATA", argument: .none, phases: [.mail, .recipients],
                sequenceHint: "send MAIL and RCPT first", run: { s, _ in s.startData() }),
        Command(verb: "RSET", argument: .none, phases: anyTime, sequenceHint: "",
                run: { s, _ in s.rset() }),
        // §4.1.1.9: NOOP may carry a string, which is ignored.
        Command(verb: "NOOP", argument: .optional, phases: anyTime, sequenceHint: "",
                run: { _, _ in .reply(SMTPReply(250, "2.0.0", "OK")) }),
        Command(verb: "QUIT", argument: .none, phases: anyTime, sequenceHint: "",
                run: { s, _ in s.quit() }),
        // §3.5.3: 252 when the server will not confirm or deny a mailbox.
        Command(verb: "VRFY", argument: .required, phases: anyTime, sequenceHint: "",
                run: { _, _ in .reply(SMTPReply(252, "2.5.0",
                                                "not verifying mailboxes; try RCPT")) }),
        // §4.2.4: 502 for a command known but not implemented.
        Command(verb: "EXPN", argument: .required, phases: anyTime, sequenceHint: "",
                run: { s, _ in s.refuse(502, "5.5.1", "EXPN not available") }),
        // RFC 3207 §4: no parameters (501); only between transactions, after EHLO.
        Command(verb: "STARTTLS", argument: .none, phases: [.ready],
                sequenceHint: "send EHLO first, and not during a mail transaction",
                run: { s, _ in s.startTLS() }),
        Command(verb: "HELP", argument: .optional, phases: anyTime, sequenceHint: "",
                run: { _, _ in .reply(SMTPReply(214, "2.0.0",
                    "commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP\n"
                    + "see RFC 5321")) }),
    ]

    static let commandsByVerb: [String: Command] = Dictionary(
        commandTable.map { ($0.verb, $0) }, uniquingKeysWith: { a, _ in a })

    private mutating func command(_ line: [UInt8]) -> SMTPServerAction {
        commands += 1
        if commands > config.maxCommands {
            phase = .closed
            return .close(SMTPReply(421, "4.7.0", "\(config.hostname) too many commands, closing"))
        }
        // RFC 5321 §4.5.3.1.4 and §4.5.3.1.10: "500 Line too long".
        if line.count > config.maxCommandLine {
            return refuse(500, "5.5.6", "line too long")
        }
        guard let text = String(validating: line, as: UTF8.self) else {
            return refuse(500, "5.5.2", "command is not valid UTF-8")
        }
        if text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            return refuse(500, "5.5.2", "control character in command")
        }
        let verbEnd = text.firstIndex(of: " ") ?? text.endIndex
        let verb = text[..<verbEnd].uppercased()
        let argument = trimmed(text[verbEnd...])
        // Syntax first, then sequence: a malformed command is wrong in any state.
        guard let entry = Self.commandsByVerb[verb] else {
            return refuse(500, "5.5.1", "command not recognized")
        }
        switch (entry.argument, argument.isEmpty) {
        case (.none, false): return refuse(501, "5.5.4", "\(verb) takes no argument")
        case (.required, true): return refuse(501, "5.5.4", "\(verb) needs an argument")
        default: break
        }
        guard entry.phases.contains(phase) else {
            var text = "bad sequence of commands"
            if !entry.sequenceHint.isEmpty { text += ": " + entry.sequenceHint }
            return refuse(503, "5.5.1", text)
        }
        return entry.run(&self, argument)
    }

    private mutating func hello(_ argument: Substring, extended: Bool) -> SMTPServerAction {
        // §4.1.4: HELO or EHLO in the middle of a transaction resets it.
        resetTransaction()
        let name = String(argument.prefix { $0 != " " })
        envelope.helo = name
        envelope.extended = extended
        phase = .ready
        guard extended else {
            return .reply(SMTPReply(code: 250, lines: ["\(config.hostname) hello \(name)"]))
        }
        // No enhanced status in the EHLO reply (RFC 2034 §3).
        var lines = [
            "\(config.hostname) hello \(name)",
            "PIPELINING",                          // RFC 2920
            "SIZE \(config.maxMessageSize)",       // RFC 1870
            "8BITMIME",                            // RFC 6152
            "SMTPUTF8",                            // RFC 6531
            "ENHANCEDSTATUSCODES",                 // RFC 2034
        ]
        // RFC 3207 §4.2: not offered again once TLS is on.
        if config.startTLS && envelope.tls.isEmpty { lines.append("STARTTLS") }
        return .reply(SMTPReply(code: 250, lines: lines))
    }

    private mutating func startTLS() -> SMTPServerAction {
        guard config.startTLS else { return refuse(502, "5.5.1", "STARTTLS not available") }
        guard envelope.tls.isEmpty else { return refuse(503, "5.5.1", "TLS already active") }
        phase = .startingTLS
        return .startTLS(SMTPReply(220, "2.0.0", "ready to start TLS"))
    }

    private mutating func mail(_ argument: Substring) -> SMTPServerAction {
        let path: PathArgument
        switch PathParser.parse(argument, prefix: "FROM:") {
        case .success(let p): path = p
        case .failure(.badParameter(let p)):
            return refuse(501, "5.5.4", "bad parameter: \(p)")
        case .failure:
            return refuse(501, "5.5.2", "syntax: MAIL FROM:<address> [parameters]")
        }
        if !path.parameters.isEmpty && !envelope.extended {
            return refuse(555, "5.5.4", "parameters need EHLO, not HELO")
        }
        var size: Int?
        var body = SMTPBodyType.sevenBit
        var utf8 = false
        var seen: Set<String> = []
        for p in path.parameters {
            guard seen.insert(p.keyword).inserted else {
                return refuse(501, "5.5.4", "\(p.keyword) given twice")
            }
            switch (p.keyword, p.value) {
            case ("SIZE", let v?) where v.allSatisfy({ $0.isASCII && $0.isNumber }):
                // More digits than Int holds is certainly over the limit (RFC 1870 §6.1).
                let n = Int(v) ?? Int.max
                if n > config.maxMessageSize {
                    return refuse(552, "5.3.4",
                                  "message size exceeds fixed maximum of "
                                  + "\(config.maxMessageSize) octets")
                }
                size = n
            case ("BODY", let v?):
                guard let b = SMTPBodyType(rawValue: v.uppercased()) else {
                    return refuse(501, "5.5.4", "BODY must be 7BIT or 8BITMIME")
                }
                body = b
            case ("SMTPUTF8", nil):
                utf8 = true
            case ("SIZE", _), ("BODY", _), ("SMTPUTF8", _):
                return refuse(501, "5.5.4", "bad value for \(p.keyword)")
            default:
                // §4.1.1.11: 555 for a parameter not recognised or not implemented.
                return refuse(555, "5.5.4", "parameter \(p.keyword) not supported")
            }
        }
        if !path.mailbox.isEmpty {
            if let failure = checkMailbox(path.mailbox, utf8: utf8, status: "5.1.7",
                                          role: "sender") {
                return failure
            }
        }
        envelope.mailFrom = path.mailbox
        envelope.declaredSize = size
        envelope.body = body
        envelope.smtputf8 = utf8
        envelope.recipients = []
        phase = .mail
        return .reply(SMTPReply(250, "2.1.0", "sender OK"))
    }

    private mutating func rcpt(_ argument: Substring) -> SMTPServerAction {
        let path: PathArgument
        switch PathParser.parse(argument, prefix: "TO:") {
        case .success(let p): path = p
        case .failure(.badParameter(let p)):
            return refuse(501, "5.5.4", "bad parameter: \(p)")
        case .failure:
            return refuse(501, "5.5.2", "syntax: RCPT TO:<address>")
        }
        if let p = path.parameters.first {
            return refuse(555, "5.5.4", "parameter \(p.keyword) not supported")
        }
        guard !path.mailbox.isEmpty else {
            return refuse(501, "5.1.3", "the null path is not a recipient")
        }
        // §4.5.1: "Postmaster" without a domain must be understood.
        if path.mailbox.lowercased() != "postmaster",
           let failure = checkMailbox(path.mailbox, utf8: envelope.smtputf8, status: "5.1.3",
                                      role: "recipient") {
            return failure
        }
        // §4.5.3.1.10: 452 for too many recipients; the client sends the rest later. Not an
        // error: a client that pipelines many RCPTs does nothing wrong.
        if envelope.recipients.count >= config.maxRecipients {
            return .reply(SMTPReply(452, "4.5.3", "too many recipients"))
        }
        pendingRecipient = path.mailbox
        phase = .checkingRecipient
        return .checkRecipient(path.mailbox, envelope)
    }

    /// nil when `mailbox` is acceptable; otherwise the refusal.
    private mutating func checkMailbox(_ mailbox: String, utf8: Bool, status: String,
                                       role: String) -> SMTPServerAction? {
        if !utf8 && !mailbox.utf8.allSatisfy({ $0 < 0x80 }) {
            // RFC 6531 §3.4: a non-ASCII address needs SMTPUTF8 on MAIL.
            return refuse(553, "5.6.7", "non-ASCII \(role) address needs SMTPUTF8")
        }
        if case .failure(let error) = EmailAddress.parse(mailbox) {
            return refuse(501, status, "bad \(role) address: \(error.message)")
        }
        return nil
    }

    private mutating func startData() -> SMTPServerAction {
        // §3.3: DATA with no accepted recipient gets 554 (or 503).
        guard phase == .recipients else { return refuse(554, "5.5.1", "no valid recipients") }
        phase = .data
        data = []
        dataOctets = 0
        dataTooBig = false
        dataLineTooLong = false
        previousLineEndedBare = false
        return .reply(SMTPReply(code: 354, lines: ["end data with <CR><LF>.<CR><LF>"]))
    }

    private mutating func rset() -> SMTPServerAction {
        resetTransaction()
        phase = envelope.helo.isEmpty ? .greeted : .ready
        return .reply(SMTPReply(250, "2.0.0", "OK"))
    }

    private mutating func quit() -> SMTPServerAction {
        phase = .closed
        return .close(SMTPReply(221, "2.0.0", "\(config.hostname) closing connection"))
    }

    // MARK: - Message text

    /// A line between 354 and the lone ".". Past a limit the text is still read to its end,
    /// so the session stays in step, but no longer kept (RFC 1870 §6.1, RFC 5321 §4.5.3.1.6).
    /// The text ends only at CR LF "." CR LF (RFC 5321 §4.1.1.4): a dot line with a bare LF
    /// on either side is text, taken as a line like any other, so that a message cannot end
    /// where a relay before us saw none and smuggle commands in behind it (SMTP smuggling).
    private mutating func dataLine(_ line: [UInt8], endedBare: Bool) -> SMTPServerAction {
        defer { previousLineEndedBare = endedBare }
        if line == [UInt8(ascii: ".")] && !endedBare && !previousLineEndedBare {
            return endOfData()
        }
        dataOctets += line.count + 2
        if line.count > config.maxTextLine { dataLineTooLong = true }
        if dataOctets > config.maxMessageSize { dataTooBig = true }
        if dataTooBig || dataLineTooLong {
            data = []
        } else {
            data.append(contentsOf: line)
            data.append(contentsOf: [0x0D, 0x0A])
        }
        return .none
    }

    private mutating func endOfData() -> SMTPServerAction {
        if dataTooBig {
            resetTransaction()
            phase = .ready
            return refuse(552, "5.3.4",
                          "message exceeds fixed maximum of \(config.maxMessageSize) octets")
        }
        if dataLineTooLong {
            resetTransaction()
            phase = .ready
            // Not 500: the commands were right, the content is what is refused (RFC 3463 §3.7).
            return refuse(554, "5.6.0",
                          "message refused: a line is longer than \(config.maxTextLine) octets")
        }
        let message = MessageBody.unstuff(data)
        data = []
        phase = .delivering
        return .deliver(envelope, message)
    }

    // MARK: - Helpers

    private mutating func resetTransaction() {
        let keep = envelope
        envelope = SMTPEnvelope(peer: keep.peer)
        envelope.helo = keep.helo
        envelope.extended = keep.extended
        envelope.tls = keep.tls
        data = []
        pendingRecipient = ""
    }

    /// A refusal that counts towards `maxErrors`; past it, 421 and the session ends.
    mutating func refuse(_ code: Int, _ status: String, _ text: String) -> SMTPServerAction {
        counted(SMTPReply(code, status, text))
    }

    private mutating func counted(_ reply: SMTPReply) -> SMTPServerAction {
        errors += 1
        if errors > config.maxErrors {
            phase = .closed
            return .close(SMTPReply(421, "4.7.0", "\(config.hostname) too many errors, closing"))
        }
        return .reply(reply)
    }

    /// The shell called an input out of turn: a bug on our side, never the peer's.
    private mutating func internalError() -> SMTPServerAction {
        phase = .closed
        return .close(SMTPReply(421, "4.3.0", "\(config.hostname) internal error, closing"))
    }

    private func trimmed(_ s: Substring) -> Substring {
        var s = s.drop { $0 == " " || $0 == "\t" }
        while let last = s.last, last == " " || last == "\t" { s = s.dropLast() }
        return s
    }
}
