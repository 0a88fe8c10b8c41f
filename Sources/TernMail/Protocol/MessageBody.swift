// Byte-level work on message bodies for the DATA command: CRLF normalisation, dot-stuffing
// (RFC 5321 §4.5.2) with the end-of-data line, unstuffing on the receiving side, and the
// longest line, checked against RFC 5322 §2.1.1's 998 octets.
//
// The sender runs `dataPayload` on every attempt, so each function is a single pass over an
// unsafe buffer into an output sized up front.

public enum MessageBody {
    /// RFC 5322 §2.1.1: lines MUST be no longer than 998 octets, excluding CRLF.
    public static let maxLineLength = 998
    /// RFC 5322 §2.1.1: lines SHOULD be no longer than 78 octets, excluding CRLF.
    public static let recommendedLineLength = 78

    private static let cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n"), dot = UInt8(ascii: ".")

    /// Every line ending as CRLF: bare LF and bare CR both become CRLF.
    public static func normalizeLineEndings(_ message: [UInt8]) -> [UInt8] {
        transform(message, stuff: false, terminate: false)
    }

    /// Dot-stuffing (RFC 5321 §4.5.2): a line that starts with "." gets another "." in front.
    /// Line endings are normalised to CRLF on the way, since a "." after a bare LF would be
    /// taken as a line start by some servers and not by others.
    public static func dotStuff(_ message: [UInt8]) -> [UInt8] {
        transform(message, stuff: true, terminate: false)
    }

    /// Everything the client writes after the 354 reply: the normalised, dot-stuffed message,
    /// a CRLF if the message does not end with one, and the final ".\r\n".
    public static func dataPayload(_ message: [UInt8]) -> [UInt8] {
        transform(message, stuff: true, terminate: true)
    }

    private static func transform(_ message: [UInt8], stuff: Bool, terminate: Bool) -> [UInt8] {
        var out = [UInt8]()
        // Room for a few additions; the array grows if a message has many bare LFs or dots.
        out.reserveCapacity(message.count + message.count / 64 + 8)
        var atLineStart = true
        message.withUnsafeBufferPointer { input in
            var i = 0
            let n = input.count
            // Copies each line in one append; looks at a byte alone only at a line start (a
            // dot) and at a line break, which is found eight bytes at a time.
            while i < n {
                if atLineStart && stuff && input[i] == dot { out.append(dot) }
                let end = lineBreak(in: input, from: i)
                out.append(contentsOf: UnsafeBufferPointer(rebasing: input[i..<end]))
                // A line without a break ends the message (a break at `i` would be `end`).
                guard end < n else {
                    atLineStart = false
                    break
                }
                out.append(cr)
                out.append(lf)
                i = end + ((input[end] == cr && end + 1 < n && input[end + 1] == lf) ? 2 : 1)
                atLineStart = true
            }
        }
        if terminate {
            if !atLineStart { out.append(contentsOf: [cr, lf]) }
            out.append(contentsOf: [dot, cr, lf])
        }
        return out
    }

    /// The index of the first CR or LF at or after `start`, or the end. Eight bytes at a
    /// time: a byte equal to CR or LF is a zero byte of the word XOR the byte repeated.
    static func lineBreak(in bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> Int {
        let n = bytes.count
        var i = start
        if let base = UnsafeRawPointer(bytes.baseAddress) {
            while i + 8 <= n {
                let word = base.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                let crs = word ^ 0x0D0D_0D0D_0D0D_0D0D, lfs = word ^ 0x0A0A_0A0A_0A0A_0A0A
                if hasZeroByte(crs) || hasZeroByte(lfs) { break }
                i += 8
            }
        }
        while i < n && bytes[i] != cr && bytes[i] != lf { i += 1 }
        return i
    }

    /// True when a byte of `word` is zero (exact: no false positive).
    @inline(__always)
    static func hasZeroByte(_ word: UInt64) -> Bool { zeroLanes(word) != 0 }

    /// The top bit of each byte of `word` that is zero, exactly: the 7-bit sums cannot
    /// carry from one byte into the next.
    @inline(__always)
    static func zeroLanes(_ word: UInt64) -> UInt64 {
        let low7: UInt64 = 0x7F7F_7F7F_7F7F_7F7F
        return ~(((word & low7) &+ low7) | word | low7)
    }

    /// True when any octet has the high bit set (8-bit text), eight at a time.
    public static func hasEightBit(_ message: [UInt8]) -> Bool {
        message.withUnsafeBytes { raw in
            var i = 0
            let n = raw.count
            while i + 8 <= n {
                if raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                    & 0x8080_8080_8080_8080 != 0 { return true }
                i += 8
            }
            while i < n {
                if raw[i] >= 0x80 { return true }
                i += 1
            }
            return false
        }
    }

    /// The receiving side of §4.5.2: removes the first "." of every line that starts with one
    /// and has more after it. `data` is what arrived before the ".\r\n" terminator line (a
    /// lone "." line in it is text: one whose line ending was a bare LF).
    public static func unstuff(_ data: [UInt8]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(data.count)
        data.withUnsafeBufferPointer { input in
            var atLineStart = true
            var runStart = 0
            for i in 0..<input.count {
                let b = input[i]
                if atLineStart && b == dot && i + 1 < input.count
                    && input[i + 1] != cr && input[i + 1] != lf
                {
                    out.append(contentsOf: UnsafeBufferPointer(rebasing: input[runStart..<i]))
                    runStart = i + 1
                }
                atLineStart = b == lf
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: input[runStart..<input.count]))
        }
        return out
    }

    /// Length in octets of the longest line, not counting its line ending (CRLF, or a bare LF
    /// or CR). Compare with `maxLineLength`.
    public static func longestLine(_ message: [UInt8]) -> Int {
        message.withUnsafeBufferPointer { input in
            var longest = 0
            var current = 0
            for b in input {
                if b == cr || b == lf {
                    longest = max(longest, current)
                    current = 0
                } else {
                    current += 1
                }
            }
            return max(longest, current)
        }
    }

    /// Zero-based numbers of the lines longer than `limit` octets, for error messages.
    public static func linesLonger(than limit: Int = maxLineLength, in message: [UInt8])
        -> [Int]
    {
        var found: [Int] = []
        var line = 0
        var current = 0
        var i = 0
        while i < message.count {
            let b = message[i]
            if b == cr || b == lf {
                if current > limit { found.append(line) }
                line += 1
                current = 0
                if b == cr && i + 1 < message.count && message[i + 1] == lf { i += 1 }
            } else {
                current += 1
            }
            i += 1
        }
        if current > limit { found.append(line) }
        return found
    }
}
