// The hand-written fast paths against plain reference implementations over many seeded random
// inputs: DKIM relaxed body canonicalisation (RFC 6376 §3.4.4) written through a pointer, the
// single-pass transfer-encoding check, JSON string quoting (RFC 8259 §7), the attempt record
// and a message event with its history entry as the dictionary-based writer wrote them.
//
// `SeededGenerator` (SplitMix64) is TernTestSupport's; a failure names the seed and the input.

import Foundation
import Testing
@testable import TernMail
import TernTestSupport

@Suite struct FastPathReferenceTests {
    static let cr: UInt8 = 0x0D, lf: UInt8 = 0x0A

    /// RFC 6376 §3.4.4 read literally: split into CRLF-ended lines (a last line without CRLF
    /// is a line too), drop WSP at line ends, fold WSP runs into one SP, drop empty lines at
    /// the end, end every line with CRLF.
    static func referenceRelaxedBody(_ body: [UInt8]) -> [UInt8] {
        var lines: [[UInt8]] = []
        var line: [UInt8] = []
        var i = 0
        while i < body.count {
            if body[i] == cr && i + 1 < body.count && body[i + 1] == lf {
                lines.append(line)
                line = []
                i += 2
            } else {
                line.append(body[i])
                i += 1
            }
        }
        if !line.isEmpty { lines.append(line) }
        lines = lines.map { line in
            var out: [UInt8] = []
            var space = false
            for b in line {
                if b == 0x20 || b == 0x09 {
                    space = true
                } else {
                    if space { out.append(0x20) }
                    space = false
                    out.append(b)
                }
            }
            return out
        }
        while lines.last?.isEmpty == true { lines.removeLast() }
        return lines.flatMap { $0 + [cr, lf] }
    }

    /// Bytes that make the canonicalisation work: CR and LF alone and paired, runs of WSP,
    /// text, 8-bit octets.
    static func hostileBody(_ rng: inout SeededGenerator) -> [UInt8] {
        let pieces: [[UInt8]] = [[cr, lf], [cr, lf], [cr], [lf], [0x20], [0x09], [0x20, 0x09, 0x20],
                                 [0x41], [0x7A], [0x00], [0xC3, 0xA9], [0xFF], [cr, cr, lf],
                                 [0x20, cr, lf], [cr, lf, cr, lf, cr, lf],
                                 // Runs long enough for the eight-byte copy, spaced singly.
                                 Array("abcdefghij".utf8), Array("word ".utf8),
                                 Array(" a b c d e".utf8)]
        let count = Int.random(in: 0...40, using: &rng)
        return (0..<count).flatMap { _ in pieces[Int.random(in: 0..<pieces.count, using: &rng)] }
    }

    @Test func relaxedBodyMatchesTheRFCReadLiterally() {
        var rng = SeededGenerator(state: 6376)
        var mismatches: [String] = []
        for _ in 0..<20_000 {
            let body = Self.hostileBody(&rng)
            // A slice that does not start at index 0, as the signer passes it.
            let padded = [0x58, 0x59] + body + [0x5A]
            let got = DKIMCanonicalization.relaxedBody(padded[2..<(padded.count - 1)])
            if got != Self.referenceRelaxedBody(body) { mismatches.append("\(body)") }
        }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(3))")
    }

    /// The longest outputs for their input: every CRLF held back and then written, WSP before
    /// text, a last line without CRLF (the only case that writes more than it read).
    @Test func relaxedBodyOutputsAtTheBufferBound() {
        let cr = Self.cr, lf = Self.lf
        let cases: [([UInt8], [UInt8])] = [
            ([], []),
            ([0x61], [0x61, cr, lf]),
            ([0x20, 0x61], [0x20, 0x61, cr, lf]),
            ([cr], [cr, cr, lf]),
            ([cr, cr], [cr, cr, cr, lf]),
            ([cr, lf, cr, lf, 0x61], [cr, lf, cr, lf, 0x61, cr, lf]),
            ([0x20, 0x09, 0x20], []),
            ([cr, lf, 0x20, cr, lf], []),
            (Array(repeating: cr, count: 4096), Array(repeating: cr, count: 4096) + [cr, lf]),
        ]
        for (input, expected) in cases {
            #expect(DKIMCanonicalization.relaxedBody(input[...]) == expected,
                    "\(input.prefix(8))")
        }
        let many = [UInt8](repeating: 0x61, count: 1 << 20)
        #expect(DKIMCanonicalization.relaxedBody(many[...]) == many + [cr, lf])
    }

    @Test func theTransferEncodingCheckIsTheTwoQuestionsItReplaced() {
        let cr = Self.cr, lf = Self.lf
        var rng = SeededGenerator(state: 2045)
        var mismatches: [String] = []
        for _ in 0..<5000 {
            var text: [UInt8] = []
            for _ in 0..<Int.random(in: 0...6, using: &rng) {
                switch Int.random(in: 0..<8, using: &rng) {
                case 0: text += [cr, lf]
                case 1: text.append(cr)
                case 2: text.append(lf)
                case 3:
                    let odd: [UInt8] = [0x00, 0x07, 0x1B, 0x7F, 0x80, 0xFF, 0x09]
                    text.append(odd.randomElement(using: &rng)!)
                default:
                    // Lines around the 998-octet limit, tabs included.
                    // Without tabs, whole words of printable octets take the fast path.
                    let n = [1, 7, 8, 9, 990, 997, 998, 999, 1200].randomElement(using: &rng)!
                    let tabs = Bool.random(using: &rng)
                    text += (0..<n).map { _ in tabs && Bool.random(using: &rng) ? 0x09 : 0x78 }
                }
            }
            let control = text.contains {
                $0 >= 0x80 || ($0 < 0x20 && $0 != 0x09 && $0 != cr && $0 != lf)
            }
            let before = control || MessageBody.longestLine(text) > MessageBody.maxLineLength
            if MessageBuilder.needsEncoding(text) != before { mismatches.append("\(text.count)") }
        }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(3))")
    }

    @Test func theBoundaryCheckFindsEveryEqualsUnderscore() {
        var rng = SeededGenerator(state: 2046)
        let pieces: [[UInt8]] = [[0x3D], [0x5F], [0x3D, 0x5F], [0x61], [0x61, 0x62, 0x63, 0x64],
                                 Array("abcdefgh".utf8), [0x0D, 0x0A]]
        for _ in 0..<5000 {
            let text = (0..<Int.random(in: 0...12, using: &rng)).flatMap { _ in
                pieces[Int.random(in: 0..<pieces.count, using: &rng)]
            }
            let expected = zip(text, text.dropFirst()).contains { $0 == 0x3D && $1 == 0x5F }
            #expect(MIMEPart.containsBoundaryStart(text) == expected, "\(text)")
        }
    }

    /// Characters JSON quoting must get right: the escaped ones, controls, DEL, line and
    /// paragraph separators, non-BMP scalars, combining marks, a slash.
    static let awkward = ["", "a", "\"", "\\", "/", "\u{00}", "\u{01}", "\u{08}", "\u{0C}",
                          "\n", "\r", "\t", "\u{1F}", "\u{7F}", "\u{2028}", "\u{2029}", "é",
                          "e\u{301}", "𝄞", "👩‍👩‍👧", "日本", "\u{FEFF}", "}", "{", ",", ":"]

    static func awkwardString(_ rng: inout SeededGenerator) -> String {
        (0..<Int.random(in: 0...6, using: &rng)).map { _ in
            awkward[Int.random(in: 0..<awkward.count, using: &rng)]
        }.joined()
    }

    @Test func quotedStringsReadBackAsWritten() throws {
        var rng = SeededGenerator(state: 8259)
        for _ in 0..<3000 {
            let s = Self.awkwardString(&rng)
            var text = ""
            SortedJSON.quote(s, into: &text)
            // RFC 8259 §7: no raw control character may stay in the text.
            #expect(!text.unicodeScalars.contains { $0.value < 0x20 }, "\(s.debugDescription)")
            // JSONDecoder, not JSONSerialization: on Linux the latter drops U+FEFF from a
            // string that also holds an escape.
            let back = try JSONDecoder().decode([String].self, from: Data("[\(text)]".utf8))
            #expect(back == [s], "\(s.debugDescription)")
        }
    }

    static func randomAttempt(_ rng: inout SeededGenerator) -> AttemptRecord {
        var fields: [String: String] = [
            "outcome": ["delivered", "deferred", "failed", "ambiguous"].randomElement(using: &rng)!,
            "attempt": String(Int.random(in: -3...30, using: &rng)),
            "code": String(Int.random(in: 0...599, using: &rng)),
            "enhanced": awkwardString(&rng), "reply": awkwardString(&rng),
            "stage": awkwardString(&rng), "mx": awkwardString(&rng), "addr": awkwardString(&rng),
            "ip": awkwardString(&rng), "tls": awkwardString(&rng),
            "ms": String(Int.random(in: 0...99_999, using: &rng)),
        ]
        if Bool.random(using: &rng) {
            fields["tls_version"] = awkwardString(&rng)
            fields["tls_cipher"] = awkwardString(&rng)
            fields["tls_verified"] = ["yes", "no", ""].randomElement(using: &rng)!
        }
        if Bool.random(using: &rng) {
            fields["data_ms"] = String(Int.random(in: 0...9999, using: &rng))
            fields["connect_ms"] = String(Int.random(in: 0...9999, using: &rng))
            fields["reused"] = Bool.random(using: &rng) ? "yes" : "no"
        }
        let at = timestamp(ms: Int64.random(in: 0...4_000_000_000_000, using: &rng))
        return AttemptRecord(result: fields, at: at)!
    }

    @Test func attemptRecordsAreWhatTheSortedEncoderWrites() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var rng = SeededGenerator(state: 5321)
        for _ in 0..<1000 {
            let record = Self.randomAttempt(&rng)
            let text = Data(record.json.utf8)
            let decoded = try JSONDecoder().decode(AttemptRecord.self, from: text)
            #expect(decoded == record, "\(record.json)")
            // The same members and values as the encoder's text (the escapes of control
            // characters may be spelt differently).
            let mine = try JSONSerialization.jsonObject(with: text) as? NSDictionary
            let theirs = try JSONSerialization.jsonObject(with: encoder.encode(record))
                as? NSDictionary
            #expect(mine == theirs, "\(record.json)")
        }
    }

    /// The event and history texts as the dictionary-based writer built them before events
    /// were merged member by member.
    static func referenceEvent(_ e: MessageEvent) -> (json: String, history: String) {
        var object: [String: any Sendable] = [
            "id": e.id, "event": e.event.rawValue, "at": timestamp(ms: e.atMs), "org": e.org,
            "from": e.from, "to": e.to,
        ]
        let meta = e.metadataJSON.trimmingCharacters(in: .whitespaces)
        object["metadata"] = RawJSON(meta.hasPrefix("{") && meta.hasSuffix("}") ? meta : "{}")
        let tags = e.tagsJSON.trimmingCharacters(in: .whitespaces)
        object["tags"] = RawJSON(tags.hasPrefix("[") && tags.hasSuffix("]") ? tags : "[]")
        for (k, v) in e.detail { object[k] = v }
        var history: [String: any Sendable] = ["event": e.event.rawValue,
                                               "at": timestamp(ms: e.atMs)]
        for (k, v) in e.detail { history[k] = v }
        return (SortedJSON.encode(object), SortedJSON.encode(history))
    }

    static let kinds: [EventKind] = [.accepted, .deferred, .delivered, .bounced, .expired,
                                     .complained, .suppressed, .cancelled]

    @Test func eventsAndHistoryEntriesAreWhatTheDictionaryWriterWrote() {
        var rng = SeededGenerator(state: 3339)
        let keys = ["at", "event", "from", "id", "metadata", "org", "tags", "to", "reply",
                    "code", "a", "zz", "Z", "é", "e\u{301}", "_", "at2", "tag", "", "\"k\"",
                    "𝄞", "\u{01}"]
        let metadata = [#"{"uid":42}"#, " {\"a\":\"b\"}\t", "{}", "", "oops", "{", "}", " { } ",
                        "\n{}", #"{"x":[1,2]}"#, "{\u{301}\"a\":1}", "{}\u{301}", " {}\u{301} ",
                        "\u{A0}{}"]
        let tags = [#"["a","b"]"#, "[]", " [\"x\"] ", "", "[", "nope", "\t[]", "[]\u{301}"]
        var mismatches: [String] = []
        for _ in 0..<3000 {
            var detail: [String: any Sendable] = [:]
            for _ in 0..<Int.random(in: 0...6, using: &rng) {
                let key = keys.randomElement(using: &rng)!
                switch Int.random(in: 0..<5, using: &rng) {
                case 0: detail[key] = Self.awkwardString(&rng)
                case 1: detail[key] = Int.random(in: -999...999, using: &rng)
                case 2: detail[key] = Bool.random(using: &rng)
                case 3: detail[key] = ["n": Int64(7), "s": Self.awkwardString(&rng)]
                        as [String: any Sendable]
                default: detail[key] = [Self.awkwardString(&rng), 2.5] as [any Sendable]
                }
            }
            let event = MessageEvent(
                id: Self.awkwardString(&rng), event: Self.kinds.randomElement(using: &rng)!,
                atMs: Int64.random(in: -1000...4_000_000_000_000, using: &rng),
                org: Self.awkwardString(&rng), from: Self.awkwardString(&rng),
                to: Self.awkwardString(&rng), metadataJSON: metadata.randomElement(using: &rng)!,
                tagsJSON: tags.randomElement(using: &rng)!, detail: detail)
            let got = event.documents, expected = Self.referenceEvent(event)
            if got.json != expected.json || got.history != expected.history {
                mismatches.append("\(got.json) != \(expected.json)")
            }
            if event.json != got.json || event.historyJSON != got.history {
                mismatches.append("json/historyJSON differ from documents")
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(3))")
    }
}
