// Message ids: ULID layout in lowercase Crockford base32, sortable by time.

import Foundation
import Testing
@testable import TernMail

@Suite struct MessageIDTests {
    @Test func knownEncoding() {
        #expect(MessageID.make(timestampMs: 0, random: [UInt8](repeating: 0, count: 10))
                == "00000000000000000000000000")
        #expect(MessageID.make(timestampMs: 0xFFFF_FFFF_FFFF,
                               random: [UInt8](repeating: 0xFF, count: 10))
                == "7zzzzzzzzzzzzzzzzzzzzzzzzz")
        // 1 ms and a last random bit of 1: with two padding bits in front, the 48 timestamp
        // bits end exactly with the 10th digit and the random bits with the 26th.
        let id = MessageID.make(timestampMs: 1, random: [0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        #expect(id == "00000000010000000000000001")
        #expect(MessageID.timestampMs(of: id) == 1)
    }

    @Test func generatedIdsAreValidAndCarryTheirTime() throws {
        let now = Date(timeIntervalSince1970: 1_741_000_000.123)
        let id = MessageID.generate(now: now)
        #expect(id.count == 26)
        #expect(MessageID.isValid(id))
        #expect(id == id.lowercased())
        #expect(MessageID.timestampMs(of: id) == 1_741_000_000_123)
        let back = try #require(MessageID.timestamp(of: id))
        #expect(abs(back.timeIntervalSince1970 - 1_741_000_000.123) < 0.001)
        #expect(MessageID.generate(now: now) != id)
    }

    @Test func idsSortByTime() {
        let times: [Double] = [1_000_000, 1_000_000.001, 1_500_000_000, 1_741_000_000.5,
                               4_000_000_000]
        let ids = times.map { MessageID.generate(now: Date(timeIntervalSince1970: $0)) }
        #expect(ids.sorted() == ids)
    }

    @Test(arguments: [
        "",
        "0000000000000000000000000",      // 25 characters
        "000000000000000000000000000",    // 27 characters
        "80000000000000000000000000",     // more than 128 bits
        "0000000000000000000000000i",     // i is not a Crockford digit
        "0000000000000000000000000u",
        "01ARZ3NDEKTSV4RRFFQ69G5FAV",     // uppercase is not an id until lowercased
        "01arz3ndektsv4rrffq69g5fa-",
    ])
    func invalid(_ id: String) {
        #expect(!MessageID.isValid(id))
        #expect(MessageID.timestampMs(of: id) == nil)
    }

    @Test func lowercasedULIDIsValid() {
        #expect(MessageID.isValid("01arz3ndektsv4rrffq69g5fav"))
        // The ULID specification's example id; its first ten digits are 1469922850259 ms.
        #expect(MessageID.timestampMs(of: "01arz3ndektsv4rrffq69g5fav") == 1_469_922_850_259)
    }

    @Test func base32RoundTrip() {
        for count in [1, 5, 10, 16, 31] {
            let bytes = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            let text = Base32.encode(bytes)
            #expect(text.count == Base32.digitCount(forBytes: count))
            #expect(Base32.decode(text, byteCount: count) == bytes)
        }
        #expect(Base32.encode([0xFF]) == "7z")
        #expect(Base32.decode("8z", byteCount: 1) == nil)  // sets a padding bit
    }
}
