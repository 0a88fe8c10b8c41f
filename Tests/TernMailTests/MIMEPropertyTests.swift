// Property test of message building: many random requests (text, HTML, attachments, inline
// images, Unicode subjects and display names, long lines, binary content, text that tries to
// look like Tern's own boundaries) are built, DKIM-signed, and read back by Python's email
// package (policy=default) and dkimpy, which must find the same subject, names, text, HTML
// and attachment bytes, no defects, and signatures that verify.
//
// The generator is seeded; a failure names the seed and the case so it can be rerun.

import Foundation
import Testing
@testable import TernMail
import TernTestSupport

// `SeededGenerator` (SplitMix64) is TernTestSupport's.

@Suite struct MIMEPropertyTests {
    static let id = "01jnh3v0m8a2b4c6d8e0f2g4h6"
    static let now = Date(timeIntervalSince1970: 1_741_082_707)

    /// Pieces the generator strings together; each stresses one rule.
    static let wordPool = [
        "hello", "Grüße", "naïve", "日本語のテキスト", "Привет", "مرحبا", "שלום", "👩‍👩‍👧‍👦",
        "🎉", "𝄞", "e\u{301}", "a=b", "=?UTF-8?B?eA==?=", "100%", "\"quoted\"", "(paren)",
        "a,b", "x;y", "<tag>", "back\\slash", "tab\there", "=_tern_", "--", "é",
    ]

    struct Case {
        var json: [String: Any]
        var expected: [String: Any]
    }

    static func pick<T>(_ items: [T], _ rng: inout SeededGenerator) -> T {
        items[Int.random(in: 0..<items.count, using: &rng)]
    }

    static func words(_ count: Int, _ rng: inout SeededGenerator) -> String {
        (0..<count).map { _ in
            Bool.random(using: &rng) ? pick(wordPool, &rng) : pick(["and", "the", "Tern"], &rng)
        }.joined(separator: pick([" ", " ", "  "], &rng))
    }

    /// Body text with the lines that make encoders work: long ones (past 998 octets), a
    /// leading dot, trailing spaces, CRLF and LF, and a copy of the message's own boundary.
    static func bodyText(_ rng: inout SeededGenerator) -> String {
        var lines: [String] = []
        for _ in 0..<Int.random(in: 0...12, using: &rng) {
            switch Int.random(in: 0..<8, using: &rng) {
            case 0: lines.append(String(repeating: pick(["x", "é", "0123456789", "日"], &rng),
                                        count: Int.random(in: 80...1200, using: &rng)))
            case 1: lines.append("." + words(3, &rng))
            case 2: lines.append(words(4, &rng) + "   ")
            case 3: lines.append("--=_tern_" + pick(["alt", "mix", "rel"], &rng) + "_" + id)
            case 4: lines.append("")
            default: lines.append(words(Int.random(in: 1...12, using: &rng), &rng))
            }
        }
        let ascii = Bool.random(using: &rng)
        let text = lines.joined(separator: pick(["\n", "\r\n"], &rng))
        return ascii ? String(text.unicodeScalars.filter { $0.isASCII && $0 != "\t" }.map(
            Character.init)) : text
    }

    static func name(_ rng: inout SeededGenerator) -> String? {
        switch Int.random(in: 0..<5, using: &rng) {
        case 0: return nil
        case 1: return "Alice Example"
        case 2: return "Doe, J. \"Jay\" (ops)"
        default:
            let text = words(Int.random(in: 1...6, using: &rng), &rng)
                .replacingOccurrences(of: "\t", with: " ")
            var trimmed = text.trimmingCharacters(in: .whitespaces)
            while trimmed.utf8.count > NamedAddress.maxNameBytes { trimmed.removeLast() }
            trimmed = trimmed.trimmingCharacters(in: .whitespaces)
            return trimmed.isEmpty ? nil : trimmed
        }
    }

    static func filename(_ rng: inout SeededGenerator) -> String {
        switch Int.random(in: 0..<6, using: &rng) {
        case 0: return "report.pdf"
        case 1: return "Übersicht März 2025.xlsx"
        case 2: return String(repeating: "long-name-", count: Int.random(in: 5...20,
                                                                        using: &rng)) + ".bin"
        case 3: return "日本語のファイル名です.txt"
        case 4: return "a \"quoted\"; name=x.csv"
        default: return "f\(Int.random(in: 0...999, using: &rng)) 👩‍👩‍👧‍👦.png"
        }
    }

    static func address(_ local: String, _ rng: inout SeededGenerator) -> String {
        local + "\(Int.random(in: 0...99, using: &rng))@"
            + pick(["example.com", "bücher.example", "münchen.example"], &rng)
    }

    static func makeCase(_ rng: inout SeededGenerator) -> Case {
        var json: [String: Any] = [:]
        var expected: [String: Any] = [:]
        for (field, local) in [("from", "news"), ("to", "reader"), ("reply_to", "help")] {
            if field == "reply_to" && Bool.random(using: &rng) { continue }
            let email = address(local, &rng)
            let ascii = (try? EmailAddress(email))?.asciiForm ?? email
            if let display = name(&rng) {
                json[field] = ["email": email, "name": display]
                expected[field] = [display, ascii]
            } else {
                json[field] = email
                expected[field] = ["", ascii]
            }
        }
        if Int.random(in: 0..<5, using: &rng) > 0 {
            let subject = words(Int.random(in: 1...30, using: &rng), &rng)
                .trimmingCharacters(in: .whitespaces)
            json["subject"] = subject
            expected["subject"] = subject
        }
        let parts = Int.random(in: 0..<3, using: &rng)  // text, html, both
        if parts != 1 {
            let text = bodyText(&rng)
            json["text"] = text
            expected["text"] = text
        }
        if parts != 0 {
            let html = "<html><body><p>" + bodyText(&rng) + "</p></body></html>"
            json["html"] = html
            expected["html"] = html
        }
        var attachments: [[String: Any]] = []
        var expectedFiles: [[String]] = []
        for n in 0..<pick([0, 0, 1, 2, 4], &rng) {
            let size = pick([0, 1, 2, 3, 57, 100, 4000], &rng)
            let content = (0..<size).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let type = pick(["application/pdf", "image/png", "text/csv; charset=utf-8",
                             "application/octet-stream", "Text/Plain"], &rng)
            let file = filename(&rng)
            var item: [String: Any] = ["filename": file, "content_type": type,
                                       "content": Data(content).base64EncodedString()]
            let inline = Bool.random(using: &rng)
            if inline { item["content_id"] = "part\(n).x@example.com" }
            attachments.append(item)
            let base = type.split(separator: ";")[0].lowercased()
            expectedFiles.append([file, base, Data(content).base64EncodedString(),
                                  inline ? "<part\(n).x@example.com>" : ""])
        }
        if !attachments.isEmpty { json["attachments"] = attachments }
        expected["attachments"] = expectedFiles
        return Case(json: json, expected: expected)
    }

    /// The checks, in Python: each case's message parsed with policy=default and compared
    /// with what was asked; every DKIM signature verified by dkimpy. Prints one JSON list
    /// of problems, empty when all is well.
    static let checker = #"""
        import base64, email, email.policy, json, sys
        import dkim
        data = json.load(sys.stdin)
        records = data["records"]
        def dnsfunc(name, timeout=5):
            txt = records.get(name.decode().rstrip('.'))
            return txt.encode() if txt else None
        def lines(s):
            s = s.replace("\r\n", "\n")
            return s if s == "" or s.endswith("\n") else s + "\n"
        problems = []
        for n, case in enumerate(data["cases"]):
            raw = base64.b64decode(case["message"])
            want = case["expected"]
            def bad(what, got, expected):
                problems.append({"case": n, "what": what, "got": repr(got)[:300],
                                 "want": repr(expected)[:300]})
            m = email.message_from_bytes(raw, policy=email.policy.default)
            for field in ("from", "to", "reply_to"):
                header = m[field.replace("_", "-")]
                if field not in want:
                    if header is not None: bad(field, str(header), None)
                    continue
                # Python reads a phrase's whitespace as single spaces (and the folding
                # between two encoded words as one more), so runs of it are compared as one.
                got = [header.addresses[0].display_name, header.addresses[0].addr_spec]
                expected = [" ".join(want[field][0].split()), want[field][1]]
                got[0] = " ".join(got[0].split())
                if got != expected: bad(field, got, expected)
            if "subject" in want and str(m["subject"]) != want["subject"]:
                bad("subject", str(m["subject"]), want["subject"])
            text = html = None
            files = []
            for part in m.walk():
                for d in part.defects: bad("defect", str(d), None)
                if part.is_multipart(): continue
                disposition = part.get_content_disposition()
                if disposition in ("attachment", "inline"):
                    files.append([part.get_filename(), part.get_content_type(),
                                  base64.b64encode(part.get_payload(decode=True)).decode(),
                                  part.get("content-id", "")])
                elif part.get_content_type() == "text/plain" and text is None:
                    text = part.get_content()
                elif part.get_content_type() == "text/html" and html is None:
                    html = part.get_content()
                else:
                    bad("unexpected part", part.get_content_type(), None)
            if "text" in want and (text is None or lines(text) != lines(want["text"])):
                bad("text", text, want["text"])
            if "html" in want and (html is None or lines(html) != lines(want["html"])):
                bad("html", html, want["html"])
            if sorted(files) != sorted(want["attachments"]):
                bad("attachments", sorted(files), sorted(want["attachments"]))
            for line in raw.split(b"\r\n"):
                if len(line) > 998: bad("line over 998 octets", len(line), 998)
            verdicts = []
            d = dkim.DKIM(raw)
            count = sum(1 for name, _ in d.headers if name.lower() == b'dkim-signature')
            for i in range(count):
                try:
                    ok = dkim.DKIM(raw).verify(idx=i, dnsfunc=dnsfunc)
                except Exception as e:
                    ok = str(e)
                verdicts.append(ok)
            if verdicts != [True, True]: bad("dkim", verdicts, [True, True])
        print(json.dumps(problems))
        """#

    @Test(arguments: [UInt64(1), 2, 3, 4])
    func builtMessagesParseBackToWhatWasAsked(seed: UInt64) async throws {
        var rng = SeededGenerator(state: seed)
        let rsa = try await TestKeys.shared.pair("rsa")
        let ed = try await TestKeys.shared.pair("ed25519")
        var signer: [String: DKIMSigner] = [:]
        var records: [String: String] = [:]
        for domain in ["example.com", "xn--bcher-kva.example", "xn--mnchen-3ya.example"] {
            signer[domain] = DKIMSigner(keys: try keyTable([
                (domain, "r1", .rsaSHA256, rsa), (domain, "e1", .ed25519SHA256, ed),
            ]))
            records["r1._domainkey." + domain] = rsa.record
            records["e1._domainkey." + domain] = ed.record
        }
        var cases: [[String: Any]] = []
        for _ in 0..<60 {
            let c = MIMEPropertyTests.makeCase(&rng)
            let body = try JSONSerialization.data(withJSONObject: c.json)
            let request = try SendRequest.decode(body, now: MIMEPropertyTests.now)
            let built = MessageBuilder.build(request, id: MIMEPropertyTests.id,
                                             now: MIMEPropertyTests.now,
                                             hostname: "mta.example.com")
            expectWellFormed(built)
            let (signed, outcome) = signer[request.from.asciiDomain]!.sign(
                built, at: MIMEPropertyTests.now)
            #expect(outcome.isSigned)
            cases.append(["message": Data(signed).base64EncodedString(),
                          "expected": c.expected])
        }
        let input = try JSONSerialization.data(withJSONObject: ["cases": cases,
                                                                "records": records])
        let output = try await runPython(MIMEPropertyTests.checker, input: Array(input))
        let problems = try #require(
            try JSONSerialization.jsonObject(with: Data(output)) as? [[String: Any]],
            "checker printed: \(String(decoding: output, as: UTF8.self).prefix(2000))")
        for problem in problems.prefix(10) {
            Issue.record("seed \(seed): \(problem)")
        }
    }

    /// CRLF line ends only, no line over 998 octets, and ending in CRLF.
    func expectWellFormed(_ bytes: [UInt8]) {
        #expect(bytes.suffix(2) == [13, 10])
        var bare = 0
        for (i, b) in bytes.enumerated() {
            if b == 10 && (i == 0 || bytes[i - 1] != 13) { bare += 1 }
            if b == 13 && (i + 1 == bytes.count || bytes[i + 1] != 10) { bare += 1 }
        }
        #expect(bare == 0, "bare CR or LF")
        #expect(MessageBody.longestLine(bytes) <= MessageBody.maxLineLength)
    }
}
