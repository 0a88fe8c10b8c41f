// Crypto helpers against published vectors: RFC 4231 for HMAC-SHA256, FIPS 180-2 examples
// for SHA-256, plus hex and constant-time comparison edge cases.

import Testing
import TernCore

@Suite struct CryptoTests {
    struct HMACVector: Sendable, CustomTestStringConvertible {
        let name: String
        let key: [UInt8]
        let data: [UInt8]
        let mac: String
        var testDescription: String { name }
    }

    static let rfc4231: [HMACVector] = [
        HMACVector(name: "RFC 4231 4.2", key: [UInt8](repeating: 0x0b, count: 20),
                   data: Array("Hi There".utf8),
                   mac: "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
        HMACVector(name: "RFC 4231 4.3", key: Array("Jefe".utf8),
                   data: Array("what do ya want for nothing?".utf8),
                   mac: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
        HMACVector(name: "RFC 4231 4.4", key: [UInt8](repeating: 0xaa, count: 20),
                   data: [UInt8](repeating: 0xdd, count: 50),
                   mac: "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
        HMACVector(name: "RFC 4231 4.5", key: Array(1...25),
                   data: [UInt8](repeating: 0xcd, count: 50),
                   mac: "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
        HMACVector(name: "RFC 4231 4.7", key: [UInt8](repeating: 0xaa, count: 131),
                   data: Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8),
                   mac: "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
        HMACVector(name: "RFC 4231 4.8", key: [UInt8](repeating: 0xaa, count: 131),
                   data: Array(("This is a test using a larger than block-size key and a larger "
                                + "than block-size data. The key needs to be hashed before being "
                                + "used by the HMAC algorithm.").utf8),
                   mac: "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
        HMACVector(name: "empty key and data", key: [], data: [],
                   mac: "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad"),
    ]

    @Test(arguments: rfc4231) func hmacSHA256(vector: HMACVector) {
        #expect(Crypto.hex(Crypto.hmacSHA256(key: vector.key, data: vector.data)) == vector.mac)
    }

    @Test func hmacTruncatedVector() {
        // RFC 4231 4.6 publishes only the leftmost 128 bits.
        let mac = Crypto.hmacSHA256(key: [UInt8](repeating: 0x0c, count: 20),
                                    data: Array("Test With Truncation".utf8))
        #expect(Crypto.hex(Array(mac.prefix(16))) == "a3b6167473100ee06e0c796c2955552b")
    }

    @Test(arguments: [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
    ])
    func sha256(input: String, digest: String) {
        #expect(Crypto.hex(Crypto.sha256(Array(input.utf8))) == digest)
    }

    @Test func randomBytes() {
        #expect(Crypto.randomBytes(0).isEmpty)
        let a = Crypto.randomBytes(32)
        let b = Crypto.randomBytes(32)
        #expect(a.count == 32)
        #expect(a != b)  // 2^-256 chance of a false failure
        #expect(Crypto.randomBytes(1000).count == 1000)
    }

    @Test func constantTimeEqual() {
        #expect(Crypto.constantTimeEqual([], []))
        #expect(Crypto.constantTimeEqual([1, 2, 3], [1, 2, 3]))
        #expect(!Crypto.constantTimeEqual([1, 2, 3], [1, 2, 4]))
        #expect(!Crypto.constantTimeEqual([0, 2, 3], [1, 2, 3]))
        #expect(!Crypto.constantTimeEqual([1, 2], [1, 2, 3]))
    }

    @Test func hexRoundTrip() {
        #expect(Crypto.hex([0x00, 0x0f, 0xa0, 0xff]) == "000fa0ff")
        #expect(Crypto.hex([]) == "")
        #expect(Crypto.bytes(hex: "000fA0Ff") == [0x00, 0x0f, 0xa0, 0xff])
        #expect(Crypto.bytes(hex: "") == [])
        #expect(Crypto.bytes(hex: "abc") == nil)
        #expect(Crypto.bytes(hex: "zz") == nil)
        #expect(Crypto.bytes(hex: "0g") == nil)
        let random = Crypto.randomBytes(64)
        #expect(Crypto.bytes(hex: Crypto.hex(random)) == random)
    }
}
