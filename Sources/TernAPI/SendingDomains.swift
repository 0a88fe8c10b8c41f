// Which domains each organisation may send from, and whether its mail must be DKIM-signed.
//
// TERN_ORG_DOMAINS lists, per organisation, the domains a key bound to it may put in `from`
// (and in the From field of a raw message):
//
//     acme=acme.example,*.acme.example;globex=globex.example
//
// `acme.example` is that domain only; `*.acme.example` any domain under it (not itself).
// While it is set, a bound key's message is refused (403, naming `from`) when its From
// domain is not its organisation's, and (422) when no key of TERN_DKIM_KEYS would sign it
// with an aligned d= (the From domain, or a `*.parent` line above it): mail from a
// registered domain still fails DMARC without an aligned signature. TERN_ORG_UNSIGNED lists
// the organisations that may send unsigned nonetheless (`*` for all). Keys bound to no
// organisation are the operators' own and are not checked; unset, nothing is checked.

import TernCore
import TernMail

public struct SendingDomains: Sendable {
    /// Organisation → its domains (`acme.example`) and parents (`*.acme.example`).
    let exact: [String: Set<String>]
    let parents: [String: Set<String>]
    let unsigned: Set<String>
    let allUnsigned: Bool

    /// Parses TERN_ORG_DOMAINS and TERN_ORG_UNSIGNED.
    public init(domains: String, unsigned: String) throws {
        var exact: [String: Set<String>] = [:], parents: [String: Set<String>] = [:]
        for part in domains.split(separator: ";") {
            let pair = part.split(separator: "=", maxSplits: 1)
            let org = pair.first?.trimmingCharacters(in: .whitespaces) ?? ""
            guard pair.count == 2, APIKeys.isOrgName(org) else {
                throw ConfigError("TERN_ORG_DOMAINS", "'\(part)' is not org=domain,…")
            }
            for item in pair[1].split(separator: ",") {
                let pattern = item.trimmingCharacters(in: .whitespaces).lowercased()
                let isParent = pattern.hasPrefix("*.")
                let domain = isParent ? String(pattern.dropFirst(2)) : pattern
                guard case .success(let parsed) = EmailAddress.parse("x@" + domain),
                      !parsed.isAddressLiteral, domain.contains(".")
                else {
                    throw ConfigError("TERN_ORG_DOMAINS", "'\(pattern)' of \(org) is not a "
                        + "domain name (or *.domain)")
                }
                if isParent {
                    parents[org, default: []].insert(parsed.asciiDomain)
                } else {
                    exact[org, default: []].insert(parsed.asciiDomain)
                }
            }
            guard exact[org] != nil || parents[org] != nil else {
                throw ConfigError("TERN_ORG_DOMAINS", "\(org) has no domain")
            }
        }
        let names = unsigned.split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        for name in names where name != "*" && !APIKeys.isOrgName(name) {
            throw ConfigError("TERN_ORG_UNSIGNED", "'\(name)' is neither * nor an org name")
        }
        self.exact = exact
        self.parents = parents
        self.unsigned = Set(names)
        self.allUnsigned = names.contains("*")
    }

    /// Whether `org` may send from `domain` (lowercase A-labels).
    public func allows(org: String, domain: String) -> Bool {
        if exact[org]?.contains(domain) == true { return true }
        guard let above = parents[org] else { return false }
        var rest = Substring(domain)
        while let dot = rest.firstIndex(of: ".") {
            rest = rest[rest.index(after: dot)...]
            if above.contains(String(rest)) { return true }
        }
        return false
    }

    /// Whether `org`'s mail must carry an aligned DKIM signature.
    public func requiresDKIM(org: String) -> Bool {
        !allUnsigned && !unsigned.contains(org)
    }

    /// The organisation's domains as configured, for refusals and logs.
    public func domains(of org: String) -> [String] {
        (exact[org] ?? []).sorted() + (parents[org] ?? []).sorted().map { "*." + $0 }
    }

    public var organisations: [String] { Set(exact.keys).union(parents.keys).sorted() }
}
