// VERP return paths: the envelope sender of each message names the message, so a bounce sent
// to it can be tied back without trusting anything in the bounce body.
//
// Local part: `b.<id>.<sig>`, where <sig> is the first 10 bytes of HMAC-SHA256(secret, id) in
// lowercase Crockford base32 (16 characters). A 26-character message id gives a 45-octet local
// part, well under the 64 octets of RFC 5321 §4.5.3.1.1. Everything is lowercase and decoding
// lowercases its input, so a server that changes case cannot break the link; the signature stops
// anyone from forging bounces for messages they did not receive.

import TernCore

public enum VERPError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The address does not have the `b.<id>.<sig>` shape.
    case notVERP
    /// The shape is right but the domain is not ours.
    case wrongDomain
    /// The signature does not match the id: forged, or signed with another secret.
    case badSignature

    public var description: String {
        switch self {
        case .notVERP: return "not a VERP return path"
        case .wrongDomain: return "VERP return path for another domain"
        case .badSignature: return "VERP signature does not match the message id"
        }
    }
}

public struct VERP: Sendable {
    /// Prefix of every VERP local part ("b" for bounce).
    public static let prefix = "b."
    static let signatureBytes = 10

    private let secret: [UInt8]
    /// The return-path domain, lowercased.
    public let domain: String

    public init(secret: [UInt8], domain: String) {
        self.secret = secret
        var domain = domain.lowercased()
        if domain.hasSuffix(".") { domain.removeLast() }
        self.domain = domain
    }

    /// The return path for a message, as it goes in MAIL FROM. Ids are lowercased, as
    /// `MessageID` ids already are, so that what is signed is what survives transport.
    public func address(for id: String) -> String {
        let id = id.lowercased()
        return VERP.prefix + id + "." + signature(id) + "@" + domain
    }

    /// The message id a bounce address refers to. Case-insensitive; one pair of angle brackets
    /// around the address is tolerated.
    public func decode(_ address: String) -> Result<String, VERPError> {
        var address = address.lowercased()
        if address.hasPrefix("<") && address.hasSuffix(">") && address.count >= 2 {
            address = String(address.dropFirst().dropLast())
        }
        guard let at = address.lastIndex(of: "@") else { return .failure(.notVERP) }
        let local = address[..<at]
        var addressDomain = address[address.index(after: at)...]
        if addressDomain.hasSuffix(".") { addressDomain = addressDomain.dropLast() }
        guard local.hasPrefix(VERP.prefix),
              let dot = local.lastIndex(of: "."),
              dot >= local.index(local.startIndex, offsetBy: VERP.prefix.count)
        else { return .failure(.notVERP) }
        let id = String(local[local.index(local.startIndex, offsetBy: VERP.prefix.count)..<dot])
        let given = local[local.index(after: dot)...]
        guard !id.isEmpty,
              let givenBytes = Base32.decode(given, byteCount: VERP.signatureBytes)
        else { return .failure(.notVERP) }
        guard addressDomain == domain else { return .failure(.wrongDomain) }
        guard Crypto.constantTimeEqual(givenBytes, signatureBytes(id)) else {
            return .failure(.badSignature)
        }
        return .success(id)
    }

    /// The signature of `id` alone, as it appears in its address: the tag of CFBL-Feedback-ID.
    public func tag(for id: String) -> String { signature(id.lowercased()) }

    /// True when `tag` (any case) is the signature of `id`.
    public func verifies(tag: some StringProtocol, for id: String) -> Bool {
        guard let given = Base32.decode(tag.lowercased(),
                                        byteCount: VERP.signatureBytes)
        else { return false }
        return Crypto.constantTimeEqual(given, signatureBytes(id.lowercased()))
    }

    private func signatureBytes(_ id: String) -> [UInt8] {
        Array(Crypto.hmacSHA256(key: secret, data: Array(id.utf8)).prefix(VERP.signatureBytes))
    }

    private func signature(_ id: String) -> String { Base32.encode(signatureBytes(id)) }
}

extension VERP {
    /// The VERP settings shared by the sender (which signs) and the bounce receiver (which
    /// verifies): TERN_VERP_DOMAIN, the return-path domain, and TERN_VERP_SECRET, the HMAC
    /// key as at least 32 hex digits. Both are required.
    public init(_ env: Environment) throws {
        let domain = env.string("TERN_VERP_DOMAIN", default: "")
        guard !domain.isEmpty, !domain.contains("@"), !domain.contains(" ") else {
            throw ConfigError("TERN_VERP_DOMAIN", "required: the return-path domain, like "
                              + "bounces.example.com")
        }
        let hex = env.string("TERN_VERP_SECRET", default: "")
        guard let secret = Crypto.bytes(hex: hex), secret.count >= 16 else {
            throw ConfigError("TERN_VERP_SECRET", "required: at least 32 hex digits")
        }
        self.init(secret: secret, domain: domain)
    }
}
