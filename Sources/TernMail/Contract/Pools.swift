// IP pools: the named sets of source addresses a message may leave from, each address with
// the host name it announces in EHLO (which should match its PTR record). The scheduler
// chooses from them; the reputation monitor checks them and publishes which are active.

import Foundation
import TernCore

public struct SourceIP: Sendable, Equatable {
    /// The address to bind, or "" to let the kernel choose (a host with one address).
    public let address: String
    public let helo: String

    public init(address: String, helo: String) {
        self.address = address
        self.helo = helo
    }
}

public struct Pools: Sendable, Equatable {
    public let byName: [String: [SourceIP]]

    /// TERN_POOLS, by default one pool `default` that lets the kernel pick the address.
    public init(_ env: Environment) throws {
        let host = env.string("TERN_HOSTNAME", default: ProcessInfo.processInfo.hostName)
        try self.init(env.string("TERN_POOLS", default: "default=*/\(host)"))
    }

    /// Parses `default=127.0.0.2/out1.example,127.0.0.3/out2.example;bulk=*/mail.example`.
    /// `*` means no fixed source address.
    public init(_ text: String, variable: String = "TERN_POOLS") throws {
        var pools: [String: [SourceIP]] = [:]
        for part in text.split(separator: ";") {
            let pair = part.split(separator: "=", maxSplits: 1).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            guard pair.count == 2, !pair[0].isEmpty else {
                throw ConfigError(variable, "'\(part)' is not name=ip/helo,…")
            }
            var ips: [SourceIP] = []
            for item in pair[1].split(separator: ",") {
                let fields = item.split(separator: "/").map {
                    $0.trimmingCharacters(in: .whitespaces)
                }
                guard fields.count == 2, !fields[1].isEmpty else {
                    throw ConfigError(variable, "'\(item)' in pool \(pair[0]) is not ip/helo")
                }
                let ip = fields[0] == "*" ? "" : fields[0]
                if !ip.isEmpty, SocketAddress(host: ip, port: 0) == nil {
                    throw ConfigError(variable, "'\(ip)' in pool \(pair[0]) is not an IP address")
                }
                ips.append(SourceIP(address: ip, helo: fields[1]))
            }
            guard !ips.isEmpty else { throw ConfigError(variable, "pool \(pair[0]) has no IPs") }
            pools[pair[0]] = ips
        }
        guard !pools.isEmpty else { throw ConfigError(variable, "no pools") }
        byName = pools
    }
}

/// What a pool does when the reputation monitor finds none of its IPs usable.
public enum AllListedBehaviour: String, Sendable, Equatable {
    /// Release nothing from the pool until an IP is usable again: mail waits (and may expire).
    case hold
    /// Keep sending from the IP on the fewest blocklists.
    case leastListed = "least-listed"

    /// TERN_POOL_ALL_LISTED: `hold` or `least-listed` for every pool, or per pool
    /// `default=least-listed,bulk=hold` (pools not named hold).
    public static func parse(_ text: String, pools: Pools,
                             variable: String = "TERN_POOL_ALL_LISTED") throws
        -> [String: AllListedBehaviour]
    {
        var out = pools.byName.mapValues { _ in AllListedBehaviour.hold }
        if let all = AllListedBehaviour(rawValue: text.trimmingCharacters(in: .whitespaces)) {
            return out.mapValues { _ in all }
        }
        for item in text.split(separator: ",") {
            let pair = item.split(separator: "=").map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2, let b = AllListedBehaviour(rawValue: pair[1]) else {
                throw ConfigError(variable, "'\(item)' is not hold, least-listed, "
                                  + "pool=hold or pool=least-listed")
            }
            guard out[pair[0]] != nil else {
                throw ConfigError(variable, "'\(pair[0])' is not a pool of TERN_POOLS")
            }
            out[pair[0]] = b
        }
        return out
    }
}

/// A pool's active IPs as the reputation monitor publishes them (`Keys.poolActive`): the
/// addresses joined by ",", `*` for the kernel-chosen address, "" when none may be used.
public enum ActiveIPs {
    public static func encode(_ ips: [SourceIP]) -> String {
        ips.map { $0.address.isEmpty ? "*" : $0.address }.joined(separator: ",")
    }

    /// The configured IPs that may be used, in configured order. No published value (the
    /// monitor never ran) means all of them; an empty one means none.
    public static func usable(_ configured: [SourceIP], published: String?) -> [SourceIP] {
        guard let published else { return configured }
        let active = Set(published.split(separator: ",").map {
            $0 == "*" ? "" : String($0)
        })
        return configured.filter { active.contains($0.address) }
    }
}
