// Which hosts to try for a recipient domain, and in what order, from its MX records:
// RFC 5321 §5.1 (lowest preference first, random order among equals, the domain itself when
// there is no MX) and RFC 7505 (a null MX means the domain accepts no mail).

/// One MX resource record (RFC 1035 §3.3.9).
public struct MXRecord: Sendable, Hashable {
    public var preference: UInt16
    public var host: String

    public init(preference: UInt16, host: String) {
        self.preference = preference
        self.host = host
    }
}

/// The hosts to try for one domain.
public enum MXPlan: Sendable, Hashable {
    /// Try these hosts in order (lowercased, without a trailing dot, without duplicates).
    case hosts([String])
    /// RFC 7505: the domain publishes a null MX; fail the message permanently (5.1.10).
    case nullMX
    /// No MX records: RFC 5321 §5.1 says to treat the domain as its own MX (its A/AAAA).
    case implicit(String)
}

public enum MXOrdering {
    /// The plan for `domain` given its MX records, shuffling hosts of equal preference with
    /// `generator` so that load spreads as RFC 5321 §5.1 asks.
    public static func plan(
        for domain: String, records: [MXRecord], using generator: inout some RandomNumberGenerator
    ) -> MXPlan {
        let cleaned = records.map { MXRecord(preference: $0.preference, host: normalize($0.host)) }
        guard !cleaned.isEmpty else { return .implicit(normalize(domain)) }
        // RFC 7505 §3: a null MX is a single record with preference 0 and host ".".
        if cleaned.count == 1, cleaned[0].preference == 0, cleaned[0].host.isEmpty {
            return .nullMX
        }
        // A "." host among real ones breaks RFC 7505 §3; it names no host, so skip it.
        let usable = cleaned.filter { !$0.host.isEmpty }
        guard !usable.isEmpty else { return .nullMX }

        var byPreference: [UInt16: [String]] = [:]
        for record in usable { byPreference[record.preference, default: []].append(record.host) }
        var ordered: [String] = []
        var seen = Set<String>()
        for preference in byPreference.keys.sorted() {
            for host in byPreference[preference]!.shuffled(using: &generator)
            where seen.insert(host).inserted {
                ordered.append(host)
            }
        }
        return .hosts(ordered)
    }

    /// The plan, shuffled with the system generator.
    public static func plan(for domain: String, records: [MXRecord]) -> MXPlan {
        var generator = SystemRandomNumberGenerator()
        return plan(for: domain, records: records, using: &generator)
    }

    /// Lowercase, without the trailing root dot DNS answers carry (so "." becomes "").
    private static func normalize(_ host: String) -> String {
        var host = host.lowercased()
        if host.hasSuffix(".") { host.removeLast() }
        return host
    }
}
