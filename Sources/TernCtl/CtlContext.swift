// What the commands that look at the running system share: the daemons' settings read the
// way the daemons read them (TERN_* variables, or the environment file the units load),
// one Redis client, and output as text or as JSON.

import Foundation
import TernCore
import TernMail

/// Redis (or the API) did not answer: exit 69.
struct Unreachable: Error, CustomStringConvertible {
    let description: String
}

struct CtlContext {
    let env: Environment
    let common: CommonSettings
    let keys: Keys
    let json: Bool
    /// Whether TERN_REDIS_URL was given (environment or --env-file), for a hint when Redis
    /// does not answer.
    let configured: Bool

    /// The one operand of a command about a message: its id, checked before Redis is asked.
    static func messageID(_ args: ArgumentReader) throws -> String {
        guard args.operands.count == 1, let id = args.operands.first else {
            throw UsageError("give one message id")
        }
        guard MessageID.isValid(id) else {
            throw UsageError("'\(id)' is not a message id (26 lowercase base32 characters)")
        }
        return id
    }

    /// Options every system command takes.
    static let valued: Set<String> = ["env-file"]
    static let flags: Set<String> = ["json"]
    static let optionsHelp = """
          --env-file FILE  read TERN_* settings from FILE (KEY=VALUE lines, as systemd's
                           EnvironmentFile) over the process environment
          --json           print JSON for scripts instead of text
        """

    init(_ args: ArgumentReader) throws {
        var values = ProcessInfo.processInfo.environment
        if let file = args.options["env-file"]?.last {
            values.merge(try EnvironmentFile.read(file)) { _, fromFile in fromFile }
        }
        configured = values["TERN_REDIS_URL"] != nil
        env = Environment(values)
        common = try CommonSettings(env, role: "ternctl", checkingRedisURL: false)
        keys = Keys(prefix: common.redisPrefix)
        json = args.flags.contains("json")
    }

    /// A client of the daemons' Redis, checked to answer.
    func redis() async throws -> RedisClient {
        if let problem = CommonSettings.problem(redisURL: common.redisURL) { throw problem }
        let client = try RedisClient(url: common.redisURL, maxIdle: 4,
                                     connectTimeout: .seconds(3))
        guard await client.ping() else {
            // Run without the daemons' settings, ternctl tries the default: say where they go.
            let hint = configured ? "(TERN_REDIS_URL)"
                : "(TERN_REDIS_URL is not set: give the daemons' settings with --env-file "
                    + "/etc/tern/tern.env, or in the environment)"
            throw Unreachable(description: "redis at \(client.address) does not answer " + hint)
        }
        return client
    }

    /// Prints `object` as one JSON document (keys sorted).
    func print(json object: Any, _ io: CtlOutput) {
        let data = (try? JSONSerialization.data(
            withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes,
                                              .prettyPrinted])) ?? Data("null".utf8)
        io.line(String(decoding: data, as: UTF8.self))
    }
}

/// systemd's EnvironmentFile format, the part Tern's files use: `KEY=VALUE` lines, `#`
/// comments, blank lines, values optionally in double or single quotes.
enum EnvironmentFile {
    static func read(_ path: String) throws -> [String: String] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError("--env-file", "cannot read \(path)")
        }
        var out: [String: String] = [:]
        for (n, raw) in String(decoding: data, as: UTF8.self).split(
            separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            guard let eq = line.firstIndex(of: "=") else {
                throw ConfigError("--env-file", "\(path) line \(n + 1) is not KEY=VALUE")
            }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces)
            var value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, let q = value.first, q == "\"" || q == "'", value.last == q {
                value = String(value.dropFirst().dropLast())
            }
            out[key] = value
        }
        return out
    }
}

/// A duration in the shortest way a person reads it: 850ms, 42s, 7m, 3h, 2d.
func ago(ms: Int64) -> String {
    switch ms {
    case ..<1000: return "\(max(ms, 0))ms"
    case ..<120_000: return "\(ms / 1000)s"
    case ..<7_200_000: return "\(ms / 60_000)m"
    case ..<172_800_000: return "\(ms / 3_600_000)h"
    default: return "\(ms / 86_400_000)d"
    }
}

/// Pads `cells` into columns under `header`; no line ends in spaces.
func table(_ header: [String], _ rows: [[String]]) -> [String] {
    let all = ([header] + rows).map { $0.map(printable) }
    let widths = header.indices.map { i in all.map { i < $0.count ? $0[i].count : 0 }.max()! }
    return all.map { row in
        row.enumerated().map { i, cell in
            i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ",
                                                     startingAt: 0)
        }.joined(separator: "  ").trimmingSuffixSpaces()
    }
}

extension String {
    func trimmingSuffixSpaces() -> String {
        var s = Substring(self)
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}
