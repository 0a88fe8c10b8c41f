// When the client uses STARTTLS (RFC 3207), per recipient domain, and what it remembers
// about MX hosts whose TLS is broken.
//
// `opportunistic` is what MTAs do between themselves: encrypt whenever the server offers it,
// believe any certificate (recording whether it verified), and fall back to clear text when
// the handshake fails, since refusing would lose mail that plain SMTP delivers (RFC 3207 §4,
// RFC 7435). `required` is for partners that promised TLS: no STARTTLS, a failed handshake
// or a certificate that does not verify defers the message rather than send it in clear.

import Foundation
import Synchronization
import TernCore

public enum TLSPolicy: String, Sendable, Equatable, CaseIterable {
    case opportunistic, required, disabled
}

/// The default policy and the domains that differ from it.
public struct TLSPolicies: Sendable, Equatable {
    public var fallback: TLSPolicy
    /// Lowercased recipient domain -> policy.
    public var domains: [String: TLSPolicy]

    public init(default fallback: TLSPolicy = .opportunistic, domains: [String: TLSPolicy] = [:]) {
        self.fallback = fallback
        self.domains = domains
    }

    /// Reads `example.com=required,foo.example=disabled`; fails naming the first part that
    /// is not `domain=policy`.
    public static func parseDomains(_ text: String) -> Result<[String: TLSPolicy], ParseError> {
        var out: [String: TLSPolicy] = [:]
        for part in text.split(separator: ",") {
            let pair = part.split(separator: "=", omittingEmptySubsequences: false)
            let domain = pair.first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
            guard pair.count == 2, !domain.isEmpty, !domain.contains(" "),
                  let policy = TLSPolicy(rawValue: pair[1].trimmingCharacters(in: .whitespaces))
            else { return .failure(ParseError(entry: String(part))) }
            out[domain.lowercased().trimmingCharacters(in: ["."])] = policy
        }
        return .success(out)
    }

    public struct ParseError: Error, Equatable {
        public let entry: String
    }

    public func policy(for domain: String) -> TLSPolicy {
        var name = domain.lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        return domains[name] ?? fallback
    }
}

/// MX hosts whose TLS handshake failed recently: opportunistic deliveries to them skip
/// STARTTLS until the entry expires, rather than fail the handshake every time. Kept in
/// this process only; a restart forgets and tries TLS again.
public final class TLSFallbackCache: Sendable {
    public let ttl: Duration
    private let until = Mutex<[String: ContinuousClock.Instant]>([:])
    /// Entries kept at most; the oldest go first when full (a bound against many bad hosts).
    static let capacity = 10_000

    public init(ttl: Duration) { self.ttl = ttl }

    public func remember(_ host: String) {
        let now = ContinuousClock.now
        until.withLock { map in
            if map.count >= Self.capacity {
                map = map.filter { $0.value > now }
                if map.count >= Self.capacity, let oldest = map.min(by: { $0.value < $1.value }) {
                    map.removeValue(forKey: oldest.key)
                }
            }
            map[host.lowercased()] = now + ttl
        }
    }

    /// True while `host` is remembered as having broken TLS.
    public func avoidsTLS(_ host: String) -> Bool {
        let key = host.lowercased()
        return until.withLock { map in
            guard let end = map[key] else { return false }
            if end > .now { return true }
            map.removeValue(forKey: key)
            return false
        }
    }
}

/// Everything a client connection needs for STARTTLS.
public struct SMTPClientTLS: Sendable {
    public let context: TLSContext
    public let policies: TLSPolicies
    public let fallbacks: TLSFallbackCache

    public init(context: TLSContext, policies: TLSPolicies, fallbacks: TLSFallbackCache) {
        self.context = context
        self.policies = policies
        self.fallbacks = fallbacks
    }
}
