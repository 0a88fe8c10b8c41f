// Quoted-printable (RFC 2045 §6.7) for text parts that are not plain short-lined ASCII: the
// encoded form is 7-bit with lines of at most 76 characters, so it passes any relay.

enum QuotedPrintable {
    /// RFC 2045 §6.7 rule 5: encoded lines are at most 76 characters, soft break included.
    static let maxLine = 76
    private static let hex = Array("0123456789ABCDEF".utf8)

    /// Encodes text whose line breaks are CRLF; the breaks stay hard line breaks.
    static func encode(_ text: [UInt8]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(text.count + text.count / 8 + 16)
        var lineStart = 0
        var i = 0
        while i <= text.count {
            let atBreak = i + 1 < text.count && text[i] == 0x0D && text[i + 1] == 0x0A
            if i == text.count || atBreak {
                encodeLine(text[lineStart..<i], into: &out)
                if atBreak { out += [0x0D, 0x0A] }
                i += 2
                lineStart = i
            } else {
                i += 1
            }
        }
        return out
    }

    private static func encodeLine(_ line: ArraySlice<UInt8>, into out: inout [UInt8]) {
        var length = 0
        for index in line.indices {
            let b = line[index]
            let isLast = index == line.endIndex - 1
            // Rule 2: literal printable ASCII except "="; rule 3: space and tab literal
            // unless they end the line, where transports may strip them.
            let literal = (b >= 33 && b <= 126 && b != 61) || ((b == 32 || b == 9) && !isLast)
            let width = literal ? 1 : 3
            // Keep room for the "=" of a soft break unless this is the line's last token.
            let room = isLast ? maxLine : maxLine - 1
            if length + width > room {
                out += [61, 0x0D, 0x0A]
                length = 0
            }
            if literal {
                out.append(b)
            } else {
                out += [61, hex[Int(b >> 4)], hex[Int(b & 0x0F)]]
            }
            length += width
        }
    }
}
