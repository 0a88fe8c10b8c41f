// Punycode (RFC 3492) and the IDNA A-label form of domain names, so that an internationalised
// recipient domain can be looked up in DNS and grouped under one spelling.
//
// Encoding turns the U-labels API clients send into the "xn--" form for MX lookups and for
// servers that do not offer SMTPUTF8; decoding checks the "xn--" labels clients send.

enum Punycode {
    // Parameters from RFC 3492 §5.
    private static let base = 36, tMin = 1, tMax = 26, skew = 38, damp = 700
    private static let initialBias = 72, initialN = 128

    /// The Punycode form of a label (without the "xn--" prefix), or nil when the arithmetic
    /// would overflow (RFC 3492 §6.4), which only absurdly long labels reach.
    static func encode(_ label: String) -> String? {
        let input = label.unicodeScalars.map { Int($0.value) }
        var output = input.filter { $0 < 0x80 }.map { UInt8($0) }
        let basicCount = output.count
        var handled = basicCount
        if basicCount > 0 { output.append(UInt8(ascii: "-")) }

        var n = initialN, delta = 0, bias = initialBias
        while handled < input.count {
            guard let m = input.filter({ $0 >= n }).min() else { return nil }
            let (step, overflow) = (m - n).multipliedReportingOverflow(by: handled + 1)
            guard !overflow, delta <= Int(Int32.max) - step else { return nil }
            delta += step
            n = m
            for c in input {
                if c < n { delta += 1 }
                guard c == n else { continue }
                var q = delta
                var k = base
                while true {
                    let t = k <= bias ? tMin : (k >= bias + tMax ? tMax : k - bias)
                    if q < t { break }
                    output.append(digit(t + (q - t) % (base - t)))
                    q = (q - t) / (base - t)
                    k += base
                }
                output.append(digit(q))
                bias = adapt(delta, points: handled + 1, first: handled == basicCount)
                delta = 0
                handled += 1
            }
            delta += 1
            n += 1
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// The label a Punycode string (without "xn--") stands for, or nil when it is not valid
    /// Punycode: a character outside the alphabet, a truncated number, an overflow, or a code
    /// point that is basic or not a Unicode scalar (RFC 3492 §6.2).
    static func decode(_ text: String) -> String? {
        let input = Array(text.utf8)
        let delimiter = input.lastIndex(of: UInt8(ascii: "-"))
        var output: [Unicode.Scalar] = []
        for byte in input[..<(delimiter ?? 0)] {
            guard byte < 0x80 else { return nil }
            output.append(Unicode.Scalar(byte))
        }
        var n = initialN, i = 0, bias = initialBias
        var position = delimiter.map { $0 + 1 } ?? 0
        while position < input.count {
            let oldI = i
            var w = 1, k = base
            while true {
                guard position < input.count, let d = value(input[position]) else { return nil }
                position += 1
                let (step, o1) = d.multipliedReportingOverflow(by: w)
                guard !o1, i <= Int(Int32.max) - step else { return nil }
                i += step
                let t = k <= bias ? tMin : (k >= bias + tMax ? tMax : k - bias)
                if d < t { break }
                let (next, o2) = w.multipliedReportingOverflow(by: base - t)
                guard !o2, next <= Int(Int32.max) else { return nil }
                w = next
                k += base
            }
            let count = output.count + 1
            bias = adapt(i - oldI, points: count, first: oldI == 0)
            n += i / count
            i %= count
            guard n >= initialN, let scalar = Unicode.Scalar(UInt32(clamping: n)) else {
                return nil
            }
            output.insert(scalar, at: i)
            i += 1
        }
        return String(String.UnicodeScalarView(output))
    }

    /// A digit's value, either case (RFC 3492 §5).
    private static func value(_ c: UInt8) -> Int? {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"): return Int(c - UInt8(ascii: "a"))
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return Int(c - UInt8(ascii: "A"))
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return Int(c - UInt8(ascii: "0")) + 26
        default: return nil
        }
    }

    private static func digit(_ d: Int) -> UInt8 {
        d < 26 ? UInt8(ascii: "a") + UInt8(d) : UInt8(ascii: "0") + UInt8(d - 26)
    }

    private static func adapt(_ delta: Int, points: Int, first: Bool) -> Int {
        var delta = first ? delta / damp : delta / 2
        delta += delta / points
        var k = 0
        while delta > ((base - tMin) * tMax) / 2 {
            delta /= base - tMin
            k += base
        }
        return k + (base - tMin + 1) * delta / (delta + skew)
    }
}
