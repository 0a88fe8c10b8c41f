// Unpredictable bytes for message ids, boundaries and secrets, from OpenSSL's CSPRNG.

import COpenSSL

extension Crypto {
    /// `n` cryptographically random bytes. RAND_bytes only fails when OpenSSL cannot seed;
    /// the kernel's getrandom(2), behind SystemRandomNumberGenerator, is then used instead so
    /// that callers never receive predictable bytes and never need to handle an error.
    public static func randomBytes(_ n: Int) -> [UInt8] {
        precondition(n >= 0, "negative byte count")
        guard n > 0 else { return [] }
        var out = [UInt8](repeating: 0, count: n)
        let ok = out.withUnsafeMutableBufferPointer { RAND_bytes($0.baseAddress, Int32(n)) }
        if ok != 1 {
            var system = SystemRandomNumberGenerator()
            for i in 0..<n { out[i] = UInt8.random(in: .min ... .max, using: &system) }
        }
        return out
    }
}
