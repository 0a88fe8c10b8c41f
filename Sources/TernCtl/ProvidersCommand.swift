// `ternctl providers`: the provider profiles the scheduler and the reputation monitor use,
// with an operator's overrides laid over the built-in ones, and a check of an override file
// before it is deployed (docs/providers.md).

import Foundation
import TernCore
import TernMail

enum ProvidersCommand {
    static let command = CtlCommand(
        name: "providers", summary: "list, check and match provider profiles",
        help: """
            usage: ternctl providers list [--file FILE] [--json]
                   ternctl providers check FILE
                   ternctl providers match [--file FILE] DOMAIN [MX-HOST...]

            list   prints every profile: name, messages per minute and connections per
                   source IP, messages per connection, and where the numbers come from.
                   --json prints the profiles as the JSON an override file takes.
            check  reads an override file (the one TERN_PROVIDERS_FILE names) as the
                   scheduler would at start and says what is wrong where, or what it
                   changes: exit 0 when it would be accepted, 1 when it would not.
            match  prints the provider a recipient domain is throttled as, by its name or
                   by its MX hosts (most preferred first).

            --file FILE   the override file (default: TERN_PROVIDERS_FILE, if set)

            Exit status: 0; for check 1 when the file would be refused; 66 when check's
            FILE cannot be read; 64 bad usage; 78 when list's or match's file is wrong.
            """,
        run: run)

    static func run(_ arguments: [String], _ io: CtlOutput) throws -> Int32 {
        let args = try ArgumentReader(arguments, valued: ["file"], flags: ["json"])
        guard let action = args.operands.first else {
            throw UsageError("say list, check or match")
        }
        let rest = Array(args.operands.dropFirst())
        let file = args.options["file"]?.last
            ?? ProcessInfo.processInfo.environment["TERN_PROVIDERS_FILE"]
        switch action {
        case "list":
            guard rest.isEmpty else { throw UsageError("list takes no operands") }
            let catalog = try ProviderCatalog.load(overrides: file)
            if args.flags.contains("json") {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                let data = try encoder.encode(["providers": catalog.profiles])
                io.line(String(decoding: data, as: UTF8.self))
                return 0
            }
            for p in catalog.profiles {
                io.line("\(p.name): \(p.messagesPerMinute)/min, \(p.connectionsPerIP) "
                        + "connections per IP, \(p.messagesPerConnection) per connection")
                io.line("  " + p.source)
            }
            return 0
        case "check":
            guard rest.count == 1 else { throw UsageError("check takes one file") }
            // A file that is not there is not a file that would be refused (sysexits 66).
            guard FileManager.default.isReadableFile(atPath: rest[0]) else {
                io.error("providers: cannot read \(rest[0])")
                return 66
            }
            let catalog: ProviderCatalog
            do {
                catalog = try ProviderCatalog.load(overrides: rest[0])
            } catch let error as ConfigError {
                io.error(error.problem)
                return 1
            }
            let builtin = Dictionary(uniqueKeysWithValues:
                ProviderProfile.builtin.map { ($0.name, $0) })
            let changed = catalog.profiles.filter { p in builtin[p.name].map { $0 != p } ?? false }
            let added = catalog.profiles.filter { builtin[$0.name] == nil }
            func names(_ list: [ProviderProfile]) -> String {
                list.isEmpty ? "nothing" : list.map(\.name).joined(separator: ", ")
            }
            io.line("\(rest[0]): accepted; changes \(names(changed)); adds \(names(added))")
            return 0
        case "match":
            guard let domain = rest.first else { throw UsageError("match needs a domain") }
            let catalog = try ProviderCatalog.load(overrides: file)
            let profile = catalog.provider(forDomain: domain, mxHosts: Array(rest.dropFirst()))
            let how = catalog.provider(forDomain: domain) != nil ? "by its name"
                : profile.name == catalog.fallback.name ? "by default" : "by its MX hosts"
            io.line("\(domain): \(profile.name) (\(how)), \(profile.messagesPerMinute)/min per IP")
            return 0
        default:
            throw UsageError("unknown action '\(action)'")
        }
    }
}
