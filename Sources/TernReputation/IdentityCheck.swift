// A sending IP's identity: forward-confirmed reverse DNS whose name is the EHLO name the IP
// announces. Large providers refuse or junk mail from an address whose PTR is missing, does
// not resolve back to it, or differs from its HELO/EHLO name (RFC 5321 §4.1.4 asks for a
// name that resolves to the client; M3AAWG's sender practices ask for all three).

import TernDNS

public enum IdentityResult: Sendable, Equatable {
    case ok
    /// The IP must not be used; the reason names what is wrong.
    case failed(String)
    /// DNS did not answer: keep the previous verdict.
    case unknown(String)
}

public enum IdentityCheck {
    public static func check(ip: String, ehlo: String, resolver: DNSResolver) async
        -> IdentityResult
    {
        let ehlo = ehlo.lowercased().trimmingSuffix(".")
        let names: [String]
        switch await resolver.ptr(ip) {
        case .records(let r): names = r.map { $0.trimmingSuffix(".") }
        case .noData, .nxDomain: return .failed("no PTR record for \(ip)")
        case .failure(let why): return .unknown("PTR lookup of \(ip): \(why)")
        }
        guard names.contains(ehlo) else {
            return .failed("PTR of \(ip) is \(names.joined(separator: ", ")), "
                + "not the EHLO name \(ehlo)")
        }
        switch await resolver.addresses(ehlo, ipv6: ip.contains(":")) {
        case .records(let addresses):
            let want = DNSResolver.reverseName(ip)
            if addresses.contains(where: { DNSResolver.reverseName($0) == want }) { return .ok }
            return .failed("\(ehlo) resolves to \(addresses.joined(separator: ", ")), "
                + "not back to \(ip)")
        case .noData, .nxDomain:
            return .failed("\(ehlo) (the PTR of \(ip)) has no address record")
        case .failure(let why):
            return .unknown("address lookup of \(ehlo): \(why)")
        }
    }
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) : self
    }
}
