// A provider profile: how fast one mailbox provider lets a single source IP send, and which
// of its replies mean "slow down" or "you are blocked".

import Foundation

public struct ProviderProfile: Sendable, Equatable, Codable {
    /// A short stable name used in keys, metrics and logs: `gmail`, `microsoft`, ….
    public var name: String
    /// Recipient domains served by this provider (exact names; `*.x` matches subdomains).
    public var domains: [String]
    /// MX host name patterns (`*.google.com`, `aspmx.l.google.com`): a company domain whose
    /// MX points here is throttled as this provider.
    public var mxPatterns: [String]
    /// Ceiling of messages per minute from one source IP.
    public var messagesPerMinute: Int
    /// Ceiling of concurrent connections from one source IP.
    public var connectionsPerIP: Int
    /// Messages sent over one connection before it is closed and a new one opened.
    public var messagesPerConnection: Int
    /// Ceiling of messages per minute for the whole pool (all its IPs together); 0: none.
    public var poolMessagesPerMinute: Int
    /// Case-insensitive substrings of a reply that mean "slow down" (besides the generic
    /// ones every profile shares).
    public var slowDownPatterns: [String]
    /// Case-insensitive substrings of a reply that mean this provider blocks the sending IP.
    public var blockedPatterns: [String]
    /// Where the numbers come from; shown by tooling, kept beside the numbers on purpose.
    public var source: String

    public init(name: String, domains: [String], mxPatterns: [String], messagesPerMinute: Int,
                connectionsPerIP: Int, messagesPerConnection: Int, poolMessagesPerMinute: Int = 0,
                slowDownPatterns: [String] = [], blockedPatterns: [String] = [],
                source: String) {
        self.name = name
        self.domains = domains
        self.mxPatterns = mxPatterns
        self.messagesPerMinute = messagesPerMinute
        self.connectionsPerIP = connectionsPerIP
        self.messagesPerConnection = messagesPerConnection
        self.poolMessagesPerMinute = poolMessagesPerMinute
        self.slowDownPatterns = slowDownPatterns
        self.blockedPatterns = blockedPatterns
        self.source = source
    }

    /// Problems with the numbers, each naming its field; empty when the profile is usable.
    public func problems() -> [String] {
        var found: [String] = []
        if name.isEmpty || name.contains(where: { !($0.isLetter || $0.isNumber || $0 == "-") }) {
            found.append("name: '\(name)' must be letters, digits and '-'")
        }
        if messagesPerMinute < 1 { found.append("messagesPerMinute: must be at least 1") }
        if connectionsPerIP < 1 { found.append("connectionsPerIP: must be at least 1") }
        if messagesPerConnection < 1 { found.append("messagesPerConnection: must be at least 1") }
        if poolMessagesPerMinute < 0 { found.append("poolMessagesPerMinute: must not be negative") }
        for pattern in domains + mxPatterns where !Self.isPattern(pattern) {
            found.append("'\(pattern)' is not a host name or *.host-name pattern")
        }
        return found
    }

    static func isPattern(_ text: String) -> Bool {
        let host = text.hasPrefix("*.") ? String(text.dropFirst(2)) : text
        return !host.isEmpty && host.allSatisfy {
            $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == ".")
        }
    }
}
