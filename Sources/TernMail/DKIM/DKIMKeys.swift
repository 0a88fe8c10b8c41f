// The DKIM keys Tern signs with, read once at start from the file named by TERN_DKIM_KEYS.
//
// One key per line, four fields separated by spaces or tabs; `#` starts a comment:
//
//     # domain       selector   algorithm        private key (PEM)
//     example.com    s2026r     rsa-sha256       /etc/tern/dkim/example.com.rsa.pem
//     example.com    s2026e     ed25519-sha256   example.com.ed25519.pem
//     *.example.org  mail       rsa-sha256       example.org.pem
//
// A relative key path is taken from the keys file's folder. A message is signed with every
// key of its From domain (one signature each), found exactly; failing that, with the keys of
// the nearest `*.parent` line above it, as d=parent (so `*.example.org` signs mail from
// news.example.org as example.org, which DMARC's relaxed alignment accepts). A domain with no
// key is sent unsigned. Every problem in the file is an error naming the file and the line.

import Foundation
import TernCore

public struct DKIMKey: Sendable {
    public enum Algorithm: String, Sendable, CaseIterable {
        case rsaSHA256 = "rsa-sha256"
        /// RFC 8463.
        case ed25519SHA256 = "ed25519-sha256"
    }

    /// The d= of its signatures (for a `*.` line, the parent domain).
    public let domain: String
    public let selector: String
    public let algorithm: Algorithm
    public let key: SigningKey

    public init(domain: String, selector: String, algorithm: Algorithm, key: SigningKey) {
        self.domain = domain
        self.selector = selector
        self.algorithm = algorithm
        self.key = key
    }

    /// Where verifiers look for the public key (RFC 6376 §3.6.2.1).
    public var dnsName: String { selector + "._domainkey." + domain }

    /// The TXT record to publish at `dnsName` (RFC 6376 §3.6.1, RFC 8463 §4.2).
    public var dnsRecord: String {
        let k = algorithm == .rsaSHA256 ? "rsa" : "ed25519"
        return "v=DKIM1; k=" + k + "; p=" + Data(key.publicKey).base64EncodedString()
    }
}

/// A line of the keys file that cannot be used.
public struct DKIMKeyFileError: Error, Equatable, CustomStringConvertible {
    public let file: String
    /// 0 when the file itself cannot be read.
    public let line: Int
    public let problem: String

    public var description: String {
        line == 0 ? "\(file): \(problem)" : "\(file) line \(line): \(problem)"
    }
}

public struct DKIMKeyTable: Sendable {
    /// Keys by exact From domain, in file order.
    private var exact: [String: [DKIMKey]] = [:]
    /// Keys of `*.parent` lines, by parent.
    private var wildcard: [String: [DKIMKey]] = [:]

    public static let empty = DKIMKeyTable()

    private init() {}

    /// A table of keys for their exact domains (benchmarks; the daemon reads a file).
    public init(_ keys: [DKIMKey]) {
        for key in keys { exact[key.domain, default: []].append(key) }
    }

    public var isEmpty: Bool { exact.isEmpty && wildcard.isEmpty }

    /// Every key once, for logging at start.
    public var allKeys: [DKIMKey] {
        (exact.keys.sorted().flatMap { exact[$0]! })
            + (wildcard.keys.sorted().flatMap { wildcard[$0]! })
    }

    /// The keys that sign mail whose From address is in `domain` (lowercase A-labels).
    public func keys(for domain: String) -> [DKIMKey] {
        if let found = exact[domain] { return found }
        var rest = Substring(domain)
        while let dot = rest.firstIndex(of: ".") {
            rest = rest[rest.index(after: dot)...]
            if let found = wildcard[String(rest)] { return found }
        }
        return []
    }

    /// Reads the keys file at `path` and every key it names.
    public static func load(path: String) throws(DKIMKeyFileError) -> DKIMKeyTable {
        let text: String
        switch readFile(path) {
        case .success(let bytes):
            text = String(decoding: bytes, as: UTF8.self)
        case .failure(let problem):
            throw DKIMKeyFileError(file: path, line: 0, problem: problem.message)
        }
        let folder = (path as NSString).deletingLastPathComponent
        return try parse(text, file: path) { keyPath in
            let full = keyPath.hasPrefix("/") || folder.isEmpty ? keyPath : folder + "/" + keyPath
            return readFile(full).map { ($0, full) }
        }
    }

    public struct ReadProblem: Error { public let message: String }

    /// Parses the text of a keys file; `read` returns a key file's bytes and the path it
    /// read them from (for messages).
    public static func parse(
        _ text: String, file: String,
        read: (String) -> Result<([UInt8], String), ReadProblem>
    ) throws(DKIMKeyFileError) -> DKIMKeyTable {
        var table = DKIMKeyTable()
        var seen: Set<String> = []
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false)
            .enumerated()
        {
            func fail(_ problem: String) -> DKIMKeyFileError {
                DKIMKeyFileError(file: file, line: index + 1, problem: problem)
            }
            let line = rawLine.split(separator: "#", maxSplits: 1,
                                     omittingEmptySubsequences: false).first ?? ""
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            if fields.isEmpty { continue }
            guard fields.count == 4 else {
                throw fail("expected 4 fields (domain selector algorithm keyfile), found "
                           + "\(fields.count)")
            }
            var pattern = fields[0].lowercased()
            let isWildcard = pattern.hasPrefix("*.")
            if isWildcard { pattern.removeFirst(2) }
            guard isHostName(pattern) else {
                throw fail("'\(fields[0])' is not a domain (letters, digits, hyphens and dots; "
                           + "an internationalised domain in its xn-- form; `*.` in front for "
                           + "every subdomain)")
            }
            let selector = fields[1].lowercased()
            guard isHostName(selector) else {
                throw fail("'\(fields[1])' is not a selector (labels of letters, digits and "
                           + "hyphens, RFC 6376 §3.1)")
            }
            guard let algorithm = DKIMKey.Algorithm(rawValue: fields[2].lowercased()) else {
                throw fail("'\(fields[2])' is not rsa-sha256 or ed25519-sha256")
            }
            let key: SigningKey
            switch read(String(fields[3])) {
            case .failure(let problem):
                throw fail(problem.message)
            case .success(let (pem, path)):
                do throws(SigningKeyError) {
                    key = try SigningKey(pem: pem)
                } catch {
                    throw fail("\(path): \(error.message)")
                }
                if let problem = check(key, algorithm, path: path) { throw fail(problem) }
            }
            let name = (isWildcard ? "*." : "") + pattern
            guard seen.insert(name + " " + selector).inserted else {
                throw fail("selector \(selector) is listed twice for \(name)")
            }
            let entry = DKIMKey(domain: pattern, selector: selector, algorithm: algorithm,
                                key: key)
            if isWildcard {
                table.wildcard[pattern, default: []].append(entry)
            } else {
                table.exact[pattern, default: []].append(entry)
            }
        }
        return table
    }

    /// Why `key` cannot sign with `algorithm`, or nil.
    private static func check(_ key: SigningKey, _ algorithm: DKIMKey.Algorithm, path: String)
        -> String?
    {
        switch (algorithm, key.kind) {
        case (.rsaSHA256, .rsa(let bits)) where bits < 1024:
            // RFC 8301 §3.2: verifiers must not accept RSA keys under 1024 bits.
            return "\(path): a \(bits)-bit RSA key is too short; use 2048 bits"
        case (.rsaSHA256, .rsa), (.ed25519SHA256, .ed25519):
            return nil
        case (.rsaSHA256, .ed25519):
            return "\(path) is an Ed25519 key; its algorithm is ed25519-sha256"
        case (.ed25519SHA256, .rsa):
            return "\(path) is an RSA key; its algorithm is rsa-sha256"
        }
    }

    /// Labels of letters, digits and inner hyphens, 1 to 63 octets each, 253 in all.
    static func isHostName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 253 else { return false }
        return name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            let bytes = Array(label.utf8)
            return (1...63).contains(bytes.count) && bytes.first != 0x2D && bytes.last != 0x2D
                && bytes.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39)
                    || $0 == 0x2D }
        }
    }

    /// A whole small file, or why it cannot be read. Used at start only (it blocks).
    static func readFile(_ path: String) -> Result<[UInt8], ReadProblem> {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else {
            return .failure(ReadProblem(message: "\(path) does not exist"))
        }
        guard !isFolder.boolValue else {
            return .failure(ReadProblem(message: "\(path) is a folder, not a file"))
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            return .failure(ReadProblem(message: "\(path) cannot be read (permissions?)"))
        }
        return .success(Array(data))
    }
}
