// The "relaxed" canonicalisation of DKIM (RFC 6376 §3.4.2 for header fields, §3.4.4 for the
// body): the form a signer hashes and a verifier recomputes, so that the whitespace changes
// and re-folding common on the way do not break a signature. Tern signs relaxed/relaxed only.
//
// Both work on bytes, never on decoded text, so 8-bit UTF-8 passes through untouched. Lines
// end in CRLF: the API normalises every message before it is signed.

public enum DKIMCanonicalization {
    private static let cr: UInt8 = 0x0D, lf: UInt8 = 0x0A, sp: UInt8 = 0x20, tab: UInt8 = 0x09

    private static func isWSP(_ b: UInt8) -> Bool { b == sp || b == tab }

    /// One header field as it appears in the message (name, colon, value, any folded
    /// continuation lines, with or without its final CRLF), relaxed:
    /// the name lowercased, the value unfolded, each run of WSP made one SP, WSP removed
    /// around the colon and at the end; then "name:value" and, unless `terminated` is false,
    /// CRLF. The DKIM-Signature field being made is hashed without the CRLF (§3.7).
    public static func relaxedHeader(_ field: ArraySlice<UInt8>, terminated: Bool = true)
        -> [UInt8]
    {
        var out = [UInt8]()
        out.reserveCapacity(field.count + 2)
        guard let colon = field.firstIndex(of: 0x3A) else { return out }
        var nameEnd = colon
        while nameEnd > field.startIndex && isWSP(field[nameEnd - 1]) { nameEnd -= 1 }
        for b in field[field.startIndex..<nameEnd] {
            out.append(b >= 0x41 && b <= 0x5A ? b + 0x20 : b)
        }
        out.append(0x3A)

        // Unfolding removes the CRLFs; the WSP after each stays and joins the run around it.
        var pendingSpace = false, sawValue = false
        var i = colon + 1
        let end = field.endIndex
        while i < end {
            let b = field[i]
            i += 1
            if b == cr && i < end && field[i] == lf { i += 1; continue }
            if b == lf { continue }
            if isWSP(b) {
                pendingSpace = true
                continue
            }
            // A run of WSP before the first value byte is the one after the colon: dropped.
            if pendingSpace && sawValue { out.append(sp) }
            pendingSpace = false
            sawValue = true
            out.append(b)
        }
        if terminated { out += [cr, lf] }
        return out
    }

    /// The message body relaxed: WSP at the end of each line removed, other runs of WSP
    /// made one SP, empty lines at the end removed, a CRLF added to a last line without one.
    /// An empty body (or one of empty lines only) stays empty: §3.4.4 adds nothing to it,
    /// unlike "simple" (§3.4.3), which makes it a single CRLF.
    public static func relaxedBody(_ body: ArraySlice<UInt8>) -> [UInt8] {
        // The output is never longer than the input and a final CRLF: written through a
        // pointer, without the per-byte capacity check of append (a fifth of the time).
        var lineStart = 0           // where the current line begins in the output
        var emptyLines = 0          // empty lines seen and not written: only text brings them
        var pendingSpace = false    // a run of WSP, written as one SP if text follows it
        var out = [UInt8](unsafeUninitializedCapacity: body.count + 2) { buffer, written in
            var o = 0
            body.withUnsafeBufferPointer { input in
                var i = 0
                let n = input.count
                let words = UnsafeRawBufferPointer(input)
                let into = UnsafeMutableRawBufferPointer(buffer)
                while i < n {
                    // Eight bytes the canonical form keeps as they are, copied at once.
                    if !pendingSpace && emptyLines == 0 && i + 9 <= n {
                        let w = words.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                        if keptAsIs(w, then: words.loadUnaligned(fromByteOffset: i + 1,
                                                                 as: UInt64.self)) {
                            into.storeBytes(of: w, toByteOffset: o, as: UInt64.self)
                            o += 8
                            i += 8
                            continue
                        }
                    }
                    let b = input[i]
                    i += 1
                    if b == cr && i < n && input[i] == lf {
                        i += 1
                        if o == lineStart {
                            emptyLines += 1
                        } else {
                            buffer[o] = cr
                            buffer[o + 1] = lf
                            o += 2
                            lineStart = o
                        }
                        pendingSpace = false        // WSP at the end of a line is dropped
                    } else if isWSP(b) {
                        pendingSpace = true
                    } else {
                        if o == lineStart && emptyLines > 0 {
                            // Each held empty line was a CRLF of the input: there is room.
                            for _ in 0..<emptyLines {
                                buffer[o] = cr
                                buffer[o + 1] = lf
                                o += 2
                            }
                            emptyLines = 0
                            lineStart = o
                        }
                        if pendingSpace {
                            buffer[o] = sp
                            o += 1
                        }
                        pendingSpace = false
                        buffer[o] = b
                        o += 1
                    }
                }
            }
            written = o
        }
        // A last line without CRLF counts as a line; the sender ends it with CRLF anyway.
        if out.count != lineStart { out += [cr, lf] }
        return out
    }

    /// True when relaxing changes none of the eight bytes of `word`: no CR or HTAB among
    /// them, and no SP followed by SP, HTAB or CR (`next` is the word one byte further on).
    @inline(__always)
    static func keptAsIs(_ word: UInt64, then next: UInt64) -> Bool {
        func lanes(_ x: UInt64, _ byte: UInt64) -> UInt64 {
            MessageBody.zeroLanes(x ^ (byte &* 0x0101_0101_0101_0101))   // lanes equal to it
        }
        let changed = lanes(word, 0x0D) | lanes(word, 0x09)
        let spaceBefore = lanes(next, 0x20) | lanes(next, 0x09) | lanes(next, 0x0D)
        return changed | (lanes(word, 0x20) & spaceBefore) == 0
    }
}
