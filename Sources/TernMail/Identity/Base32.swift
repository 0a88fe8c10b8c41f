// Lowercase Crockford base32, the text form of message ids and VERP signatures.
//
// Crockford's alphabet leaves out i, l, o and u, so ids survive being read aloud or retyped;
// lowercase output survives mail servers that lowercase local parts. Bytes are read as one
// big-endian number and written most significant digit first, left-padded with zero bits to a
// whole digit (the ULID layout: 16 bytes -> 26 digits, 10 bytes -> 16 digits).

enum Base32 {
    static let alphabet: [UInt8] = Array("0123456789abcdefghjkmnpqrstvwxyz".utf8)

    /// Digit value of each ASCII byte, 0xFF when it is not a lowercase digit.
    static let values: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = UInt8(i) }
        return table
    }()

    /// Number of digits needed for `byteCount` bytes.
    static func digitCount(forBytes byteCount: Int) -> Int { (byteCount * 8 + 4) / 5 }

    static func encode(_ bytes: [UInt8]) -> String {
        let digits = digitCount(forBytes: bytes.count)
        let padding = digits * 5 - bytes.count * 8
        var out = [UInt8](repeating: 0, count: digits)
        // Bit position `p` counts from the most significant end of the padded number.
        for d in 0..<digits {
            var value = 0
            for bit in 0..<5 {
                let p = d * 5 + bit - padding
                value <<= 1
                if p >= 0 { value |= Int(bytes[p >> 3] >> (7 - UInt8(p & 7))) & 1 }
            }
            out[d] = alphabet[value]
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes exactly `byteCount` bytes from lowercase digits; nil for a wrong length, a
    /// character outside the alphabet, or a padding bit that is set.
    static func decode(_ text: some StringProtocol, byteCount: Int) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count == digitCount(forBytes: byteCount) else { return nil }
        let padding = digits.count * 5 - byteCount * 8
        var out = [UInt8](repeating: 0, count: byteCount)
        for (d, c) in digits.enumerated() {
            let value = values[Int(c)]
            guard value != 0xFF else { return nil }
            for bit in 0..<5 where value >> (4 - UInt8(bit)) & 1 == 1 {
                let p = d * 5 + bit - padding
                guard p >= 0 else { return nil }
                out[p >> 3] |= 0x80 >> UInt8(p & 7)
            }
        }
        return out
    }
}
