// Keyed hashes for Tern: HMAC-SHA256 signs VERP return paths and webhook bodies, SHA-256
// fingerprints content. Both call OpenSSL's one-shot functions, which are the non-deprecated
// entry points in OpenSSL 3 and need no context object to manage.

import COpenSSL

/// Cryptographic helpers over byte arrays. Stateless; safe from any thread.
public enum Crypto {
    /// Output size of SHA-256 and of HMAC-SHA256, in octets (FIPS 180-4).
    public static let sha256Length = 32

    /// HMAC-SHA256 (RFC 2104, test vectors in RFC 4231).
    public static func hmacSHA256(key: [UInt8], data: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: sha256Length)
        var outLength: UInt32 = 0
        // OpenSSL treats a NULL key as "reuse the previous key", so an empty key must still be
        // a valid pointer: a one-byte buffer with length zero.
        let keyBytes = key.isEmpty ? [0] : key
        let dataBytes = data.isEmpty ? [0] : data
        let done = keyBytes.withUnsafeBufferPointer { k in
            dataBytes.withUnsafeBufferPointer { d in
                out.withUnsafeMutableBufferPointer { o in
                    HMAC(EVP_sha256(), k.baseAddress, Int32(key.count), d.baseAddress, data.count,
                         o.baseAddress, &outLength)
                }
            }
        }
        precondition(done != nil && Int(outLength) == sha256Length, "OpenSSL HMAC failed")
        return out
    }

    /// SHA-256 digest (FIPS 180-4).
    public static func sha256(_ data: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: sha256Length)
        let dataBytes = data.isEmpty ? [0] : data
        let done = dataBytes.withUnsafeBufferPointer { d in
            out.withUnsafeMutableBufferPointer { o in
                SHA256(d.baseAddress, data.count, o.baseAddress)
            }
        }
        precondition(done != nil, "OpenSSL SHA256 failed")
        return out
    }
}
