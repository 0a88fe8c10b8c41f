// ternctl, the operators' tool: a table of subcommands, each with its own help, and a
// small hand-written argument reader (no outside packages can be fetched).
//
// A subcommand is a `CtlCommand` value in `TernCtl.commands`; adding one is adding a row.
// Exit codes follow sysexits: 0 done, 64 bad usage, 66 an input that cannot be read,
// 69 Redis or the API cannot be reached, 78 a setting is wrong, 1 when the command ran
// and found something wrong (or was refused: a message that cannot be cancelled).

import Foundation
import TernCore

/// Where a command writes; tests capture it in memory.
public final class CtlOutput: @unchecked Sendable {
    public private(set) var out = ""
    public private(set) var err = ""
    private let echo: Bool

    /// `echo`: also write to the process's standard output and error as text arrives.
    public init(echo: Bool) { self.echo = echo }

    public func line(_ text: String) {
        if echo { FileHandle.standardOutput.write(Data((text + "\n").utf8)) } else {
            out += text + "\n"
        }
    }

    /// Writes one line made of text read from Redis or the network, its control characters
    /// and bidirectional overrides escaped (`printable`), so stored text cannot move the
    /// cursor, recolour the terminal or forge lines.
    public func text(_ text: String) { line(printable(text)) }

    /// Writes `text` exactly, with no line break added (a CSV export ends its own lines).
    public func raw(_ text: String) {
        if echo { FileHandle.standardOutput.write(Data(text.utf8)) } else { out += text }
    }

    public func error(_ text: String) {
        if echo { FileHandle.standardError.write(Data(("ternctl: " + text + "\n").utf8)) } else {
            err += "ternctl: " + text + "\n"
        }
    }
}

/// `text` with every C0 and C1 control character, DEL and bidirectional override written as
/// `\xHH` or `\uHHHH`, so it shows as it is on a terminal instead of acting on it.
public func printable(_ text: String) -> String {
    guard text.unicodeScalars.contains(where: Logger.isUnprintable) else { return text }
    return Logger.printable(text, limit: .max)
}

/// A usage error: printed with a pointer to --help, exit 64.
public struct UsageError: Error, CustomStringConvertible {
    public let description: String
    public init(_ text: String) { description = text }
}

public struct CtlCommand: Sendable {
    public let name: String
    /// One line for the command list.
    public let summary: String
    /// The full `--help` text.
    public let help: String
    /// Runs with the arguments after the command's name; returns the exit code.
    public let run: @Sendable (_ arguments: [String], _ io: CtlOutput) async throws -> Int32
}

public enum TernCtl {
    public static let commands: [CtlCommand] = [
        StatusCommand.command, QueuesCommand.command, MessageCommand.command,
        PauseCommands.pause, PauseCommands.resume, CancelCommand.command,
        SuppressionsCommand.command, PoolsCommand.ips, PoolsCommand.pools,
        ConfigCommand.command, SendTestCommand.command, ClassifyCommand.command,
        ProvidersCommand.command,
    ]

    public static var help: String {
        var text = """
            usage: ternctl COMMAND [OPTIONS] [ARGUMENTS]

            Tern's operators' tool. Commands:

            """
        for c in commands { text += "  " + c.name.padding(toLength: 13, withPad: " ",
                                                           startingAt: 0) + c.summary + "\n" }
        text += """

            Commands that read or change the running system talk to Redis with the daemons'
            own settings (TERN_REDIS_URL, TERN_REDIS_PREFIX; --env-file FILE reads them from
            the daemons' environment file), except send-test, which uses the API
            (TERN_API_URL, TERN_API_KEY). --json prints JSON for scripts.

            `ternctl COMMAND --help` describes a command.
            """
        return text
    }

    /// Runs a whole command line (without the program name).
    public static func main(_ arguments: [String], io: CtlOutput) async -> Int32 {
        guard let first = arguments.first else {
            io.error("no command given\n" + help)
            return 64
        }
        if first == "--help" || first == "-h" || first == "help" {
            io.line(help)
            return 0
        }
        guard let command = commands.first(where: { $0.name == first }) else {
            io.error("unknown command '\(first)'; `ternctl --help` lists them")
            return 64
        }
        let rest = Array(arguments.dropFirst())
        do {
            return try await command.run(rest, io)
        } catch is HelpRequested {
            io.line(command.help)
            return 0
        } catch let e as UsageError {
            io.error("\(command.name): \(e.description); `ternctl \(command.name) --help`")
            return 64
        } catch let e as ConfigError {
            io.error("\(command.name): configuration: \(e.description)")
            return 78
        } catch let e as Unreachable {
            io.error("\(command.name): \(e.description)")
            return 69
        } catch let e as RedisError {
            io.error("\(command.name): \(e.description)")
            return 69
        } catch {
            io.error("\(command.name): \(error)")
            return 1
        }
    }
}

/// `--help` or `-h` where an option may stand: the command prints its help instead.
struct HelpRequested: Error {}

/// Reads options of the form `--name value` and `--flag`; the rest are operands.
/// `--` ends the options. An option that takes a value takes the next argument whatever it
/// is (`--reason --help` is a reason); `--help` or `-h` elsewhere asks for the help.
struct ArgumentReader {
    var options: [String: [String]] = [:]
    var flags: Set<String> = []
    var operands: [String] = []

    init(_ arguments: [String], valued: Set<String>, flags known: Set<String>) throws {
        var i = 0
        var onlyOperands = false
        while i < arguments.count {
            let a = arguments[i]
            i += 1
            if !onlyOperands && (a == "--help" || a == "-h") { throw HelpRequested() }
            if onlyOperands || !a.hasPrefix("--") || a == "-" {
                operands.append(a)
                continue
            }
            if a == "--" {
                onlyOperands = true
                continue
            }
            var name = String(a.dropFirst(2))
            var inline: String?
            if let eq = name.firstIndex(of: "=") {
                inline = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            if valued.contains(name) {
                guard let value = inline ?? (i < arguments.count ? arguments[i] : nil) else {
                    throw UsageError("--\(name) needs a value")
                }
                if inline == nil { i += 1 }
                options[name, default: []].append(value)
            } else if known.contains(name), inline == nil {
                flags.insert(name)
            } else {
                throw UsageError("unknown option --\(name)")
            }
        }
    }
}
