// The limits and names an inbound SMTP server runs with. Every limit is a defence against a
// peer we do not trust: each one bounds memory, time or work a single connection can cost.
//
// Defaults follow RFC 5321 where it gives a number and are chosen to be generous to real mail
// servers otherwise; each daemon that runs a server may tighten them from its settings.

public struct SMTPServerConfig: Sendable {
    /// The name in the greeting and the EHLO reply (RFC 5321 §4.1.1.1, §4.3.1).
    public var hostname: String
    /// Largest message accepted, in octets as received (dot-stuffed, CRLF line ends);
    /// advertised as SIZE (RFC 1870 §4) and enforced on what actually arrives.
    public var maxMessageSize: Int
    /// Recipients per transaction. RFC 5321 §4.5.3.1.8 asks servers to take at least 100;
    /// a receiver with a narrower purpose may take fewer, answering 452 4.5.3 beyond it.
    public var maxRecipients: Int
    /// Longest command line, in octets without the CR LF. RFC 5321 §4.5.3.1.4 sets 512
    /// including CR LF; extensions may add parameters, so some slack is allowed on top.
    public var maxCommandLine: Int
    /// Longest line of message text, in octets without the CR LF: 1000 including CR LF
    /// (RFC 5321 §4.5.3.1.6) by default; a receiver may take longer ones. A message with a
    /// longer line is refused with 554 5.6.0 after its final dot.
    public var maxTextLine: Int
    /// Hard cap on one line held in memory. A line longer than this cannot be skipped
    /// without reading it whole, so the session ends instead.
    public var lineBufferCap: Int
    /// Commands per session; the one after the last is answered 421 and the session ends.
    public var maxCommands: Int
    /// Refused commands per session (syntax, sequence, refused recipients) before 421.
    public var maxErrors: Int
    /// How long the server waits for each line, and for each reply to be written.
    /// RFC 5321 §4.5.3.2.7 asks for at least 5 minutes.
    public var idleTimeout: Duration
    /// Sessions at once; a connection beyond this is greeted with 421 4.3.2 and closed.
    public var maxSessions: Int
    /// Sessions at once from one client address; beyond this, 421 4.7.0 and closed, so one
    /// peer cannot take every slot.
    public var maxSessionsPerClient: Int
    /// Longest a session may last, however busy; past it the server answers 421 4.4.2 at
    /// the next line and closes (a slow drip of commands would otherwise hold a slot forever).
    public var sessionTimeout: Duration
    /// Time between accepting and greeting during which a client that speaks first is an
    /// early talker (RFC 5321 §3.1: the client waits for the greeting) and is refused with 554.
    /// Zero checks only what has already arrived.
    public var greetingDelay: Duration
    /// On shutdown, how long sessions in the middle of a transaction may take to finish
    /// before their connections are closed.
    public var drainTimeout: Duration
    /// Offer STARTTLS (RFC 3207); `SMTPServer` sets it when it has a certificate.
    public var startTLS: Bool

    public init(
        hostname: String,
        maxMessageSize: Int = 10 * 1024 * 1024,
        maxRecipients: Int = 100,
        maxCommandLine: Int = 1022,
        maxTextLine: Int = 998,
        lineBufferCap: Int = 65536,
        maxCommands: Int = 1000,
        maxErrors: Int = 20,
        idleTimeout: Duration = .seconds(300),
        maxSessions: Int = 200,
        maxSessionsPerClient: Int = 20,
        sessionTimeout: Duration = .seconds(1800),
        greetingDelay: Duration = .zero,
        drainTimeout: Duration = .seconds(30),
        startTLS: Bool = false
    ) {
        self.hostname = hostname
        self.maxMessageSize = maxMessageSize
        self.maxRecipients = maxRecipients
        self.maxCommandLine = maxCommandLine
        self.maxTextLine = maxTextLine
        self.lineBufferCap = max(lineBufferCap, maxCommandLine, maxTextLine)
        self.maxCommands = maxCommands
        self.maxErrors = maxErrors
        self.idleTimeout = idleTimeout
        self.maxSessions = maxSessions
        self.maxSessionsPerClient = maxSessionsPerClient
        self.sessionTimeout = sessionTimeout
        self.greetingDelay = greetingDelay
        self.drainTimeout = drainTimeout
        self.startTLS = startTLS
    }
}
