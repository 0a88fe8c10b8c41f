// Finds the provider of a recipient domain, by the domain itself or by its MX hosts, and
// reads an operator's overrides over the built-in profiles. The scheduler throttles by these
// profiles and the reputation monitor counts and warms IPs up by the same names, so both
// daemons load the catalog from TERN_PROVIDERS_FILE.

import Foundation
import TernCore

public struct ProviderCatalog: Sendable {
    public let profiles: [ProviderProfile]
    public let fallback: ProviderProfile
    private let exactDomains: [String: Int]
    private let domainSuffixes: [(suffix: String, index: Int)]
    private let mxExact: [String: Int]
    private let mxSuffixes: [(suffix: String, index: Int)]

    public init(_ profiles: [ProviderProfile]) {
        self.profiles = profiles
        fallback = profiles.first { $0.name == "default" }
            ?? ProviderProfile.builtin.first { $0.name == "default" }!
        var exact: [String: Int] = [:], suffixes: [(String, Int)] = []
        var mx: [String: Int] = [:], mxSuffix: [(String, Int)] = []
        for (index, profile) in profiles.enumerated() {
            for domain in profile.domains.map({ $0.lowercased() }) {
                if domain.hasPrefix("*.") { suffixes.append((String(domain.dropFirst(1)), index)) }
                else if exact[domain] == nil { exact[domain] = index }
            }
            for pattern in profile.mxPatterns.map({ $0.lowercased() }) {
                if pattern.hasPrefix("*.") {
                    mxSuffix.append((String(pattern.dropFirst(1)), index))
                }
                else if mx[pattern] == nil { mx[pattern] = index }
            }
        }
        exactDomains = exact
        // The longest suffix wins, so `*.mail.protection.outlook.com` beats `*.outlook.com`.
        domainSuffixes = suffixes.sorted { $0.0.count > $1.0.count }.map { ($0.0, $0.1) }
        mxExact = mx
        mxSuffixes = mxSuffix.sorted { $0.0.count > $1.0.count }.map { ($0.0, $0.1) }
    }

    public static let builtin = ProviderCatalog(ProviderProfile.builtin)

    public func profile(named name: String) -> ProviderProfile? {
        profiles.first { $0.name == name }
    }

    /// The provider of a recipient domain from its name alone, or nil when only its MX
    /// hosts could tell.
    public func provider(forDomain domain: String) -> ProviderProfile? {
        let name = Self.normalize(domain)
        if let index = exactDomains[name] { return profiles[index] }
        return domainSuffixes.first { name.hasSuffix($0.suffix) }.map { profiles[$0.index] }
    }

    /// The provider whose MX hosts these are (most preferred first), or nil.
    public func provider(forMXHosts hosts: [String]) -> ProviderProfile? {
        for host in hosts.map(Self.normalize) {
            if let index = mxExact[host] { return profiles[index] }
            if let hit = mxSuffixes.first(where: { host.hasSuffix($0.suffix) }) {
                return profiles[hit.index]
            }
        }
        return nil
    }

    /// The domain's provider: its own name first, then its MX hosts, then the default.
    public func provider(forDomain domain: String, mxHosts: [String]) -> ProviderProfile {
        provider(forDomain: domain) ?? provider(forMXHosts: mxHosts) ?? fallback
    }

    /// The name statistics and warm-up caps use for a profile: its own, or `*` for the
    /// default profile, which stands for every provider without one.
    public static func warmupName(_ profile: ProviderProfile) -> String {
        profile.name == "default" || profile.name.hasPrefix("default:") ? "*" : profile.name
    }

    static func normalize(_ host: String) -> String {
        var name = host.lowercased()
        while name.hasSuffix(".") { name.removeLast() }
        return name
    }
}

// MARK: Operator overrides

extension ProviderCatalog {
    /// The built-in profiles with the file's profiles laid over them: a profile whose name is
    /// built in changes only the fields it gives; a new name must give every number.
    /// The file is JSON: `{"providers": [{"name": "gmail", "messagesPerMinute": 50}, …]}`.
    public static func load(overrides path: String?) throws -> ProviderCatalog {
        guard let path, !path.isEmpty else { return .builtin }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError("TERN_PROVIDERS_FILE", "\(path): cannot be read")
        }
        return try ProviderCatalog(ProviderProfile.builtin, overrides: data, file: path)
    }

    init(_ base: [ProviderProfile], overrides data: Data, file: String) throws {
        func fail(_ text: String) -> ConfigError {
            ConfigError("TERN_PROVIDERS_FILE", "\(file): \(text)")
        }
        let parsed: Any
        do {
            parsed = try JSONReading.value(Array(data))
        } catch {
            throw fail(error.description)
        }
        guard let root = parsed as? [String: Any] else { throw fail("not a JSON object") }
        if let extra = Set(root.keys).subtracting(["providers"]).sorted().first {
            throw fail("unknown key '\(extra)' (expected \"providers\")")
        }
        guard let list = root["providers"] as? [[String: Any]] else {
            throw fail("\"providers\" must be a list of objects")
        }
        var profiles = base
        for (position, object) in list.enumerated() {
            let at = "providers[\(position)]"
            guard let name = object["name"] as? String, !name.isEmpty else {
                throw fail("\(at).name: missing")
            }
            if let extra = Set(object.keys).subtracting(Self.fields).sorted().first {
                throw fail("\(at) (\(name)): unknown field '\(extra)'")
            }
            var merged: [String: Any]
            let existing = profiles.firstIndex { $0.name == name }
            if let existing {
                let encoded = try JSONEncoder().encode(profiles[existing])
                merged = (try JSONReading.value(Array(encoded)) as? [String: Any]) ?? [:]
            } else {
                merged = ["domains": [String](), "mxPatterns": [String](),
                          "poolMessagesPerMinute": 0, "slowDownPatterns": [String](),
                          "blockedPatterns": [String](), "source": "operator"]
                for required in ["messagesPerMinute", "connectionsPerIP", "messagesPerConnection"]
                    where object[required] == nil {
                    throw fail("\(at) (\(name)): new profile needs '\(required)'")
                }
            }
            merged.merge(object) { _, new in new }
            let profile: ProviderProfile
            do {
                let json = try JSONSerialization.data(withJSONObject: merged)
                profile = try JSONDecoder().decode(ProviderProfile.self, from: json)
            } catch let DecodingError.typeMismatch(_, context) {
                let field = context.codingPath.first?.stringValue ?? "?"
                throw fail("\(at) (\(name)).\(field): wrong type")
            } catch let error as DecodingError {
                throw fail("\(at) (\(name)): \(error.plainDescription)")
            } catch {
                throw fail("\(at) (\(name)): \(error)")
            }
            if let problem = profile.problems().first {
                throw fail("\(at) (\(name)).\(problem)")
            }
            if let existing { profiles[existing] = profile } else { profiles.append(profile) }
        }
        self.init(profiles)
    }

    static let fields: Set<String> = [
        "name", "domains", "mxPatterns", "messagesPerMinute", "connectionsPerIP",
        "messagesPerConnection", "poolMessagesPerMinute", "slowDownPatterns", "blockedPatterns",
        "source",
    ]
}
