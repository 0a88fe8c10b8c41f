// Request bodies that are not RFC 8259 JSON in UTF-8, against the running API and a real
// Redis: every endpoint that reads a JSON body answers 400 naming the body, and nothing at
// all reaches Redis. Text that is JSON but breaks a field's rule is refused naming that field.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernAPI

@Suite(.serialized) struct APIHostileBodyTests {
    typealias Harness = APIDaemonTests.Harness

    static let head = #"{"from":"sender@tern.example","to":"a@inbox.example","text":"#

    /// Bodies that are not JSON, each beside a send object's fields so that only the fault
    /// makes them refused.
    static let notJSON: [(String, [UInt8])] = {
        func send(_ tail: String) -> [UInt8] { Array((head + tail).utf8) }
        func bytes(_ before: String, _ octets: [UInt8], _ after: String) -> [UInt8] {
            Array((head + before).utf8) + octets + Array(after.utf8)
        }
        let deep = String(repeating: "[", count: 600) + String(repeating: "]", count: 600)
        return [
            ("trailing comma in the object", send(#""hi",}"#)),
            ("trailing comma in an array", send(#""hi","tags":["a",]}"#)),
            ("lone high surrogate", send(#""a\ud800b"}"#)),
            ("lone low surrogate", send(#""a\udc00"}"#)),
            ("reversed surrogates", send(#""\udc00\ud800"}"#)),
            ("raw control octet", bytes("\"a", [0x01], "b\"}")),
            ("raw line feed", bytes("\"a", [0x0A], "b\"}")),
            ("raw tab", bytes("\"a", [0x09], "b\"}")),
            ("raw NUL", bytes("\"a", [0x00], "b\"}")),
            ("bad continuation", bytes("\"a", [0xC3, 0x28], "\"}")),
            ("UTF-8 of a surrogate", bytes("\"", [0xED, 0xA0, 0x80], "\"}")),
            ("overlong slash", bytes("\"", [0xC0, 0xAF], "\"}")),
            ("beyond U+10FFFF", bytes("\"", [0xF4, 0x90, 0x80, 0x80], "\"}")),
            ("cut short character", bytes("\"abcdefgh", [0xE6, 0x97], "\"}")),
            ("lone continuation", bytes("\"", [0x80], "\"}")),
            ("0xFF", bytes("\"", [0xFF], "\"}")),
            ("bad escape", send(#""a\x41"}"#)),
            ("short unicode escape", send(#""\u12"}"#)),
            ("backslash at the end", send(#""abc\"#)),
            ("unterminated string", send(#""hi}"#)),
            ("single quotes", send("'hi'}")),
            ("comment", send(#""hi" /* c */}"#)),
            ("two documents", send(#""hi"}{"a":1}"#)),
            ("text after the document", send(#""hi"} x"#)),
            ("NUL after the document", bytes(#""hi"}"#, [0x00], "")),
            ("NaN", send(#""hi","engagement":NaN}"#)),
            ("Infinity", send(#""hi","engagement":-Infinity}"#)),
            ("number out of range", send(#""hi","metadata":{"n":1e400}}"#)),
            ("leading zero", send(#""hi","engagement":01}"#)),
            ("plus sign", send(#""hi","engagement":+1}"#)),
            ("hex number", send(#""hi","engagement":0x10}"#)),
            ("bare dot", send(#""hi","engagement":.5}"#)),
            ("True", send(#""hi","metadata":{"b":True}}"#)),
            ("nested too deep", send(#""hi","metadata":{"d":"# + deep + "}}")),
            ("two byte order marks", [0xEF, 0xBB, 0xBF, 0xEF, 0xBB, 0xBF] + send(#""hi"}"#)),
            ("UTF-16 with its mark", [0xFF, 0xFE] + Array(#"{"a":1}"#.utf8).flatMap { [$0, 0] }),
            ("form feed as space", [0x0C] + send(#""hi"}"#)),
            ("non-breaking space as space", [0xC2, 0xA0] + send(#""hi"}"#)),
            ("only spaces", Array("  \r\n\t ".utf8)),
            ("a name twice", send(#""hi","to":"b@inbox.example"}"#)),
            ("a name twice, once escaped", send(#""hi","t\u006f":"b@inbox.example"}"#)),
            ("a name twice in metadata", send(#""hi","metadata":{"k":"1","k":"2"}}"#)),
        ]
    }()

    @Test func bodiesThatAreNotJSONAre400AndWriteNothing() async throws {
        let h = try await Harness()
        let auth = [("Authorization", "Bearer \(APIDaemonTests.key)"),
                    ("Content-Type", "application/json")]
        let paths = [("POST", "/v1/send"), ("POST", "/v1/send/batch"),
                     ("PUT", "/v1/pauses/org/acme"), ("PUT", "/v1/engagement/acme")]
        for (name, body) in Self.notJSON {
            // Each body as it is, and as a batch's one message (white space alone is an
            // empty batch there, which is JSON).
            let batch = Array(#"{"messages":["#.utf8) + body + Array("]}".utf8)
            let sends = paths.map { ($0.0, $0.1, body) }
                + (name == "only spaces" ? [] : [("POST", "/v1/send/batch", batch)])
            for (method, path, sent) in sends {
                let reply = try await httpRequest(h.address, method, path, headers: auth,
                                                  body: sent)
                #expect(reply.status == 400, "\(name), \(path): \(reply.status) \(reply.text)")
                #expect(reply.errorField == "body", "\(name), \(path): \(reply.text)")
            }
        }
        #expect(try await h.storedKeys() == [])
        await h.stop()
    }

    /// What the refusal says when the text is JSON this reader will not take.
    @Test func theRefusalSaysWhatIsWrongWithTheText() async throws {
        let h = try await Harness()
        let cases: [(String, String)] = [
            (#""hi","to":"b@inbox.example"}"#, #"has the name "to" twice in one object"#),
            (#""hi","metadata":{"n":"# + String(repeating: "7", count: 5000) + "}}",
             "holds a number too large to read"),
            (#""hi","metadata":{"d":"# + String(repeating: "[", count: 600)
                + String(repeating: "]", count: 600) + "}}", "is nested deeper than 512"),
            (#""hi"#, "is not valid JSON"),
        ]
        for (tail, detail) in cases {
            let reply = try await h.post(Array((Self.head + tail).utf8))
            #expect(reply.status == 400 && reply.errorField == "body", "\(reply.text)")
            #expect(reply.error["detail"] as? String == detail, "\(reply.text)")
        }
        #expect(try await h.storedKeys() == [])
        await h.stop()
    }

    /// JSON that breaks a field's rule: refused naming the field, nothing written.
    @Test func jsonThatBreaksAFieldNamesTheField() async throws {
        let h = try await Harness()
        let cases: [(String, String, Int, String)] = [
            ("NUL escaped in the text", #""a\u0000b"}"#, 422, "text"),
            ("boolean engagement", #""hi","engagement":true}"#, 422, "engagement"),
            ("fractional engagement", #""hi","engagement":1.5}"#, 422, "engagement"),
            ("huge engagement", #""hi","engagement":1e300}"#, 422, "engagement"),
            ("metadata array", #""hi","metadata":[1]}"#, 422, "metadata"),
            ("metadata nested object", #""hi","metadata":{"a":{"b":1}}}"#, 422, "metadata.a"),
            ("metadata key with U+202E", #""hi","metadata":{"a\u202Eb":1}}"#, 422,
             "metadata.a\u{202E}b"),
            ("tag number", #""hi","tags":[1]}"#, 422, "tags[0]"),
            ("text number", #"1}"#, 422, "text"),
            ("send_at number", #""hi","send_at":1e10}"#, 422, "send_at"),
            // As deep as the reader goes (the document and metadata are two levels).
            ("metadata 512 deep", #""hi","metadata":{"d":"# + String(repeating: "[", count: 510)
                + String(repeating: "]", count: 510) + "}}", 422, "metadata.d"),
        ]
        for (name, tail, status, field) in cases {
            let reply = try await h.post(Array((Self.head + tail).utf8))
            #expect(reply.status == status, "\(name): \(reply.text)")
            #expect(reply.errorField == field, "\(name): \(reply.text)")
        }
        #expect(try await h.storedKeys() == [])
        await h.stop()
    }

    /// A UTF-8 byte order mark before the text is skipped (RFC 8259 §8.1); U+FEFF inside a
    /// string is text and kept, even when it is all the string holds.
    @Test func aByteOrderMarkBeforeTheTextIsSkipped() async throws {
        let h = try await Harness()
        let body = [0xEF, 0xBB, 0xBF] + Array((Self.head + "\"hi\",\"metadata\":{\"m\":\""
            + "\u{FEFF}\"}}").utf8)
        let reply = try await h.post(body)
        #expect(reply.status == 202, "\(reply.text)")
        let id = try #require(reply.json["id"] as? String)
        let record = try await h.redis.run("HGETALL", h.keys.message(id)).fieldMap
        #expect(record["metadata"] == "{\"m\":\"\u{FEFF}\"}")
        await h.stop()
    }
}
