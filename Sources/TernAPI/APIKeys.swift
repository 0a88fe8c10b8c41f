// API keys: parsed from TERN_API_KEYS, checked against `Authorization: Bearer <key>`.
//
// Only SHA-256 digests of the keys are kept, and a presented key is hashed and compared with
// every digest in constant time, without stopping at a match: the time a check takes says
// nothing about which key was close, nor (all digests being 32 octets) how long keys are.
// Keys are never logged.

import TernCore

public struct APIKeys: Sendable {
    struct Key: Sendable {
        let digest: [UInt8]
        /// The org the key is bound to, or nil for a key that may act for any org.
        let org: String?
    }

    let keys: [Key]

    public var count: Int { keys.count }

    /// What an Authorization field is worth.
    public enum Verdict: Sendable, Equatable {
        /// No field, another scheme, or an empty token: 401.
        case missing
        /// A bearer token that is no key: 403.
        case wrong
        /// A key; `org` is set when the key is bound to one.
        case allowed(org: String?)
    }

    /// Parses `key,key:org,...`; `variable` names the setting in errors.
    public init(_ text: String, variable: String) throws {
        var keys: [Key] = []
        var seen: [[UInt8]] = []
        for item in text.split(separator: ",") {
            let entry = item.trimmingPrefix(while: { $0 == " " })
            let parts = entry.split(separator: ":", omittingEmptySubsequences: false)
            let key = parts[0].trimmingSuffixSpaces()
            guard parts.count <= 2 else {
                throw ConfigError(variable, "an entry has more than one ':' (key:org)")
            }
            // RFC 6750 §2.1: a bearer token is visible ASCII; ',' and ':' separate entries.
            guard (1...256).contains(key.utf8.count),
                  key.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != 0x2C && $0 != 0x3A })
            else {
                throw ConfigError(variable, "a key must be 1 to 256 visible ASCII characters "
                    + "other than ',' and ':'")
            }
            var org: String?
            if parts.count == 2 {
                let name = parts[1].trimmingSuffixSpaces()
                guard APIKeys.isOrgName(name) else {
                    throw ConfigError(variable, "org '\(name)' is not 1 to 64 characters of "
                        + "a-z, 0-9, _ and -")
                }
                org = name
            }
            let digest = Crypto.sha256(Array(key.utf8))
            guard !seen.contains(digest) else {
                throw ConfigError(variable, "a key is listed twice")
            }
            seen.append(digest)
            keys.append(Key(digest: digest, org: org))
        }
        guard !keys.isEmpty else {
            throw ConfigError(variable, "no API key is set; give at least one (key or key:org)")
        }
        self.keys = keys
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
        return .allowed(org: match.org)
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

extension StringProtocol {
    func trimmingSuffixSpaces() -> String {
        var s = Substring(self)
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return String(s)
    }
}
