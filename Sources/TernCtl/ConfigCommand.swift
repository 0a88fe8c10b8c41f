// `ternctl config check`: every setting and file the daemons read, parsed by the daemons'
// own settings code, so what it accepts is exactly what they would start with.

import Foundation
import TernAPI
import TernBounce
import TernCore
import TernMail
import TernReputation
import TernScheduler
import TernSender

enum ConfigCommand {
    static let daemons = ["api", "scheduler", "sender", "bounce-receiver", "reputation"]

    static let command = CtlCommand(
        name: "config", summary: "check the daemons' settings and files",
        help: """
            usage: ternctl config check [--env-file FILE] [--daemon NAME]... [--json]

            Reads the TERN_* settings as each daemon reads them at start (the same parsers)
            and says, for every daemon, whether it would start and if not which setting or
            file is wrong and why. Files are checked on their own too, so several broken
            files are all reported at once:

              TERN_REDIS_URL        the Redis server (for every daemon)
              TERN_POOLS            pools, source IPs and EHLO names
              TERN_PROVIDERS_FILE   provider overrides (also: ternctl providers check)
              TERN_DKIM_KEYS        the DKIM key list and every key file it names
              TERN_DNSBL_FILE       the blocklists (default /etc/tern/dnsbl.json)
              TERN_ORG_CAPS         organisations' hourly and daily caps
              TERN_BOUNCE_TLS_CERT/_KEY, TERN_TLS_CA_FILE   certificates, keys, CA file

            Run it as the daemons' user, or with --env-file the environment file their
            units load (/etc/tern/tern.env), so that files are read with the same rights.

              --daemon NAME   check only NAME (api, scheduler, sender, bounce-receiver,
                              reputation); may repeat. Default: all five.

            Exit status: 0 when every daemon would start, 1 when one would not, 64 bad
            usage, 78 when --env-file cannot be read or is not KEY=VALUE lines.

            \(CtlContext.optionsHelp)
            """,
        run: run)

    static func run(_ arguments: [String], _ io: CtlOutput) async throws -> Int32 {
        let args = try ArgumentReader(arguments, valued: CtlContext.valued.union(["daemon"]),
                                      flags: CtlContext.flags)
        guard args.operands == ["check"] else { throw UsageError("say `config check`") }
        let chosen = args.options["daemon"] ?? daemons
        if let unknown = chosen.first(where: { !daemons.contains($0) }) {
            throw UsageError("no daemon '\(unknown)'; one of \(daemons.joined(separator: ", "))")
        }
        let ctx = try CtlContext(args)
        let env = ctx.env
        var results: [[String: Any]] = []
        for daemon in chosen {
            let problem = check {
                let common = try CommonSettings(env, role: daemon)
                switch daemon {
                case "api": _ = try APISettings(env, common: common)
                case "scheduler": _ = try SchedulerSettings(env, common: common)
                case "sender": _ = try SenderSettings(env, common: common)
                case "bounce-receiver": _ = try BounceSettings(env, common: common)
                default: _ = try ReputationSettings(env, common: common)
                }
            }
            results.append(["daemon": daemon, "ok": problem == nil,
                            "problem": problem.map { $0 as Any } ?? NSNull()])
        }
        var files: [[String: Any]] = []
        for (variable, path, parse) in fileChecks(env, daemons: chosen) {
            let problem = check(parse)
            files.append(["setting": variable, "file": path, "ok": problem == nil,
                          "problem": problem.map { $0 as Any } ?? NSNull()])
        }
        let ok = results.allSatisfy { $0["ok"] as? Bool == true }
            && files.allSatisfy { $0["ok"] as? Bool == true }
        if ctx.json {
            ctx.print(json: ["ok": ok, "daemons": results, "files": files], io)
        } else {
            for r in results {
                io.line("\(r["daemon"] ?? ""): "
                        + ((r["problem"] as? String).map { "WRONG: " + $0 } ?? "ok"))
            }
            for f in files {
                let file = f["file"] as? String ?? ""
                io.line("\(f["setting"] ?? "")\(file.isEmpty ? "" : " " + file): "
                        + ((f["problem"] as? String).map { "WRONG: " + $0 } ?? "ok"))
            }
            io.line(ok ? "configuration ok" : "configuration has problems")
        }
        return ok ? 0 : 1
    }

    /// The problem `parse` throws, in words, or nil.
    static func check(_ parse: () throws -> Void) -> String? {
        do {
            try parse()
            return nil
        } catch let e as ConfigError {
            return e.description
        } catch {
            return "\(error)"
        }
    }

    /// The files that are set, each with the parser its daemon uses; the blocklist file,
    /// which has a default path, only when the reputation monitor is among `daemons`.
    static func fileChecks(_ env: Environment, daemons: [String])
        -> [(String, String, () throws -> Void)]
    {
        var out: [(String, String, () throws -> Void)] = []
        let pools = env.string("TERN_POOLS", default: "")
        if !pools.isEmpty { out.append(("TERN_POOLS", "", { _ = try Pools(env) })) }
        if let path = env.values["TERN_PROVIDERS_FILE"], !path.isEmpty {
            out.append(("TERN_PROVIDERS_FILE", path,
                        { _ = try ProviderCatalog.load(overrides: path) }))
        }
        if let path = env.values["TERN_DKIM_KEYS"], !path.isEmpty {
            out.append(("TERN_DKIM_KEYS", path, {
                do throws(DKIMKeyFileError) {
                    _ = try DKIMKeyTable.load(path: path)
                } catch {
                    throw ConfigError("TERN_DKIM_KEYS", error.description)
                }
            }))
        }
        if daemons.contains("reputation") {
            let dnsbl = env.string("TERN_DNSBL_FILE", default: "/etc/tern/dnsbl.json")
            out.append(("TERN_DNSBL_FILE", dnsbl, { _ = try BlocklistSet(file: dnsbl) }))
        }
        let caps = env.string("TERN_ORG_CAPS", default: "")
        if !caps.isEmpty { out.append(("TERN_ORG_CAPS", "", { _ = try OrgCaps(caps) })) }
        return out
    }
}
