// Logging for daemons: a message for people, fields for tools.
//
// Under systemd (JOURNAL_STREAM set) each record goes to the journal with its fields as
// journal fields (TERN_MESSAGE_ID=…, PRIORITY=…), so `journalctl TERN_MESSAGE_ID=…` finds a
// message's whole story. On a terminal it is one line: time, level, label, message, key=value.
// Text that came from the network is made printable before it is logged.

import CSystemd
import Foundation
import Synchronization

public enum LogLevel: Int, Sendable, Comparable, CaseIterable {
    case trace = 0, debug, info, notice, warning, error, critical

    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }

    public init?(name: String) {
        guard let l = LogLevel.allCases.first(where: { "\($0)" == name.lowercased() }) else {
            return nil
        }
        self = l
    }

    /// syslog priority for the journal.
    var priority: Int {
        switch self {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }
}

/// Where records go; tests install a memory sink.
public protocol LogSink: Sendable {
    func write(level: LogLevel, label: String, message: String, fields: [(String, String)])
}

public struct Logger: Sendable {
    public let label: String
    public var level: LogLevel
    public var fields: [(String, String)] = []
    private let sink: any LogSink

    public init(label: String, level: LogLevel = .info, sink: (any LogSink)? = nil) {
        self.label = label
        self.level = level
        self.sink = sink ?? Logger.defaultSink
    }

    /// The journal when systemd connected our stderr to it, else the terminal.
    static let defaultSink: any LogSink =
        ProcessInfo.processInfo.environment["JOURNAL_STREAM"] != nil
        ? JournalSink() : TerminalSink()

    /// A logger that adds `fields` to every record (a message id, a peer address).
    public func with(_ more: (String, String)...) -> Logger {
        var copy = self
        copy.fields += more
        return copy
    }

    public func log(_ level: LogLevel, _ message: @autoclosure () -> String,
                    _ more: [(String, String)]) {
        guard level >= self.level else { return }
        sink.write(level: level, label: label, message: message(), fields: fields + more)
    }

    public func trace(_ m: @autoclosure () -> String, _ f: (String, String)...) {
        log(.trace, m(), f)
    }
    public func debug(_ m: @autoclosure () -> String, _ f: (String, String)...) {
        log(.debug, m(), f)
    }
    public func info(_ m: @autoclosure () -> String, _ f: (String, String)...) {
        log(.info, m(), f)
    }
    public func notice(_ m: @autoclosure () -> String, _ f: (String, String)...) {
        log(.notice, m(), f)
    }
    public func warning(_ m: @autoclosure () -> String, _ f: (String, String)...) {
        log(.warning, m(), f)
    }
    public func error(_ m: @autoclosure () -> String, _ f: (String, String)...) {
        log(.error, m(), f)
    }
    public func critical(_ m: @autoclosure () -> String, _ f: (String, String)...) {
        log(.critical, m(), f)
    }

    /// Peer-supplied text made safe for one log line: controls escaped, length capped.
    public static func printable(_ s: String, limit: Int = 512) -> String {
        var out = ""
        for u in s.unicodeScalars.prefix(limit) {
            if !isUnprintable(u) {
                out.unicodeScalars.append(u)
            } else if u.value < 0x100 {
                out += String(format: "\\x%02x", u.value)
            } else {
                out += String(format: "\\u%04x", u.value)
            }
        }
        return s.unicodeScalars.count > limit ? out + "…" : out
    }

    /// C0 and C1 controls, DEL, and the invisible controls that reorder how text is shown:
    /// a remote's reply must not act on the reader's screen.
    public static func isUnprintable(_ s: Unicode.Scalar) -> Bool {
        s.isControlCharacter || s.isBidiControl
    }
}

extension Unicode.Scalar {
    /// A C0 or C1 control character or DEL.
    public var isControlCharacter: Bool { value < 0x20 || (0x7F...0x9F).contains(value) }

    /// An invisible control that reorders how text is shown (U+200E, U+200F, U+202A-U+202E,
    /// U+2066-U+2069): it makes text look like other text (Trojan Source, CVE-2021-42574).
    public var isBidiControl: Bool {
        switch value {
        case 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069: true
        default: false
        }
    }
}

final class TerminalSink: LogSink {
    private let lock = Mutex(())

    func write(level: LogLevel, label: String, message: String, fields: [(String, String)]) {
        let time = Date().formatted(.iso8601.time(includingFractionalSeconds: true))
        var line = "\(time) \(String(describing: level).uppercased()) \(label): \(message)"
        for (k, v) in fields {
            line += " \(k)=" + (v.contains(" ") || v.isEmpty ? "\"\(v)\"" : v)
        }
        line += "\n"
        lock.withLock { _ in FileHandle.standardError.write(Data(line.utf8)) }
    }
}

struct JournalSink: LogSink {
    func write(level: LogLevel, label: String, message: String, fields: [(String, String)]) {
        var items = ["MESSAGE=\(message)", "PRIORITY=\(level.priority)",
                     "SYSLOG_IDENTIFIER=tern-\(label)"]
        for (k, v) in fields {
            let name = "TERN_" + k.uppercased().map { $0.isLetter || $0.isNumber ? $0 : "_" }
            items.append("\(String(name))=\(v)")
        }
        let buffers = items.map { item -> UnsafeMutableBufferPointer<UInt8> in
            let b = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: item.utf8.count)
            _ = b.initialize(from: item.utf8)
            return b
        }
        defer { buffers.forEach { $0.deallocate() } }
        let iov = buffers.map { iovec(iov_base: UnsafeMutableRawPointer($0.baseAddress),
                                      iov_len: $0.count) }
        _ = sd_journal_sendv(iov, Int32(iov.count))
    }
}

/// Keeps records in memory, for tests.
public final class MemoryLogSink: LogSink {
    public struct Record: Sendable {
        public let level: LogLevel
        public let message: String
        public let fields: [String: String]
    }

    private let store = Mutex<[Record]>([])

    public init() {}

    public func write(level: LogLevel, label: String, message: String, fields: [(String, String)]) {
        let map = Dictionary(fields, uniquingKeysWith: { _, b in b })
        store.withLock { $0.append(Record(level: level, message: message, fields: map)) }
    }

    public var records: [Record] { store.withLock { $0 } }
}
