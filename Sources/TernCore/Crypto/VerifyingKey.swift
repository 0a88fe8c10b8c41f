// Public keys that check signatures, for DKIM verification (RFC 6376 §3.3, RFC 8463): RSA
// with SHA-256 (RSASSA-PKCS1-v1_5) from a DER SubjectPublicKeyInfo, or a bare PKCS #1
// RSAPublicKey, as DKIM records carry both; Ed25519 from its raw 32 octets.

import COpenSSL

public final class VerifyingKey: @unchecked Sendable {
    public enum Kind: Equatable, Sendable {
        case rsa(bits: Int)
        case ed25519
    }

    public let kind: Kind
    private let key: OpaquePointer

    /// An RSA public key from DER; nil when it is not one.
    public init?(rsaDER der: [UInt8]) {
        ERR_clear_error()
        let parsed: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
            var cursor = buffer.baseAddress
            if let spki = d2i_PUBKEY(nil, &cursor, buffer.count) { return spki }
            cursor = buffer.baseAddress
            // PKCS #1 RSAPublicKey, which some DKIM records hold instead of the SPKI.
            return d2i_PublicKey(EVP_PKEY_RSA, nil, &cursor, buffer.count)
        }
        ERR_clear_error()
        guard let parsed else { return nil }
        guard EVP_PKEY_get_base_id(parsed) == NID_rsaEncryption else {
            EVP_PKEY_free(parsed)
            return nil
        }
        kind = .rsa(bits: Int(EVP_PKEY_get_bits(parsed)))
        key = parsed
    }

    /// An Ed25519 public key from its raw 32 octets; nil when it is not one.
    public init?(ed25519Raw raw: [UInt8]) {
        guard raw.count == 32 else { return nil }
        let parsed = raw.withUnsafeBufferPointer {
            EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nil, $0.baseAddress, $0.count)
        }
        ERR_clear_error()
        guard let parsed else { return nil }
        kind = .ed25519
        key = parsed
    }

    deinit { EVP_PKEY_free(key) }

    /// True when `signature` is this key's over `data` (RSA: over its SHA-256 digest;
    /// Ed25519: PureEdDSA over `data` itself).
    public func verify(_ signature: [UInt8], of data: [UInt8]) -> Bool {
        guard let context = EVP_MD_CTX_new() else { return false }
        defer {
            EVP_MD_CTX_free(context)
            ERR_clear_error()
        }
        let digest = kind == .ed25519 ? nil : EVP_sha256()
        guard EVP_DigestVerifyInit(context, nil, digest, nil, key) == 1 else { return false }
        let result = signature.withUnsafeBufferPointer { s in
            data.withUnsafeBufferPointer { d in
                EVP_DigestVerify(context, s.baseAddress, s.count, d.baseAddress, d.count)
            }
        }
        return result == 1
    }
}
