// Message ids: 128 bits in the ULID layout, 48 bits of Unix time in milliseconds followed by
// 80 random bits, written as 26 lowercase Crockford base32 digits.
//
// Ids sort by creation time as plain strings (useful in Redis and logs), carry enough randomness
// that several api processes never collide, and stay lowercase so that they survive inside VERP
// return paths even through servers that change the case of local parts.

import Foundation
import TernCore

public enum MessageID {
    /// Length of an id in characters.
    public static let length = 26

    /// A new id for a message accepted at `now`.
    public static func generate(now: Date = Date()) -> String {
        let ms = max(0, now.timeIntervalSince1970 * 1000)
        return make(timestampMs: UInt64(ms.rounded(.down)), random: Crypto.randomBytes(10))
    }

    /// The id for a given time and 10 random bytes; deterministic, for tests and tools.
    public static func make(timestampMs: UInt64, random: [UInt8]) -> String {
        precondition(random.count == 10, "a message id carries 80 random bits")
        var bytes = [UInt8](repeating: 0, count: 16)
        let ms = timestampMs & 0xFFFF_FFFF_FFFF  // 48 bits last until the year 10889
        for i in 0..<6 { bytes[i] = UInt8(truncatingIfNeeded: ms >> (8 * UInt64(5 - i))) }
        bytes.replaceSubrange(6..<16, with: random)
        return Base32.encode(bytes)
    }

    /// True for 26 lowercase Crockford digits whose value fits 128 bits. Uppercase is not
    /// valid here: callers that accept case-changed input (VERP) lowercase it first.
    public static func isValid(_ id: some StringProtocol) -> Bool {
        Base32.decode(id, byteCount: 16) != nil
    }

    /// Milliseconds since the Unix epoch at which the id was made, or nil for an invalid id.
    public static func timestampMs(of id: some StringProtocol) -> UInt64? {
        guard let bytes = Base32.decode(id, byteCount: 16) else { return nil }
        return bytes[0..<6].reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// The time at which the id was made, or nil for an invalid id.
    public static func timestamp(of id: some StringProtocol) -> Date? {
        timestampMs(of: id).map { Date(timeIntervalSince1970: Double($0) / 1000) }
    }
}
