// Building RFC 5322 messages from send requests: header order, CRLF, folding, RFC 2047 words,
// quoted-printable, multipart/alternative, raw messages. Python's email package reads the
// output back as an independent check of the MIME encoding.

import Foundation
import Testing
@testable import TernMail
import TernTestSupport

@Suite struct MessageBuilderTests {
    let now = Date(timeIntervalSince1970: 1_741_082_707)
    let id = "01jnh3v0m8a2b4c6d8e0f2g4h6"

    func request(_ json: String) throws -> SendRequest {
        try SendRequest.decode(Array(json.utf8))
    }

    func build(_ json: String) throws -> String {
        let bytes = MessageBuilder.build(try request(json), id: id, now: now,
                                         hostname: "Mail.Example.com")
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Header section and body of a built message.
    func split(_ message: String) -> (head: String, body: String) {
        let parts = message.components(separatedBy: "\r\n\r\n")
        return (parts[0], parts.dropFirst().joined(separator: "\r\n\r\n"))
    }

    /// Every line ends in CRLF, no bare CR or LF, nothing over 998 octets.
    func expectWellFormed(_ message: String, maxLine: Int = 998) {
        let bytes = Array(message.utf8)
        #expect(bytes.suffix(2) == [13, 10])
        for (i, b) in bytes.enumerated() {
            if b == 10 { #expect(i > 0 && bytes[i - 1] == 13, "bare LF at \(i)") }
            if b == 13 { #expect(i + 1 < bytes.count && bytes[i + 1] == 10, "bare CR at \(i)") }
        }
        #expect(MessageBody.longestLine(bytes) <= maxLine)
    }

    @Test func plainTextMessage() throws {
        let message = try build(#"""
            {"from":"news@example.com","to":"reader@example.net","subject":"Hello there",
             "text":"Line one\nLine two\n"}
            """#)
        #expect(message == """
            Date: Tue, 04 Mar 2025 10:05:07 +0000\r
            Message-ID: <01jnh3v0m8a2b4c6d8e0f2g4h6@mail.example.com>\r
            From: news@example.com\r
            To: reader@example.net\r
            Subject: Hello there\r
            MIME-Version: 1.0\r
            Content-Type: text/plain; charset=utf-8\r
            Content-Transfer-Encoding: 7bit\r
            \r
            Line one\r
            Line two\r

            """)
        expectWellFormed(message)
    }

    @Test func headerOrderReplyToAndCustomHeaders() throws {
        let message = try build(#"""
            {"from":"a@example.com","to":"b@example.net","reply_to":"help@example.com",
             "html":"<p>x</p>","headers":{"X-Tag":"spring","List-Id":"<news.example.com>"}}
            """#)
        let names = split(message).head.components(separatedBy: "\r\n").map {
            String($0.prefix { $0 != ":" })
        }
        #expect(names == ["Date", "Message-ID", "From", "Reply-To", "To", "MIME-Version",
                          "Content-Type", "Content-Transfer-Encoding", "List-Id", "X-Tag"])
        #expect(message.contains("\r\nReply-To: help@example.com\r\n"))
        #expect(message.contains("\r\nContent-Type: text/html; charset=utf-8\r\n"))
        #expect(message.contains("\r\nList-Id: <news.example.com>\r\n"))
        #expect(split(message).body == "<p>x</p>\r\n")
    }

    @Test func nonASCIISubjectBecomesEncodedWords() throws {
        let subject = "Grüße aus Köln — 你好"
        let message = try build("""
            {"from":"a@example.com","to":"b@example.net","subject":"\(subject)","text":"x"}
            """)
        let line = try #require(message.components(separatedBy: "\r\n")
            .first { $0.hasPrefix("Subject: ") })
        #expect(line.hasPrefix("Subject: =?UTF-8?B?") && line.hasSuffix("?="))
        #expect(decodeEncodedWords(in: message, field: "Subject") == subject)
        expectWellFormed(message, maxLine: 78)
    }

    @Test func longSubjectsFold() throws {
        let words = (1...40).map { "word\($0)" }.joined(separator: " ")
        let message = try build("""
            {"from":"a@example.com","to":"b@example.net","subject":"\(words)","text":"x"}
            """)
        expectWellFormed(message, maxLine: 78)
        // Unfolding (RFC 5322 §2.2.3) gives back the subject.
        let head = split(message).head.replacingOccurrences(of: "\r\n ", with: " ")
        #expect(head.contains("\r\nSubject: " + words + "\r\n"))

        let long = (1...60).map { "ünïcödé\($0)" }.joined(separator: " ")
        let encoded = try build("""
            {"from":"a@example.com","to":"b@example.net","subject":"\(long)","text":"x"}
            """)
        expectWellFormed(encoded, maxLine: 78)
        #expect(decodeEncodedWords(in: encoded, field: "Subject") == long)
    }

    @Test func encodedWordsKeepCharactersWhole() throws {
        // Four-byte characters and a long emoji sequence must not be cut inside a character.
        let subject = String(repeating: "𝄞", count: 40) + "👩‍👩‍👧‍👦"
            + String(repeating: "é", count: 50)
        let message = try build("""
            {"from":"a@example.com","to":"b@example.net","subject":"\(subject)","text":"x"}
            """)
        let words = message.components(separatedBy: "=?UTF-8?B?").dropFirst()
        for word in words {
            let base64 = String(word.prefix { $0 != "?" })
            let bytes = try #require(Data(base64Encoded: base64))
            #expect(String(bytes: bytes, encoding: .utf8) != nil, "split character")
            #expect(("=?UTF-8?B?" + base64 + "?=").count <= 75)
        }
        #expect(decodeEncodedWords(in: message, field: "Subject") == subject)
    }

    @Test func quotedPrintableBodies() throws {
        let long = String(repeating: "0123456789", count: 110)  // 1100 octets on one line
        let message = try build("""
            {"from":"a@example.com","to":"b@example.net",
             "text":"Café = 5€ \\nline with trailing space \\n\(long)\\n.dot line\\n"}
            """)
        #expect(message.contains("\r\nContent-Transfer-Encoding: quoted-printable\r\n"))
        let body = split(message).body
        #expect(body.hasPrefix("Caf=C3=A9 =3D 5=E2=82=AC=20\r\nline with trailing space=20\r\n"))
        #expect(body.contains("\r\n.dot line\r\n"))
        expectWellFormed(message, maxLine: 78)
        #expect(decodeQuotedPrintable(body)
                == "Café = 5€ \r\nline with trailing space \r\n\(long)\r\n.dot line\r\n")
    }

    @Test func quotedPrintableSoftBreaksStayWithin76() {
        for length in [74, 75, 76, 77, 150, 151, 152] {
            for tail in ["", "é", " "] {
                let line = String(repeating: "a", count: length) + tail
                let encoded = QuotedPrintable.encode(Array(line.utf8))
                let text = String(decoding: encoded, as: UTF8.self)
                #expect(MessageBody.longestLine(encoded) <= 76, "\(length) \(tail)")
                #expect(decodeQuotedPrintable(text) == line)
            }
        }
        #expect(String(decoding: QuotedPrintable.encode(Array("a\tb\t".utf8)), as: UTF8.self)
                == "a\tb=09")
    }

    @Test func multipartAlternative() throws {
        let message = try build(#"""
            {"from":"a@example.com","to":"b@example.net","subject":"s",
             "text":"plain text","html":"<p>Grüße</p>"}
            """#)
        let boundary = "=_tern_alt_" + id
        #expect(message.contains(
            "\r\nContent-Type: multipart/alternative;\r\n boundary=\"\(boundary)\"\r\n"))
        #expect(split(message).body == """
            --\(boundary)\r
            Content-Type: text/plain; charset=utf-8\r
            Content-Transfer-Encoding: 7bit\r
            \r
            plain text\r
            \r
            --\(boundary)\r
            Content-Type: text/html; charset=utf-8\r
            Content-Transfer-Encoding: quoted-printable\r
            \r
            <p>Gr=C3=BC=C3=9Fe</p>\r
            \r
            --\(boundary)--\r

            """)
        expectWellFormed(message)
    }

    @Test func internationalAddressesStayUTF8() throws {
        let message = try build(#"""
            {"from":"a@example.com","to":"josé@bücher.de","text":"x"}
            """#)
        #expect(message.contains("\r\nTo: josé@bücher.de\r\n"))
    }

    @Test func internationalDomainsOfASCIIMailboxesAreWrittenAsALabels() throws {
        let message = try build(#"""
            {"from":"news@bücher.example","reply_to":"help@Bücher.example",
             "to":"reader@münchen.example","text":"x"}
            """#)
        let head = split(message).head
        #expect(head.contains("\r\nFrom: news@xn--bcher-kva.example\r\n"))
        #expect(head.contains("\r\nReply-To: help@xn--bcher-kva.example\r\n"))
        #expect(head.contains("\r\nTo: reader@xn--mnchen-3ya.example\r\n"))
        #expect(head.utf8.allSatisfy { $0 < 0x80 }, "\(head)")
    }

    @Test func customHeaderValuesFoldOrEncode() throws {
        let value = (1...30).map { "token\($0)" }.joined(separator: " ")
        let message = try build("""
            {"from":"a@example.com","to":"b@example.net","text":"x",
             "headers":{"X-Long":"\(value)","X-Name":"Zoë"}}
            """)
        expectWellFormed(message, maxLine: 78)
        let head = split(message).head.replacingOccurrences(of: "\r\n ", with: " ")
        #expect(head.contains("\r\nX-Long: " + value))
        #expect(decodeEncodedWords(in: message, field: "X-Name") == "Zoë")
    }

    @Test func rawGetsDateAndMessageIDWhenAbsent() throws {
        let message = try build(#"""
            {"from":"a@example.com","to":"b@example.net",
             "raw":"From: a@example.com\nTo: b@example.net\nSubject: raw\n\nbody\n.line\n"}
            """#)
        #expect(message == """
            Date: Tue, 04 Mar 2025 10:05:07 +0000\r
            Message-ID: <01jnh3v0m8a2b4c6d8e0f2g4h6@mail.example.com>\r
            From: a@example.com\r
            To: b@example.net\r
            Subject: raw\r
            \r
            body\r
            .line\r

            """)
    }

    @Test func rawKeepsItsOwnDateAndMessageID() throws {
        let raw = "From: a@example.com\r\nDATE: Mon, 3 Mar 2025 09:00:00 +0100\r\n"
            + "message-id: <own@example.com>\r\n\r\nbody"
        let json = try JSONSerialization.data(withJSONObject: [
            "from": "a@example.com", "to": "b@example.net", "raw": raw,
        ])
        let bytes = MessageBuilder.build(try SendRequest.decode(json), id: id, now: now,
                                         hostname: "mail.example.com")
        #expect(String(decoding: bytes, as: UTF8.self) == raw)
    }

    @Test(arguments: [
        (0.0, "Thu, 01 Jan 1970 00:00:00 +0000"),
        (951_782_400, "Tue, 29 Feb 2000 00:00:00 +0000"),
        (1_709_210_096, "Thu, 29 Feb 2024 12:34:56 +0000"),
        (4_102_444_799, "Thu, 31 Dec 2099 23:59:59 +0000"),
        (1_741_082_707.999, "Tue, 04 Mar 2025 10:05:07 +0000"),
    ])
    func mailDate(_ seconds: Double, _ expected: String) {
        #expect(MailDate.string(from: Date(timeIntervalSince1970: seconds)) == expected)
    }

    /// Against Foundation's Gregorian calendar in UTC, from 1900 to 2400, before the epoch
    /// included.
    @Test func mailDatesAreTheCalendarsDates() {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                      "Nov", "Dec"]
        var rng = SeededGenerator(state: 5322)
        for _ in 0..<3000 {
            let seconds = Double(Int64.random(in: -2_208_988_800...13_569_465_600, using: &rng))
                + Double(Int.random(in: 0..<1000, using: &rng)) / 1000
            let date = Date(timeIntervalSince1970: seconds)
            let c = calendar.dateComponents(
                [.year, .month, .day, .weekday, .hour, .minute, .second], from: date)
            let expected = String(format: "%@, %02d %@ %d %02d:%02d:%02d +0000",
                                  days[c.weekday! - 1], c.day!, months[c.month! - 1], c.year!,
                                  c.hour!, c.minute!, c.second!)
            #expect(MailDate.string(from: date) == expected, "\(seconds)")
        }
    }

    @Test func displayNamesAreQuotedOrEncoded() throws {
        let message = try build(#"""
            {"from":{"email":"news@example.com","name":"Tern News"},
             "reply_to":"\"Doe, Jane \\\"JD\\\"\" <help@example.com>",
             "to":{"email":"reader@bücher.example","name":"Zoë Bäcker"},"text":"x"}
            """#)
        let head = split(message).head
        #expect(head.contains("\r\nFrom: Tern News <news@example.com>\r\n"))
        #expect(head.contains(#"\#r\#nReply-To: "Doe, Jane \"JD\"" <help@example.com>\#r\#n"#))
        #expect(head.contains("\r\nTo: =?UTF-8?B?" + Data("Zoë Bäcker".utf8).base64EncodedString()
                              + "?= <reader@xn--bcher-kva.example>\r\n"))
        expectWellFormed(message, maxLine: 78)
    }

    @Test func attachmentsMakeMultipartMixed() throws {
        let bytes: [UInt8] = Array(0...255) + Array(0...255)
        let content = Data(bytes).base64EncodedString()
        let message = try build("""
            {"from":"a@example.com","to":"b@example.net","text":"see attached",
             "attachments":[{"filename":"data.bin","content":"\(content)"},
                            {"filename":"März – Übersicht.pdf","content_type":"application/pdf",
                             "content":"JVBERi0="}]}
            """)
        let mixed = "=_tern_mix_" + id
        let head = split(message).head
        #expect(head.hasSuffix("\r\nContent-Type: multipart/mixed;\r\n boundary=\"\(mixed)\""))
        #expect(!head.contains("Content-Transfer-Encoding"))
        let body = split(message).body
        #expect(body.hasPrefix("--\(mixed)\r\nContent-Type: text/plain; charset=utf-8\r\n"
                               + "Content-Transfer-Encoding: 7bit\r\n\r\nsee attached\r\n\r\n"
                               + "--\(mixed)\r\n"))
        #expect(body.contains("Content-Type: application/octet-stream; name=data.bin\r\n"
                              + "Content-Disposition: attachment; filename=data.bin\r\n"
                              + "Content-Transfer-Encoding: base64\r\n\r\n"))
        // 512 bytes: 684 characters of base64 in lines of 76.
        let base64 = Data(bytes).base64EncodedString()
        #expect(body.contains(String(base64.prefix(76)) + "\r\n" + String(base64.dropFirst(76)
            .prefix(76)) + "\r\n"))
        // RFC 2231: the UTF-8 name percent-encoded, in pieces when long.
        let encoded = "utf-8''M%C3%A4rz%20%E2%80%93%20%C3%9Cbersicht.pdf"
        #expect(body.contains("Content-Disposition: attachment;\r\n filename*=" + encoded
                              + "\r\n"), "\(body)")
        #expect(body.hasSuffix("\r\n--\(mixed)--\r\n"))
        expectWellFormed(message, maxLine: 78)
    }

    @Test func longFileNamesContinueOverLines() throws {
        let name = String(repeating: "ä", count: 60) + ".txt"
        let message = try build("""
            {"from":"a@example.com","to":"b@example.net","text":"x",
             "attachments":[{"filename":"\(name)","content":""}]}
            """)
        #expect(message.contains("\r\n filename*0*=utf-8''%C3%A4"))
        #expect(message.contains("\r\n filename*1*=%C3%A4"))
        expectWellFormed(message, maxLine: 78)
    }

    @Test func inlineImagesGoWithTheHTMLInMultipartRelated() throws {
        let message = try build(#"""
            {"from":"a@example.com","to":"b@example.net","text":"plain",
             "html":"<img src=\"cid:logo@x\">",
             "attachments":[{"filename":"logo.png","content_type":"image/png","content":"iVBORw==",
                             "content_id":"logo@x"},
                            {"filename":"terms.pdf","content":"JVBERi0="}]}
            """#)
        let mixed = "=_tern_mix_" + id, alt = "=_tern_alt_" + id, rel = "=_tern_rel_" + id
        let lines = message.components(separatedBy: "\r\n")
        // The structure, read from the delimiter lines in order.
        let delimiters = lines.filter { $0.hasPrefix("--=_tern_") }
        #expect(delimiters == ["--\(mixed)", "--\(alt)", "--\(alt)", "--\(rel)", "--\(rel)",
                               "--\(rel)--", "--\(alt)--", "--\(mixed)", "--\(mixed)--"])
        #expect(message.contains("Content-Type: multipart/related;\r\n boundary=\"\(rel)\";"
                                 + " type=\"text/html\"\r\n"))
        #expect(message.contains("Content-Type: image/png; name=logo.png\r\n"
                                 + "Content-Disposition: inline; filename=logo.png\r\n"
                                 + "Content-ID: <logo@x>\r\n"))
        #expect(message.contains("Content-Disposition: attachment; filename=terms.pdf\r\n"))
    }

    @Test func inlineAttachmentsWithoutHTMLAreAttached() throws {
        let message = try build(#"""
            {"from":"a@example.com","to":"b@example.net","text":"plain",
             "attachments":[{"filename":"logo.png","content":"iVBORw==","content_id":"logo@x"}]}
            """#)
        #expect(message.contains("multipart/mixed") && !message.contains("multipart/related"))
    }

    @Test func transferEncodingFollowsTheContent() {
        let cases: [(String, String)] = [
            ("plain ASCII\r\n", "7bit"),
            ("has =_ which could start a boundary\r\n", "quoted-printable"),
            ("Grüße aus Köln\r\n", "quoted-printable"),
            (String(repeating: "x", count: 999) + "\r\n", "quoted-printable"),
            // 998 octets is the limit itself; tabs count; a bare CR or LF ends a line too.
            (String(repeating: "x", count: 998) + "\r\n", "7bit"),
            ("a\r" + String(repeating: "y", count: 998) + "\nb\r\n", "7bit"),
            (String(repeating: "\t", count: 999) + "\r\n", "quoted-printable"),
            ("a\u{7F}b\r\n", "7bit"),
            ("bell \u{07}\r\n", "quoted-printable"),
            ("日本語のテキストです。これは長い文章です。\r\n", "base64"),
            ("Привет, как дела? Всё хорошо.\r\n", "base64"),
        ]
        for (text, expected) in cases {
            #expect(MIMEPart.encode(Array(text.utf8)).name == expected, "\(text)")
        }
    }

    @Test func boundariesNeverOccurInTheContent() throws {
        // Text that copies Tern's boundary lines exactly is not sent 7bit, so the copy is
        // changed by the encoding and cannot end a part.
        let fake = "--=_tern_alt_\(id)--"
        let message = try build("""
            {"from":"a@example.com","to":"b@example.net","text":"\(fake)\\nmore","html":"<p>x</p>"}
            """)
        let lines = message.components(separatedBy: "\r\n")
        #expect(lines.filter { $0 == fake }.count == 1, "\(message)")
        #expect(message.contains("--=3D_tern_alt_\(id)--\r\n"))
    }

    @Test func pythonEmailPackageReadsTheMessage() async throws {
        let message = try build(#"""
            {"from":"news@example.com","to":"reader@example.net","reply_to":"r@example.com",
             "subject":"Grüße — a subject long enough that it must be folded across lines",
             "text":"Hällo\nsecond line\n","html":"<p>Hällo</p>",
             "headers":{"X-Tag":"Zoë"}}
            """#)
        let script = """
            import email, email.policy, json, sys
            m = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.default)
            parts = [[p.get_content_type(), p.get_content()] for p in m.walk()
                     if not p.is_multipart()]
            defects = [str(d) for p in m.walk() for d in p.defects]
            print(json.dumps({"subject": str(m["subject"]), "tag": str(m["x-tag"]),
                              "type": m.get_content_type(), "parts": parts,
                              "defects": defects, "id": str(m["message-id"])}))
            """
        let output = try await runPython(script, input: Array(message.utf8))
        let json = try #require(try JSONSerialization.jsonObject(with: Data(output))
                                as? [String: Any])
        #expect(json["subject"] as? String
                == "Grüße — a subject long enough that it must be folded across lines")
        #expect(json["tag"] as? String == "Zoë")
        #expect(json["type"] as? String == "multipart/alternative")
        #expect(json["id"] as? String == "<\(id)@mail.example.com>")
        #expect((json["defects"] as? [Any])?.isEmpty == true)
        let parts = try #require(json["parts"] as? [[String]])
        // Python keeps the CRLF hard line breaks of quoted-printable content.
        #expect(parts == [["text/plain", "Hällo\r\nsecond line\r\n"],
                          ["text/html", "<p>Hällo</p>\r\n"]])
    }
}

// MARK: - Independent decoders for the checks above

/// The value of `field` with RFC 2047 B-encoded words decoded and folding removed.
func decodeEncodedWords(in message: String, field: String) -> String? {
    let head = message.components(separatedBy: "\r\n\r\n")[0]
    let unfolded = head.replacingOccurrences(of: "\r\n ", with: " ")
    guard let line = unfolded.components(separatedBy: "\r\n")
        .first(where: { $0.hasPrefix(field + ": ") })
    else { return nil }
    var bytes: [UInt8] = []
    for word in line.dropFirst(field.count + 2).split(separator: " ") {
        guard word.hasPrefix("=?UTF-8?B?"), word.hasSuffix("?="),
              let data = Data(base64Encoded: String(word.dropFirst(10).dropLast(2)))
        else { return nil }
        bytes += data
    }
    return String(bytes: bytes, encoding: .utf8)
}

/// RFC 2045 §6.7 decoding, written separately from the encoder.
func decodeQuotedPrintable(_ text: String) -> String {
    var out: [UInt8] = []
    let bytes = Array(text.utf8)
    var i = 0
    while i < bytes.count {
        if bytes[i] == UInt8(ascii: "=") {
            if i + 2 < bytes.count, bytes[i + 1] == 13, bytes[i + 2] == 10 {
                i += 3
                continue
            }
            if i + 2 < bytes.count, let v = UInt8(String(decoding: bytes[(i + 1)...(i + 2)],
                                                          as: UTF8.self), radix: 16) {
                out.append(v)
                i += 3
                continue
            }
        }
        out.append(bytes[i])
        i += 1
    }
    return String(decoding: out, as: UTF8.self)
}

/// Runs python3 on its own thread (waiting for a process blocks) and returns its stdout.
func runPython(_ script: String, input: [UInt8]) async throws -> [UInt8] {
    try await withCheckedThrowingContinuation { continuation in
        Thread {
            do {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
                process.arguments = ["python3", "-c", script]
                let stdin = Pipe(), stdout = Pipe()
                process.standardInput = stdin
                process.standardOutput = stdout
                try process.run()
                stdin.fileHandleForWriting.write(Data(input))
                try stdin.fileHandleForWriting.close()
                let output = stdout.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                continuation.resume(returning: Array(output))
            } catch {
                continuation.resume(throwing: error)
            }
        }.start()
    }
}
