// API keys: parsed from TERN_API_KEYS, checked against `Authorization: Bearer <key>`.
//
// Each entry is a key and, after a colon, its scope:
//
//     key            every endpoint, for any organisation (the operators' own key)
//     key:@all       the same, said explicitly
//     key:acme       sends and reads for organisation acme only; its suppressions and
//                    breaker, never the system's throttles, IPs or warm-up (403)
//     key:@ops       the operator endpoints (throttles, breakers, suppressions, IPs, warm-up,
//                    pauses, cancels) and reading any message, but never sending (403)
//
// In place of a key, `sha256=<64 hex digits>` gives its SHA-256 digest (`printf %s KEY |
// sha256sum`), so the environment file need not hold the key itself.
//
// Only SHA-256 digests of the keys are kept, and a presented key is hashed and compared with
// every digest in constant time, without stopping at a match: the time a check takes says
// nothing about which key was close, nor (all digests being 32 octets) how long keys are.
// Keys are never logged; a key is named by the first octets of its digest (`key_id`).

import TernCore

public struct APIKeys: Sendable {
    /// What a key may do.
    public enum Scope: Sendable, Equatable {
        /// Everything, for any organisation.
        case all
        /// Send and read as this organisation only.
        case org(String)
        /// The operator endpoints and reading; no sending.
        case ops
    }

    /// A key that matched: its scope and a name for it that reveals nothing.
    public struct Grant: Sendable, Equatable {
        public let scope: Scope
        /// The first 8 octets of the key's SHA-256 digest, in hex: names the key in logs and
        /// keeps one key's idempotency keys apart from another's.
        public let keyID: String

        /// The organisation the key is bound to, if any.
        public var org: String? {
            if case .org(let name) = scope { return name }
            return nil
        }

        public var maySend: Bool { scope != .ops }
        /// The system's own state: throttles, IPs, warm-up.
        public var mayOperate: Bool { org == nil }
    }

    struct Key: Sendable {
        let digest: [UInt8]
        let grant: Grant
    }

    let keys: [Key]

    public var count: Int { keys.count }

    /// What an Authorization field is worth.
    public enum Verdict: Sendable, Equatable {
        /// No field, another scheme, or an empty token: 401.
        case missing
        /// A bearer token that is no key: 403.
        case wrong
        /// A key, with what it may do.
        case allowed(Grant)
    }

    /// Parses `key,key:org,key:@ops,...`; `variable` names the setting in errors.
    public init(_ text: String, variable: String) throws {
        var keys: [Key] = []
        var seen: [[UInt8]] = []
        for item in text.split(separator: ",") {
            let entry = item.trimmingPrefix(while: { $0 == " " })
            let parts = entry.split(separator: ":", omittingEmptySubsequences: false)
            let key = parts[0].trimmingSuffixSpaces()
            guard parts.count <= 2 else {
                throw ConfigError(variable, "an entry has more than one ':' (key:scope)")
            }
            // RFC 6750 §2.1: a bearer token is visible ASCII; ',' and ':' separate entries.
            guard (1...256).contains(key.utf8.count),
                  key.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != 0x2C && $0 != 0x3A })
            else {
                throw ConfigError(variable, "a key must be 1 to 256 visible ASCII characters "
                    + "other than ',' and ':'")
            }
            let scope = parts.count == 2
                ? try APIKeys.scope(parts[1].trimmingSuffixSpaces(), variable: variable) : .all
            let digest = try APIKeys.digest(given: key, variable: variable)
                ?? Crypto.sha256(Array(key.utf8))
            guard !seen.contains(digest) else {
                throw ConfigError(variable, "a key is listed twice")
            }
            seen.append(digest)
            let id = digest.prefix(8).map { String($0, radix: 16).leftPadded(to: 2) }.joined()
            keys.append(Key(digest: digest, grant: Grant(scope: scope, keyID: id)))
        }
        guard !keys.isEmpty else {
            throw ConfigError(variable, "no API key is set; give at least one (key, key:org "
                + "or key:@ops)")
        }
        self.keys = keys
    }

    /// The digest of a `sha256=<hex>` entry; nil for a key given as itself. An entry that
    /// starts `sha256=` but holds no digest is a mistake, not a key: taken as a plain key it
    /// would let in whoever presents the mistyped text.
    static func digest(given entry: String, variable: String) throws -> [UInt8]? {
        guard entry.hasPrefix("sha256=") else { return nil }
        let hex = Array(entry.utf8.dropFirst(7))
        var bytes: [UInt8] = []
        if hex.count == 64 {
            for i in stride(from: 0, to: 64, by: 2) {
                guard let high = hexValue(hex[i]), let low = hexValue(hex[i + 1]) else { break }
                bytes.append(high << 4 | low)
            }
        }
        guard bytes.count == 32 else {
            throw ConfigError(variable, "an entry starts with sha256= but is not followed by "
                + "exactly 64 hex digits (it has \(hex.count) characters)")
        }
        return bytes
    }

    /// One hex digit's value; signs and anything else are not digits.
    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }

    static func scope(_ text: String, variable: String) throws -> Scope {
        switch text {
        case "@all": return .all
        case "@ops": return .ops
        default:
            guard APIKeys.isOrgName(text) else {
                throw ConfigError(variable, "scope '\(text)' is neither @all, @ops nor an org "
                    + "of 1 to 64 characters of a-z, 0-9, _ and -")
            }
            return .org(text)
        }
    }

    /// Checks the value of an Authorization field.
    public func check(_ authorization: String?) -> Verdict {
        guard let token = APIKeys.bearerToken(authorization) else { return .missing }
        let digest = Crypto.sha256(Array(token.utf8))
        var match: Key?
        for key in keys where Crypto.constantTimeEqual(key.digest, digest) {
            match = key
        }
        guard let match else { return .wrong }
        return .allowed(match.grant)
    }

    /// The token of `Bearer <token>`; the scheme is case-insensitive (RFC 9110 §11.1).
    static func bearerToken(_ field: String?) -> String? {
        guard let field else { return nil }
        let trimmed = field.trimmingPrefix(while: { $0 == " " })
        guard let space = trimmed.firstIndex(of: " "),
              trimmed[..<space].lowercased() == "bearer" else { return nil }
        let token = trimmed[space...].trimmingPrefix(while: { $0 == " " }).trimmingSuffixSpaces()
        return token.isEmpty ? nil : String(token)
    }

    static func isOrgName(_ s: some StringProtocol) -> Bool {
        (1...64).contains(s.utf8.count) && s.utf8.allSatisfy {
            (97...122).contains($0) || (48...57).contains($0) || $0 == 95 || $0 == 45
        }
    }
}

extension String {
    func leftPadded(to width: Int) -> String {
        String(repeating: "0", count: max(0, width - count)) + self
    }
}

extension StringProtocol {
    func trimmingSuffixSpaces() -> String {
        var s = Substring(self)
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return String(s)
    }
}
