// POST /v1/send validation: each failure names the field at fault.

import Foundation
import Testing
import TernMail

@Suite struct SendRequestTests {
    /// 2025-03-04T10:05:07Z, the time the table's send_at values are judged at.
    static let now = Date(timeIntervalSince1970: 1_741_082_707)

    func decode(_ json: String) throws(ValidationError) -> SendRequest {
        try SendRequest.decode(Array(json.utf8), now: Self.now)
    }

    /// One attachment as JSON.
    static func file(name: String = "a.pdf", type: String = "application/pdf",
                     content: String = "JVBERi0=", cid: String? = nil) -> String {
        "{\"filename\":\"\(name)\",\"content_type\":\"\(type)\",\"content\":\"\(content)\""
            + (cid.map { ",\"content_id\":\"\($0)\"" } ?? "") + "}"
    }

    @Test func minimalRequestGetsDefaults() throws {
        let request = try decode(#"{"from":"a@example.com","to":"b@example.net","text":"hi"}"#)
        #expect(request.from.description == "a@example.com")
        #expect(request.to.description == "b@example.net")
        #expect(request.text == "hi")
        #expect(request.html == nil && request.raw == nil && request.subject == nil)
        #expect(request.org == "default" && request.pool == "default")
        #expect(request.headers.isEmpty)
        #expect(request.metadata.isEmpty && request.metadataJSON == "{}")
    }

    @Test func fullRequest() throws {
        let request = try decode("""
            {"from":"news@example.com","to":"Reader@Example.NET","subject":"Héllo",
             "text":"plain","html":"<p>rich</p>","reply_to":"help@example.com",
             "headers":{"X-Campaign":"spring","List-Unsubscribe":"<https://example.com/u>"},
             "org":"acme_1","pool":"bulk-2",
             "metadata":{"user":"u-1","n":42,"ratio":0.5,"vip":true,"path":"a/b"}}
            """)
        #expect(request.to.domain == "example.net")
        #expect(request.subject == "Héllo")
        #expect(request.replyTo?.description == "help@example.com")
        #expect(request.headers == [
            HeaderField(name: "List-Unsubscribe", value: "<https://example.com/u>"),
            HeaderField(name: "X-Campaign", value: "spring"),
        ])
        #expect(request.org == "acme_1" && request.pool == "bulk-2")
        #expect(request.metadata == ["user": .string("u-1"), "n": .integer(42),
                                     "ratio": .number(0.5), "vip": .bool(true),
                                     "path": .string("a/b")])
        #expect(request.metadataJSON
                == #"{"n":42,"path":"a/b","ratio":0.5,"user":"u-1","vip":true}"#)
    }

    @Test func rawRequest() throws {
        let request = try decode(#"""
            {"from":"a@example.com","to":"b@example.net",
             "raw":"From: a@example.com\nSubject: x\n\nbody\n","pool":"p"}
            """#)
        #expect(request.raw == "From: a@example.com\nSubject: x\n\nbody\n")
    }

    @Test func nullIsAbsent() throws {
        let request = try decode(
            #"{"from":"a@example.com","to":"b@example.net","text":"t","html":null,"org":null}"#)
        #expect(request.html == nil && request.org == "default")
    }

    static let base = #""from":"a@example.com","to":"b@example.net""#

    /// (JSON body, field named by the error, part of its message).
    static let failures: [(String, String, String)] = [
        ("not json", "body", "not valid JSON"),
        ("[1,2]", "body", "must be a JSON object"),
        (#""x""#, "body", "must be a JSON object"),
        ("42", "body", "must be a JSON object"),
        ("null", "body", "must be a JSON object"),
        ("", "body", "not valid JSON"),
        (#"{"to":"b@example.net","text":"t"}"#, "from", "is required"),
        (#"{"from":"a@example.com","text":"t"}"#, "to", "is required"),
        (#"{"from":"a@example","to":"b@example.net","text":"t","bcc":"x","cc":"y"}"#,
         "bcc", "unknown fields: bcc, cc"),
        ("{\(base),\"text\":\"t\",\"Subject\":\"x\"}", "Subject", "not a known field"),
        (#"{"from":"a.example.com","to":"b@example.net","text":"t"}"#, "from", "no @"),
        (#"{"from":"a@example.com","to":"b@exa mple.net","text":"t"}"#, "to", "space"),
        (#"{"from":"a@example.com","to":["b@example.net","c@example.net"],"text":"t"}"#,
         "to", "one request per recipient"),
        (#"{"from":"a@example.com","to":5,"text":"t"}"#, "to", "must be a string"),
        (#"{"from":"a@example.com","to":"alice@[127.0.0.1]","text":"t"}"#, "to",
         "address literals such as [127.0.0.1] are not supported as recipients"),
        (#"{"from":"a@example.com","to":"alice@[IPv6:::1]","text":"t"}"#, "to",
         "address literals such as [ipv6:::1] are not supported as recipients"),
        (#"{"from":"a@example.com","to":"alice@localhost","text":"t"}"#, "to",
         "localhost names this machine"),
        (#"{"from":"a@example.com","to":"alice@LocalHost","text":"t"}"#, "to",
         "localhost names this machine"),
        (#"{"from":"a@example.com","to":"alice@mx.dev.localhost","text":"t"}"#, "to",
         "mx.dev.localhost names this machine"),
        ("{\(base),\"text\":\"t\",\"reply_to\":\"nobody\"}", "reply_to", "no @"),
        ("{\(base),\"text\":\"t\",\"subject\":\"a\\r\\nBcc: x@y\"}", "subject", "CR or LF"),
        ("{\(base),\"text\":\"t\",\"subject\":\"a\\nb\"}", "subject", "CR or LF"),
        ("{\(base),\"text\":\"t\",\"subject\":\"a\\u0007b\"}", "subject", "controls"),
        ("{\(base),\"text\":\"t\",\"subject\":7}", "subject", "must be a string"),
        ("{\(base),\"text\":\"t\",\"subject\":\"\(String(repeating: "s", count: 990))\"}",
         "subject", "longer than 989"),
        ("{\(base)}", "text", "one of text, html or raw"),
        ("{\(base),\"subject\":\"only a subject\"}", "text", "one of text, html or raw"),
        ("{\(base),\"text\":\"a\\u0000b\"}", "text", "NUL"),
        ("{\(base),\"text\":\"t\",\"html\":\"Grüße\(String(repeating: "x", count: 5000))"
         + "\\u0000\"}", "html", "NUL"),
        ("{\(base),\"html\":true}", "html", "must be a string"),
        ("{\(base),\"raw\":\"From: a@example.com\\n\\nx\",\"text\":\"t\"}", "text",
         "cannot be combined with raw"),
        ("{\(base),\"raw\":\"From: a@example.com\\n\\nx\",\"subject\":\"s\"}", "subject",
         "cannot be combined with raw"),
        ("{\(base),\"raw\":\"From: a@example.com\\n\\nx\",\"headers\":{\"X-A\":\"1\"}}",
         "headers", "cannot be combined with raw"),
        ("{\(base),\"raw\":\"Subject: no from\\n\\nx\"}", "raw", "no From"),
        ("{\(base),\"raw\":\"just a body line\\n\"}", "raw", "header section"),
        ("{\(base),\"raw\":\"\"}", "raw", "is empty"),
        ("{\(base),\"raw\":\"From: a@example.com\\n\\n\(String(repeating: "x", count: 999))\"}",
         "raw", "line 3 is longer than 998"),
        ("{\(base),\"text\":\"t\",\"headers\":[\"X-A: 1\"]}", "headers", "must be an object"),
        ("{\(base),\"text\":\"t\",\"headers\":{\"X A\":\"1\"}}", "headers.X A",
         "not a valid header field name"),
        ("{\(base),\"text\":\"t\",\"headers\":{\"X:A\":\"1\"}}", "headers.X:A",
         "not a valid header field name"),
        ("{\(base),\"text\":\"t\",\"headers\":{\"\":\"1\"}}", "headers.",
         "not a valid header field name"),
        ("{\(base),\"text\":\"t\",\"headers\":{\"DKIM-Signature\":\"v=1\"}}",
         "headers.DKIM-Signature", "set by Tern"),
        ("{\(base),\"text\":\"t\",\"headers\":{\"message-id\":\"<x@y>\"}}",
         "headers.message-id", "set by Tern"),
        ("{\(base),\"text\":\"t\",\"headers\":{\"Reply-To\":\"x@y\"}}", "headers.Reply-To",
         "reply_to"),
        ("{\(base),\"text\":\"t\",\"headers\":{\"X-A\":\"1\\r\\nBcc: victim@x\"}}", "headers.X-A",
         "CR, LF or NUL"),
        ("{\(base),\"text\":\"t\",\"headers\":{\"X-A\":\"1\\u0000\"}}", "headers.X-A",
         "CR, LF or NUL"),
        ("{\(base),\"text\":\"t\",\"headers\":{\"X-A\":1}}", "headers.X-A", "must be a string"),
        ("{\(base),\"text\":\"t\",\"headers\":{\"X-A\":\"\(String(repeating: "v", count: 994))\"}}",
         "headers.X-A", "998"),
        ("{\(base),\"text\":\"t\",\"org\":\"Acme\"}", "org", "a-z, 0-9"),
        ("{\(base),\"text\":\"t\",\"org\":\"\"}", "org", "1 to 64"),
        ("{\(base),\"text\":\"t\",\"pool\":\"\(String(repeating: "p", count: 65))\"}", "pool",
         "1 to 64"),
        ("{\(base),\"text\":\"t\",\"pool\":\"a.b\"}", "pool", "a-z, 0-9"),
        ("{\(base),\"text\":\"t\",\"pool\":3}", "pool", "must be a string"),
        ("{\(base),\"text\":\"t\",\"metadata\":[1]}", "metadata", "must be an object"),
        ("{\(base),\"text\":\"t\",\"metadata\":{\"k\":\"a\\u0000b\"}}", "metadata.k", "NUL"),
        ("{\(base),\"text\":\"t\",\"metadata\":{\"k\":\"a\\u202eb\"}}", "metadata.k",
         "bidirectional"),
        ("{\(base),\"text\":\"t\",\"metadata\":{\"a\\u0000\":\"b\"}}", "metadata.a\u{0}",
         "the key must not"),
        ("{\(base),\"text\":\"t\",\"metadata\":{\"k\\u202e\":1}}", "metadata.k\u{202E}",
         "the key must not"),
        ("{\(base),\"text\":\"t\",\"metadata\":{\"a\":{\"b\":1}}}", "metadata.a",
         "string, number or boolean"),
        ("{\(base),\"text\":\"t\",\"metadata\":{\"a\":[1]}}", "metadata.a",
         "string, number or boolean"),
        ("{\(base),\"text\":\"t\",\"metadata\":{\"a\":\"\(String(repeating: "m", count: 4100))\"}}",
         "metadata", "limit is 4096"),
        ("{\(base),\"text\":\"t\",\"attachments\":{}}", "attachments", "array"),
        ("{\(base),\"text\":\"t\",\"attachments\":[\(Self.file()),\(Self.file()),"
         + "\(Self.file(content: "bm90IGJhc2U2NC*="))]}", "attachments[2].content",
         "not valid base64"),
        ("{\(base),\"text\":\"t\",\"attachments\":[\(Self.file(content: "abc"))]}",
         "attachments[0].content", "not valid base64"),
        ("{\(base),\"text\":\"t\",\"attachments\":[\(Self.file(name: "../etc/passwd"))]}",
         "attachments[0].filename", "without a path"),
        ("{\(base),\"text\":\"t\",\"attachments\":[\(Self.file(name: "a\\\\b"))]}",
         "attachments[0].filename", "without a path"),
        ("{\(base),\"text\":\"t\",\"attachments\":[\(Self.file(name: "a\\u0000b"))]}",
         "attachments[0].filename", "control"),
        ("{\(base),\"text\":\"t\",\"attachments\":[\(Self.file(name: "fdp\\u202e.exe"))]}",
         "attachments[0].filename", "control"),
        ("{\(base),\"text\":\"t\",\"attachments\":[\(Self.file(name: ".."))]}",
         "attachments[0].filename", "must name a file"),
        ("{\(base),\"text\":\"t\",\"attachments\":[\(Self.file(type: "pdf"))]}",
         "attachments[0].content_type", "is not a media type"),
        ("{\(base),\"text\":\"t\",\"attachments\":[\(Self.file(type: "text/plain; x"))]}",
         "attachments[0].content_type", "malformed or repeated parameter"),
        ("{\(base),\"text\":\"t\",\"attachments\":[\(Self.file(type: "multipart/mixed"))]}",
         "attachments[0].content_type", "cannot be attached"),
        ("{\(base),\"text\":\"t\",\"attachments\":[{\"filename\":\"a\",\"content\":\"\","
         + "\"size\":1}]}", "attachments[0].size", "not a known field"),
        ("{\(base),\"text\":\"t\",\"attachments\":[{\"content\":\"\"}]}",
         "attachments[0].filename", "is required"),
        ("{\(base),\"text\":\"t\",\"attachments\":[\(Self.file(cid: "a b"))]}",
         "attachments[0].content_id", "RFC 2392"),
        ("{\(base),\"text\":\"t\",\"attachments\":[\(Self.file(cid: "x@y")),"
         + "\(Self.file(cid: "<X@Y>"))]}", "attachments[1].content_id", "earlier attachment"),
        ("{\(base),\"raw\":\"From: a@example.com\\n\\nx\",\"attachments\":[]}",
         "attachments", "cannot be combined with raw"),
        ("{\(base),\"text\":\"t\",\"headers\":{\"Content-Disposition\":\"inline\"}}",
         "headers.Content-Disposition", "set by Tern"),
        ("{\(base),\"text\":\"t\",\"headers\":{\"Content-ID\":\"<a@b>\"}}",
         "headers.Content-ID", "set by Tern"),
        ("{\(base),\"text\":\"t\",\"tags\":\"a\"}", "tags", "array of strings"),
        ("{\(base),\"text\":\"t\",\"tags\":[\"a\",2]}", "tags[1]", "must be a string"),
        ("{\(base),\"text\":\"t\",\"tags\":[\"a\",\"\"]}", "tags[1]", "1 to 64"),
        ("{\(base),\"text\":\"t\",\"tags\":[\"a\",\"a\"]}", "tags[1]", "repeats"),
        ("{\(base),\"text\":\"t\",\"tags\":[\"a\\u202Eb\"]}", "tags[0]", "bidirectional"),
        ("{\(base),\"text\":\"t\",\"tags\":[\(String(repeating: "\"t\",", count: 11))\"x\"]}",
         "tags", "the limit is 10"),
        ("{\(base),\"text\":\"t\",\"send_at\":\"tomorrow\"}", "send_at", "RFC 3339"),
        ("{\(base),\"text\":\"t\",\"send_at\":\"2025-03-04 10:05\"}", "send_at", "RFC 3339"),
        ("{\(base),\"text\":\"t\",\"send_at\":\"2025-02-30T10:05:00Z\"}", "send_at",
         "RFC 3339"),
        ("{\(base),\"text\":\"t\",\"send_at\":\"2025-03-04T10:05:00\"}", "send_at",
         "RFC 3339"),
        ("{\(base),\"text\":\"t\",\"send_at\":1741082707}", "send_at", "RFC 3339"),
        ("{\(base),\"text\":\"t\",\"send_at\":\"2025-04-04T10:05:08Z\"}", "send_at",
         "more than 30 days ahead"),
        (#"{"from":"Alice <a@example.com","to":"b@example.net","text":"t"}"#, "from", "space"),
        (#"{"from":{"name":"A"},"to":"b@example.net","text":"t"}"#, "from.email",
         "is required"),
        (#"{"from":{"email":"a@example.com","nom":"A"},"to":"b@example.net","text":"t"}"#,
         "from.nom", "not a known field"),
        (#"{"from":"a@example.com","to":{"email":"b@example.net","name":"B\nBcc: x"},"#
         + #""text":"t"}"#, "to", "controls"),
        (#"{"from":"a@example.com","to":"B\r <b@example.net>","text":"t"}"#, "to", "controls"),
    ]

    @Test func engagementIsAnIntegerScore() throws {
        let base = #""from":"a@example.com","to":"b@example.net","text":"hi""#
        #expect(try decode("{\(base)}").engagement == nil)
        #expect(try decode("{\(base),\"engagement\":0}").engagement == 0)
        #expect(try decode("{\(base),\"engagement\":100}").engagement == 100)
        for bad in ["101", "-1", "1.5", "true", "\"50\"", "[]"] {
            #expect(throws: ValidationError(field: "engagement",
                                            message: "must be an integer 0 to 100")) {
                try decode("{\(base),\"engagement\":\(bad)}")
            }
        }
    }

    @Test func displayNamesAttachmentsTagsAndSendAt() throws {
        let request = try decode(#"""
            {"from":"\"Doe, Jane\" <jane@example.com>","to":{"email":"b@example.net",
             "name":" Zoë Bäcker "},"reply_to":"Help Desk <help@example.com>","text":"t",
             "attachments":[{"filename":" Übersicht.pdf ","content":"JVBER\ni0=",
                             "content_type":"Text/CSV; Charset=\"utf-8\"; name=x"},
                            {"filename":"logo.png","content":"","content_id":"<Logo@x>"}],
             "tags":["welcome","ünï/2"],"send_at":"2025-03-05T11:05:07.5+01:00"}
            """#)
        #expect(request.from.description == "jane@example.com" && request.fromName == "Doe, Jane")
        #expect(request.toName == "Zoë Bäcker" && request.to.description == "b@example.net")
        #expect(request.replyToName == "Help Desk")
        #expect(request.attachments.count == 2)
        let pdf = request.attachments[0]
        #expect(pdf.filename == "Übersicht.pdf" && pdf.content == Array("%PDF-".utf8))
        #expect(pdf.mediaType == "text/csv" && pdf.parameters.map(\.name) == ["charset"])
        #expect(pdf.parameters.first?.value == "utf-8" && pdf.contentID == nil)
        #expect(request.attachments[1].contentID == "Logo@x")
        #expect(request.attachments[1].content.isEmpty)
        #expect(request.tags == ["welcome", "ünï/2"])
        #expect(request.tagsJSON == #"["welcome","ünï/2"]"#)
        #expect(request.sendAt == Self.now.addingTimeInterval(86400 + 0.5))
    }

    @Test func sendAtInThePastMeansNow() throws {
        let request = try decode(
            "{\(Self.base),\"text\":\"t\",\"send_at\":\"2020-01-01T00:00:00Z\"}")
        #expect(request.sendAt == nil)
        let edge = try decode("{\(Self.base),\"text\":\"t\",\"send_at\":\"2025-04-03T10:05:07Z\"}")
        #expect(edge.sendAt == Self.now.addingTimeInterval(30 * 86400))
    }

    @Test(arguments: [
        ("2025-03-04T10:05:07Z", 1_741_082_707.0), ("2025-03-04t10:05:07.250z", 1_741_082_707.25),
        ("2025-03-04T12:05:07+02:00", 1_741_082_707), ("2025-03-04T05:05:07-05:00", 1_741_082_707),
        ("2024-02-29T00:00:00Z", 1_709_164_800),
    ])
    func rfc3339(_ text: String, _ seconds: Double) {
        #expect(RFC3339.parse(text) == Date(timeIntervalSince1970: seconds))
    }

    @Test(arguments: ["2025-13-01T00:00:00Z", "2023-02-29T00:00:00Z", "2025-03-04T24:00:00Z",
                      "2025-03-04T10:05:07.Z", "2025-03-04T10:05:07+0200", "2025-03-04T10:05Z",
                      "2025-03-04T10:05:07Z ", ""])
    func rfc3339Refuses(_ text: String) {
        #expect(RFC3339.parse(text) == nil)
    }

    @Test(arguments: failures) func namesTheField(_ json: String, _ field: String,
                                                  _ fragment: String)
    {
        do {
            let request = try decode(json)
            Issue.record("accepted: \(request)")
        } catch {
            #expect(error.field == field)
            #expect(error.message.contains(fragment), "\(error.message)")
            #expect(error.description == field + ": " + error.message)
        }
    }

    @Test(arguments: ["alice@localhost.example", "alice@mylocalhost", "bob@localhost-x.net"])
    func namesThatOnlyResembleLocalhostAreAccepted(_ recipient: String) throws {
        let request = try decode(#"{"from":"a@example.com","to":"\#(recipient)","text":"t"}"#)
        #expect(request.to.description == recipient)
    }

    @Test(arguments: ["Bcc", "bcc", "Delivered-To", "Resent-From", "Resent-Message-ID",
                      "RESENT-TO", "Content-Length", "Authentication-Results", "ARC-Seal",
                      "Received-SPF", "X-Original-To"])
    func refusesEnvelopeAndTraceHeaders(_ name: String) {
        #expect(throws: ValidationError(
            field: "headers." + name,
            message: "is an envelope or trace field and cannot be supplied; the recipient "
                + "is the to field")) {
            _ = try decode("{\(Self.base),\"text\":\"t\",\"headers\":{\"\(name)\":\"x@y\"}}")
        }
    }

    /// A raw message is held to the same list: its Bcc would be sent to every reader as
    /// given, and its trace and Resent-* fields would be forged.
    @Test(arguments: ["Bcc", "bcc", "Delivered-To", "Resent-From", "RESENT-TO",
                      "Content-Length", "Authentication-Results", "ARC-Seal", "X-Original-To"])
    func refusesEnvelopeAndTraceFieldsInRaw(_ name: String) throws {
        let raw = "From: a@example.com\r\n\(name): x@y.example\r\n\r\nx"
        let json = try JSONSerialization.data(withJSONObject: [
            "from": "a@example.com", "to": "b@example.net", "raw": raw])
        do {
            let request = try SendRequest.decode(json)
            Issue.record("accepted: \(request)")
        } catch {
            #expect(error.field == "raw")
            #expect(error.message.hasPrefix("has a \(name) field, an envelope or trace field "
                                            + "that is not sent"), "\(error.message)")
            #expect(error.message.contains("hidden recipients") == (name.lowercased() == "bcc"))
        }
    }

    @Test(arguments: [("From: a@example.com\r\nFrom: b@example.com\r\n", "2 From"),
                      ("From: a@example.com\r\nfrom : b@example.com\r\n", "2 From"),
                      ("From: a@example.com\r\nSender: a@example.com\r\nSENDER: b@x.example"
                       + "\r\n", "2 Sender")])
    func refusesARawMessageWithTwoAuthors(_ header: String, _ fragment: String) throws {
        let json = try JSONSerialization.data(withJSONObject: [
            "from": "a@example.com", "to": "b@example.net", "raw": header + "\r\nx"])
        #expect(throws: ValidationError(field: "raw", message: "has \(fragment) fields; "
                                        + "RFC 5322 §3.6 allows one")) {
            _ = try SendRequest.decode(json)
        }
    }

    /// C1 controls and bidirectional overrides and isolates in display names and custom
    /// field values (U+0085 is a line end to some readers; U+202E reverses what follows).
    @Test(arguments: ["\u{85}", "\u{9F}", "\u{80}", "\u{202A}", "\u{202E}", "\u{2066}",
                      "\u{2069}", "\u{200F}"])
    func refusesC1AndBidiControlsInNamesAndFieldValues(_ control: String) throws {
        let name = "Bank\(control) Support"
        let cases: [([String: Any], String)] = [
            (["from": ["email": "a@example.com", "name": name]], "from"),
            (["from": "\(name) <a@example.com>"], "from"),
            (["to": "\(name) <b@example.net>"], "to"),
            (["reply_to": ["email": "r@example.com", "name": name]], "reply_to"),
            (["headers": ["X-Campaign": name]], "headers.X-Campaign"),
        ]
        for (change, field) in cases {
            var object: [String: Any] = ["from": "a@example.com", "to": "b@example.net",
                                         "text": "t"]
            object.merge(change) { $1 }
            #expect(throws: ValidationError.self) { _ = try SendRequest(json: object) }
            do {
                _ = try SendRequest(json: object)
            } catch {
                #expect(error.field == field)
                #expect(error.message.contains("controls"), "\(error.message)")
            }
        }
        // C1 is refused in a subject too; a bidirectional mark is not (right-to-left text).
        let subject: [String: Any] = ["from": "a@example.com", "to": "b@example.net",
                                      "text": "t", "subject": "x\(control)y"]
        if control.unicodeScalars.first!.value < 0xA0 {
            #expect(throws: ValidationError(field: "subject",
                                            message: "must not contain controls")) {
                _ = try SendRequest(json: subject)
            }
        } else {
            #expect(try SendRequest(json: subject).subject == "x\(control)y")
        }
    }

    @Test func mailboxListsAreReadStrictly() {
        let cases: [(String, [String]?)] = [
            (" news@acme.example", ["news@acme.example"]),
            (" \"News, Team\" <news@acme.example> (list)", ["news@acme.example"]),
            (" \"a <x@evil.example>\" <news@acme.example>", ["news@acme.example"]),
            (" News\r\n <news@acme.example>", ["news@acme.example"]),
            (" Zoë Ü. <zoe@acme.example>", ["zoe@acme.example"]),
            (" a@x.example, B <b@y.example>", ["a@x.example", "b@y.example"]),
            (" news@evil.example from: news@acme.example", nil),
            (" <news@acme.example", nil),
            (" news@acme.example>", nil),
            (" undisclosed-recipients:;", nil),
            (" a@x.example,", nil),
            (" ", nil),
            (" News <news@acme.example> <b@x.example>", nil),
            (" (a) news@acme.example (unclosed", nil),
            (" \"open <news@acme.example>", nil),
            (" a@x.example\r\nb@y.example", nil),
        ]
        for (value, expected) in cases {
            #expect(MailboxList.parse(value)?.map(\.description) == expected, "\(value)")
        }
    }

    @Test(arguments: ["Return-Path", "Received", "DKIM-Signature"])
    func refusesTraceHeadersTernWrites(_ name: String) {
        #expect(throws: ValidationError(field: "headers." + name,
                                        message: "is set by Tern and cannot be supplied")) {
            _ = try decode("{\(Self.base),\"text\":\"t\",\"headers\":{\"\(name)\":\"x@y\"}}")
        }
    }

    @Test func headersAtTheLimitAreAccepted() throws {
        let value = String(repeating: "v", count: 998 - "X-A: ".utf8.count)
        let request = try decode("{\(Self.base),\"text\":\"t\",\"headers\":{\"X-A\":\"\(value)\"}}")
        #expect(request.headers.first?.value == value)
        let metadataValue = String(repeating: "m", count: 4096 - #"{"a":""}"#.utf8.count)
        let withMetadata = try decode(
            "{\(Self.base),\"text\":\"t\",\"metadata\":{\"a\":\"\(metadataValue)\"}}")
        #expect(withMetadata.metadataJSON.utf8.count == 4096)
    }
}
