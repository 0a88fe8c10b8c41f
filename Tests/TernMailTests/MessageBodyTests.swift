// DATA payloads: CRLF normalisation, dot-stuffing (RFC 5321 §4.5.2), unstuffing, line lengths.

import Testing
import TernMail

@Suite struct MessageBodyTests {
    func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    static let payloads: [(String, String)] = [
        ("", ".\r\n"),
        ("hello\r\n", "hello\r\n.\r\n"),
        ("hello", "hello\r\n.\r\n"),                                // no trailing CRLF
        (".leading dot\r\n", "..leading dot\r\n.\r\n"),             // dot on the first line
        ("a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n"),               // lone dot line inside
        ("a\r\n..\r\n", "a\r\n...\r\n.\r\n"),
        ("a\n.b\nc", "a\r\n..b\r\nc\r\n.\r\n"),                     // bare LF
        ("a\r.b\rc\r", "a\r\n..b\r\nc\r\n.\r\n"),                   // bare CR
        ("a\r\n\r\n.\r\n", "a\r\n\r\n..\r\n.\r\n"),
        ("a.b\r\n x.\r\n", "a.b\r\n x.\r\n.\r\n"),                  // dots not at line start
        ("\r\n", "\r\n.\r\n"),
        (".", "..\r\n.\r\n"),
        ("a\r\r\nb", "a\r\n\r\nb\r\n.\r\n"),                        // CR then CRLF
    ]

    @Test(arguments: payloads) func dataPayload(_ message: String, _ expected: String) {
        #expect(MessageBody.dataPayload(bytes(message)) == bytes(expected))
    }

    @Test(arguments: [
        ("a\nb\r\nc\rd", "a\r\nb\r\nc\r\nd"),
        ("\n\n", "\r\n\r\n"),
        ("\r\r", "\r\n\r\n"),
        ("no breaks", "no breaks"),
        ("\r\n", "\r\n"),
        ("", ""),
    ])
    func normalize(_ input: String, _ expected: String) {
        #expect(MessageBody.normalizeLineEndings(bytes(input)) == bytes(expected))
    }

    @Test func dotStuffWithoutTerminator() {
        #expect(MessageBody.dotStuff(bytes(".a\n.b")) == bytes("..a\r\n..b"))
    }

    @Test(arguments: [
        ("..a\r\nb\r\n...\r\n", ".a\r\nb\r\n..\r\n"),
        ("plain\r\n", "plain\r\n"),
        ("..", "."),
        ("", ""),
        // A lone dot has nothing after it to unstuff (§4.5.2): it stays, as text.
        ("a\r\n.\r\nb\r\n", "a\r\n.\r\nb\r\n"),
    ])
    func unstuff(_ input: String, _ expected: String) {
        #expect(MessageBody.unstuff(bytes(input)) == bytes(expected))
    }

    @Test(arguments: ["", "x", ".\r\n", "a\r\n.\r\n..b\r\n", ".one\r\n.two\r\n...\r\n"])
    func stuffThenUnstuffRoundTrips(_ message: String) {
        let payload = MessageBody.dataPayload(bytes(message))
        #expect(payload.suffix(3) == bytes(".\r\n")[...])
        let data = Array(payload.dropLast(3))
        let expected = message.isEmpty || message.hasSuffix("\r\n") ? message : message + "\r\n"
        #expect(MessageBody.unstuff(data) == bytes(expected))
    }

    @Test func longLines() {
        let long = String(repeating: "x", count: 999)
        let message = bytes("short\r\n" + long + "\r\nok\r\n" + String(repeating: "y", count: 998))
        #expect(MessageBody.longestLine(message) == 999)
        #expect(MessageBody.linesLonger(than: MessageBody.maxLineLength, in: message) == [1])
        #expect(MessageBody.longestLine(bytes("ab\ncde\rf")) == 3)
        #expect(MessageBody.longestLine([]) == 0)
        #expect(MessageBody.linesLonger(than: 2, in: bytes("abc\r\nde\r\nfgh")) == [0, 2])
    }

    @Test func largeMessageKeepsItsBytes() {
        // 20 KB of lines, a quarter starting with a dot: every dot doubled, nothing else.
        var message: [UInt8] = []
        for i in 0..<400 {
            message += bytes((i % 4 == 0 ? "." : "") + "line \(i) of a body long enough to "
                             + "total twenty KB\r\n")
        }
        let payload = MessageBody.dataPayload(message)
        #expect(payload.count == message.count + 100 + 3)
        #expect(MessageBody.unstuff(Array(payload.dropLast(3))) == message)
    }

    /// The eight-at-a-time scan against a byte-by-byte reference, over random messages made
    /// of the bytes that matter (CR, LF, dot, 8-bit, ordinary) in runs that straddle words.
    @Test func dataPayloadMatchesAByteByByteReference() {
        func reference(_ m: [UInt8]) -> [UInt8] {
            var out: [UInt8] = [], atStart = true, i = 0
            while i < m.count {
                let b = m[i]
                if b == 0x0D || b == 0x0A {
                    out += [0x0D, 0x0A]
                    i += b == 0x0D && i + 1 < m.count && m[i + 1] == 0x0A ? 2 : 1
                    atStart = true
                    continue
                }
                if atStart && b == 0x2E { out.append(0x2E) }
                out.append(b)
                atStart = false
                i += 1
            }
            if !atStart { out += [0x0D, 0x0A] }
            return out + [0x2E, 0x0D, 0x0A]
        }
        var generator = SystemRandomNumberGenerator()
        let alphabet: [UInt8] = [0x0D, 0x0A, 0x2E, 0xC3, 0x41, 0x20]
        var failures = 0
        for _ in 0..<3000 {
            var m: [UInt8] = []
            for _ in 0..<Int.random(in: 0...12, using: &generator) {
                let b = alphabet.randomElement(using: &generator)!
                m += [UInt8](repeating: b, count: Int.random(in: 1...11, using: &generator))
            }
            if MessageBody.dataPayload(m) != reference(m) { failures += 1 }
            let eightBit = m.contains { $0 >= 0x80 }
            if MessageBody.hasEightBit(m) != eightBit { failures += 1 }
        }
        #expect(failures == 0)
    }
}
