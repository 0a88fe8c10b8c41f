// What one attempt's outcome says about the sending IP's standing with a provider, as
// opposed to the recipient's: the throttle listens to the first, suppression to the second.

import TernMail

public enum ReplySignal: String, Sendable, Equatable, Codable {
    /// 2xx: the provider took the message.
    case accepted
    /// The provider wants us slower: 421, a 4xx that speaks of rate or volume, a refused or
    /// timed-out connection.
    case slowDown
    /// The provider refuses the sending IP (block lists, reputation): pause that IP there.
    case blocked
    /// A permanent failure of this recipient (5.1.x, 5.2.x): the address, not the IP.
    case recipient
    /// Another temporary failure with nothing to learn for the throttle.
    case transient
    /// Another permanent failure (content, policy): the message, not the IP.
    case permanent

    /// Reads one attempt. `stage` is where it ended (`connect`, `greeting`, `rcpt`, …, see
    /// `EntryField.stage`); `code` is 0 when no reply came.
    public static func assess(code: Int, enhanced: String, text: String, stage: String,
                              profile: ProviderProfile) -> ReplySignal {
        if (200..<300).contains(code) { return .accepted }
        let lower = text.lowercased()
        let contains = { (patterns: [String]) in patterns.contains { lower.contains($0) } }
        if code >= 400,
           contains(ProviderProfile.genericBlocked) || contains(profile.blockedPatterns) {
            return .blocked
        }
        if code == 0 {
            // The sender's own verdicts on the recipient's domain: no such domain (5.1.2)
            // or a null MX (5.1.10). The address can never receive mail; the IP is not at
            // fault. Known limit: a resolver that wrongly answers NXDOMAIN gets addresses
            // suppressed as well as bounced; there is no setting to bounce without suppressing.
            if stage == "dns", enhanced.hasPrefix("5.1.") { return .recipient }
            return stage == "connect" || stage == "greeting" ? .slowDown : .transient
        }
        if code == 421 { return .slowDown }
        if (400..<500).contains(code) {
            let slow = contains(ProviderProfile.genericSlowDown)
                || contains(profile.slowDownPatterns)
            return slow ? .slowDown : .transient
        }
        if enhanced.hasPrefix("5.1.") || enhanced.hasPrefix("5.2.") { return .recipient }
        if enhanced.isEmpty, code == 550 || code == 551 || code == 553, stage == "rcpt" {
            return .recipient
        }
        return .permanent
    }
}
