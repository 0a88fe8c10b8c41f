// DNS blocklists (RFC 5782): what each list is, how an IP is asked for, and what its answer
// means. The list set comes from a JSON file (config/dnsbl.json documents the default set
// and each list's return codes); this file only reads it and classifies answers.
//
// An answer is listed, clean, unknown or an error. An error is the list telling us that the
// query itself was refused (a public resolver, a rate limit, a typo in the zone) or an
// answer its documentation does not give: a configuration problem to report, never a
// listing and never a clean bill.

import Foundation
import TernCore
import TernDNS

/// One blocklist and its documented answers.
public struct Blocklist: Sendable, Equatable {
    public let name: String
    public let zone: String
    public let ipv6: Bool
    /// (first, last, meaning) address ranges, as 32-bit numbers, that mean "listed".
    let listed: [CodeRange]
    /// Answers that mean the query was refused or malformed, with their meaning.
    let errors: [UInt32: String]

    struct CodeRange: Sendable, Equatable {
        let first: UInt32
        let last: UInt32
        let meaning: String
    }

    /// The name to ask (A record) for `ip`, nil when the list does not cover its family.
    public func queryName(_ ip: String) -> String? {
        if ip.contains(":") && !ipv6 { return nil }
        return DNSResolver.reverseName(ip, zone: zone)
    }

    /// What the list's answer to one query means.
    public func classify(_ answer: DNSAnswer<[String]>) -> BlocklistAnswer {
        switch answer {
        case .nxDomain, .noData:
            // RFC 5782 §2.1: a name that does not exist is an address not listed.
            return .clean
        case .failure(let why):
            return .unknown(why)
        case .records(let addresses):
            var listings: [String] = []
            for a in addresses.sorted() {
                guard let n = Self.number(a) else { return .error(a, "not an IPv4 answer") }
                if let meaning = errors[n] { return .error(a, meaning) }
                if let r = listed.first(where: { $0.first <= n && n <= $0.last }) {
                    listings.append(a + " " + r.meaning)
                } else {
                    // RFC 5782 §2.1 keeps answers in 127.0.0.0/8; anything else, or a
                    // code the list does not document, means the list is not what we think.
                    return .error(a, "an answer this list does not document")
                }
            }
            return .listed(code: addresses.sorted().joined(separator: ","),
                           meaning: listings.joined(separator: "; "))
        }
    }

    static func number(_ address: String) -> UInt32? {
        let parts = address.split(separator: ".")
        guard parts.count == 4 else { return nil }
        var n: UInt32 = 0
        for p in parts {
            guard let b = UInt8(p) else { return nil }
            n = n << 8 | UInt32(b)
        }
        return n
    }
}

/// What one list said about one IP.
public enum BlocklistAnswer: Sendable, Equatable {
    /// Listed: the answer's addresses and their documented meaning.
    case listed(code: String, meaning: String)
    /// NXDOMAIN (or no A record): not listed.
    case clean
    /// No answer worth reading (timeout, SERVFAIL): the list's standing is unchanged.
    case unknown(String)
    /// The list refused the query or answered outside its documentation: a configuration
    /// problem (a public resolver, a rate limit, a wrong zone).
    case error(String, String)
}

/// The list set, read from the JSON file named by TERN_DNSBL_FILE.
public struct BlocklistSet: Sendable, Equatable {
    /// The enabled lists, in file order.
    public let lists: [Blocklist]

    public init(lists: [Blocklist]) { self.lists = lists }

    public init(file: String, variable: String = "TERN_DNSBL_FILE") throws {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw ConfigError(variable, "cannot read \(file)")
        }
        try self.init(json: data, variable: variable)
    }

    public init(json data: Data, variable: String = "TERN_DNSBL_FILE") throws {
        struct File: Decodable {
            struct List: Decodable {
                let name: String
                let zone: String
                let ipv6: Bool?
                let enabled: Bool?
                let listed: [String: String]
                let errors: [String: String]?
            }
            let lists: [List]
        }
        let file: File
        do {
            file = try JSONDecoder().decode(File.self, from: data)
        } catch let error as DecodingError {
            throw ConfigError(variable, "not a blocklist file: \(error.plainDescription)")
        } catch {
            throw ConfigError(variable, "not a blocklist file: \(error)")
        }
        var lists: [Blocklist] = []
        for l in file.lists where l.enabled ?? true {
            guard DNSResolver.isPlausibleName(l.zone) else {
                throw ConfigError(variable, "list \(l.name): '\(l.zone)' is not a zone name")
            }
            var ranges: [Blocklist.CodeRange] = []
            for (code, meaning) in l.listed {
                let ends = code.split(separator: "-").map(String.init)
                guard (1...2).contains(ends.count), let first = Blocklist.number(ends[0]),
                      let last = Blocklist.number(ends.last!), first <= last
                else { throw ConfigError(variable, "list \(l.name): bad code '\(code)'") }
                ranges.append(.init(first: first, last: last, meaning: meaning))
            }
            guard !ranges.isEmpty else {
                throw ConfigError(variable, "list \(l.name) documents no listed answer")
            }
            var errors: [UInt32: String] = [:]
            for (code, meaning) in l.errors ?? [:] {
                guard let n = Blocklist.number(code) else {
                    throw ConfigError(variable, "list \(l.name): bad error code '\(code)'")
                }
                errors[n] = meaning
            }
            lists.append(Blocklist(name: l.name, zone: l.zone.lowercased(), ipv6: l.ipv6 ?? false,
                                   listed: ranges.sorted { $0.first < $1.first },
                                   errors: errors))
        }
        guard Set(lists.map(\.name)).count == lists.count else {
            throw ConfigError(variable, "two lists have the same name")
        }
        self.lists = lists
    }
}
