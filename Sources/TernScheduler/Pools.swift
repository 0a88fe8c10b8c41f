// IP pools: the named sets of source addresses a message may leave from, each address with
// the host name it announces in EHLO (which should match its PTR record).

import Foundation
import TernCore

public struct SourceIP: Sendable, Equatable {
    /// The address to bind, or "" to let the kernel choose (a host with one address).
    public let address: String
    public let helo: String
}

public struct Pools: Sendable, Equatable {
    public let byName: [String: [SourceIP]]

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
