// Private keys that sign: RSA with SHA-256 (RSASSA-PKCS1-v1_5, RFC 8017 §8.2) and Ed25519
// (RFC 8032), for DKIM. A key is parsed from PEM once and kept as an EVP_PKEY: parsing costs
// more than signing, so a daemon loads its keys at start and signs with them for its life.

import COpenSSL
import Synchronization

/// A key that could not be loaded, with OpenSSL's own reason when it gave one.
public struct SigningKeyError: Error, Equatable, CustomStringConvertible {
    public let message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
}

/// A parsed private key. Immutable after `init`; OpenSSL 3 lets several threads sign with
/// one EVP_PKEY at once as long as none changes it (each signature uses its own
/// EVP_MD_CTX), which is why this class may be shared. Its only mutable state, the prepared
/// contexts, is behind a lock, and each is used by one signature at a time.
public final class SigningKey: @unchecked Sendable {
    public enum Kind: Equatable, Sendable {
        case rsa(bits: Int)
        case ed25519
    }

    public let kind: Kind
    private let key: OpaquePointer
    /// RSA only: EVP_MD_CTXs set up for signing with `key`, each copied into a fresh context
    /// per signature. `EVP_DigestSignInit` looks the algorithms up anew on every call, about
    /// a tenth of the cost of an RSA-2048 signature; a copy of a ready context skips that.
    /// One per thread that signed at once, so the list stays as short as the thread pool.
    private let prepared = Mutex<[Prepared]>([])

    /// An EVP_MD_CTX in the list: used by one thread at a time, handed over through the lock.
    private struct Prepared: @unchecked Sendable { let context: OpaquePointer }

    /// Reads a PEM private key (PKCS #8 "PRIVATE KEY", or "RSA PRIVATE KEY"). An encrypted
    /// key is refused rather than prompting on a terminal for its pass phrase.
    public init(pem: [UInt8]) throws(SigningKeyError) {
        ERR_clear_error()
        guard !pem.isEmpty else { throw SigningKeyError("the file is empty") }
        let parsed: OpaquePointer? = pem.withUnsafeBytes { bytes in
            guard let bio = BIO_new_mem_buf(bytes.baseAddress, Int32(bytes.count)) else {
                return nil
            }
            defer { BIO_free(bio) }
            // A callback that supplies no pass phrase: OpenSSL's default one reads the tty.
            return PEM_read_bio_PrivateKey(bio, nil, { _, _, _, _ in 0 }, nil)
        }
        guard let parsed else {
            throw SigningKeyError("not a PEM private key without a pass phrase ("
                                  + SigningKey.lastError() + ")")
        }
        switch EVP_PKEY_get_base_id(parsed) {
        case NID_rsaEncryption:
            kind = .rsa(bits: Int(EVP_PKEY_get_bits(parsed)))
        case NID_ED25519:
            kind = .ed25519
        default:
            EVP_PKEY_free(parsed)
            throw SigningKeyError("only RSA and Ed25519 keys can sign")
        }
        key = parsed
    }

    deinit {
        prepared.withLock { $0.forEach { EVP_MD_CTX_free($0.context) } }
        EVP_PKEY_free(key)
    }

    /// The signature of `data`: RSASSA-PKCS1-v1_5 over its SHA-256 digest for RSA, PureEdDSA
    /// over `data` itself for Ed25519. Signing with a loaded key cannot fail short of memory
    /// exhaustion, which is treated as fatal.
    public func sign(_ data: [UInt8]) -> [UInt8] {
        guard let context = EVP_MD_CTX_new() else { preconditionFailure("EVP_MD_CTX_new") }
        defer { EVP_MD_CTX_free(context) }
        if kind == .ed25519 {
            // Ed25519 takes no digest: it hashes internally (RFC 8032 §5.1.6), and its
            // context serves a single one-shot signature, so it is not prepared ahead.
            initialise(context)
        } else {
            let ready = prepared.withLock { $0.popLast() } ?? newPrepared()
            defer { prepared.withLock { $0.append(ready) } }
            guard EVP_MD_CTX_copy_ex(context, ready.context) == 1 else {
                preconditionFailure("EVP_MD_CTX_copy_ex: \(SigningKey.lastError())")
            }
        }
        let input = data.isEmpty ? [0] : data
        var length = 0
        return input.withUnsafeBufferPointer { d in
            guard EVP_DigestSign(context, nil, &length, d.baseAddress, data.count) == 1 else {
                preconditionFailure("EVP_DigestSign: \(SigningKey.lastError())")
            }
            var signature = [UInt8](repeating: 0, count: length)
            let done = signature.withUnsafeMutableBufferPointer { s in
                EVP_DigestSign(context, s.baseAddress, &length, d.baseAddress, data.count)
            }
            guard done == 1 else {
                preconditionFailure("EVP_DigestSign: \(SigningKey.lastError())")
            }
            return Array(signature.prefix(length))
        }
    }

    private func initialise(_ context: OpaquePointer) {
        let digest = kind == .ed25519 ? nil : EVP_sha256()
        guard EVP_DigestSignInit(context, nil, digest, nil, key) == 1 else {
            preconditionFailure("EVP_DigestSignInit: \(SigningKey.lastError())")
        }
    }

    private func newPrepared() -> Prepared {
        guard let context = EVP_MD_CTX_new() else { preconditionFailure("EVP_MD_CTX_new") }
        initialise(context)
        return Prepared(context: context)
    }

    /// The public half as DNS wants it: for RSA the DER SubjectPublicKeyInfo (what
    /// `openssl pkey -pubout` prints in PEM), for Ed25519 the raw 32 octets (RFC 8463 §4.2).
    public var publicKey: [UInt8] {
        if kind == .ed25519 {
            var length = 0
            guard EVP_PKEY_get_raw_public_key(key, nil, &length) == 1 else { return [] }
            var out = [UInt8](repeating: 0, count: length)
            let done = out.withUnsafeMutableBufferPointer {
                EVP_PKEY_get_raw_public_key(key, $0.baseAddress, &length)
            }
            return done == 1 ? out : []
        }
        let length = i2d_PUBKEY(key, nil)
        guard length > 0 else { return [] }
        var out = [UInt8](repeating: 0, count: Int(length))
        let written = out.withUnsafeMutableBufferPointer { buffer -> Int32 in
            var cursor = buffer.baseAddress
            return i2d_PUBKEY(key, &cursor)
        }
        return written == length ? out : []
    }

    /// OpenSSL's reason for the last failure on this thread, or "unknown reason".
    static func lastError() -> String {
        let code = ERR_get_error()
        ERR_clear_error()
        guard code != 0 else { return "unknown reason" }
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) },
                      as: UTF8.self)
    }
}
