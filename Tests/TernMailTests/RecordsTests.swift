import Foundation
import Testing
import TernMail

@Suite struct RecordsTests {
    @Test(arguments: [(Int64(0), "1970-01-01T00:00:00.000Z"),
                      (1_764_856_800_662, "2025-12-04T14:00:00.662Z"),
                      (1_764_856_800_001, "2025-12-04T14:00:00.001Z"),
                      (1_764_856_800_999, "2025-12-04T14:00:00.999Z")])
    func timestampsKeepEveryMillisecond(ms: Int64, text: String) {
        #expect(timestamp(ms: ms) == text)
    }

    @Test(arguments: [(Int64(-1), "1969-12-31T23:59:59.999Z"),
                      (951_782_400_000, "2000-02-29T00:00:00.000Z"),
                      (4_107_542_399_999, "2100-02-28T23:59:59.999Z"),
                      (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
                      (253_402_300_799_999, "9999-12-31T23:59:59.999Z")])
    func timestampsFollowTheGregorianCalendar(ms: Int64, text: String) {
        #expect(timestamp(ms: ms) == text)
    }

    /// The digit-by-digit writer against Foundation's formatter, a day and a bit apart
    /// from 1900 to 2400 (leap days and century years included), and a random sample.
    @Test func timestampsMatchFoundationsFormatter() {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        var generator = SystemRandomNumberGenerator()
        let first: Int64 = -2_208_988_800_000, last: Int64 = 13_569_465_600_000
        let stepped = Array(stride(from: first, to: last, by: 86_400_000 + 3_601_001))
        let random: [Int64] = (0..<2000).map { _ in
            Int64.random(in: first...last, using: &generator)
        }
        var mismatches: [String] = []
        for ms in stepped + random {
            // Whole seconds through the formatter, the milliseconds by hand (a Double
            // would sometimes round them).
            let seconds: Int64 = ms >= 0 ? ms / 1000 : (ms - 999) / 1000
            let whole = formatter.string(from: Date(timeIntervalSince1970: Double(seconds)))
            let millis = String(String(ms - seconds * 1000 + 1000).dropFirst())
            let expected = String(whole.prefix(20)) + millis + "Z"
            if timestamp(ms: ms) != expected { mismatches.append("\(ms)") }
        }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(5))")
    }

    @Test func eventJSONCarriesMetadataTagsAndDetail() throws {
        let e = MessageEvent(id: "m", event: .bounced, atMs: 0, org: "o", from: "f@x.example",
                             to: "t@y.example", metadataJSON: #"{"uid":42}"#,
                             tagsJSON: #"["spring","ünï"]"#,
                             detail: ["code": 550, "reply": "5.1.1 no"])
        #expect(e.json == #"{"at":"1970-01-01T00:00:00.000Z","code":550,"event":"bounced","#
                + #""from":"f@x.example","id":"m","metadata":{"uid":42},"org":"o","#
                + #""reply":"5.1.1 no","tags":["spring","ünï"],"to":"t@y.example"}"#)
        let untagged = MessageEvent(id: "m", event: .accepted, atMs: 0, org: "o", from: "f",
                                    to: "t", metadataJSON: "{}")
        #expect(untagged.json.contains(#""tags":[]"#))
        #expect(e.historyJSON == #"{"at":"1970-01-01T00:00:00.000Z","code":550,"#
                + #""event":"bounced","reply":"5.1.1 no"}"#)
        // A detail key the event has too replaces it, in both texts, once; metadata with
        // blanks around it is trimmed, anything else is the empty object.
        let replaced = MessageEvent(id: "m", event: .expired, atMs: 0, org: "o", from: "f",
                                    to: "t", metadataJSON: " {\"a\":1}\t", tagsJSON: "oops",
                                    detail: ["at": "later", "zz": true, "org": "p"])
        #expect(replaced.documents.json == #"{"at":"later","event":"expired","from":"f","#
                + #""id":"m","metadata":{"a":1},"org":"p","tags":[],"to":"t","zz":true}"#)
        #expect(replaced.documents.history == #"{"at":"later","event":"expired","org":"p","#
                + #""zz":true}"#)
    }

    @Test func attemptRecordsCarryTLSDetailsOnlyWhenTLSWasUsed() throws {
        var fields = ["outcome": "delivered", "attempt": "1", "code": "250", "ms": "12",
                      "tls": "TLSv1.3 TLS_AES_128_GCM_SHA256", "tls_version": "TLSv1.3",
                      "tls_cipher": "TLS_AES_128_GCM_SHA256", "tls_verified": "no"]
        let secure = try #require(AttemptRecord(result: fields, at: "t"))
        #expect(secure.tlsVersion == "TLSv1.3" && secure.tlsVerified == false)
        let json = try JSONSerialization.jsonObject(
            with: JSONEncoder().encode(secure)) as? [String: Any]
        #expect(json?["tls_version"] as? String == "TLSv1.3")
        #expect(json?["tls_cipher"] as? String == "TLS_AES_128_GCM_SHA256")
        #expect(json?["tls_verified"] as? Bool == false)

        for key in ["tls_version", "tls_cipher", "tls_verified"] { fields[key] = "" }
        fields["tls"] = ""
        let clear = try #require(AttemptRecord(result: fields, at: "t"))
        let plain = try JSONSerialization.jsonObject(
            with: JSONEncoder().encode(clear)) as? [String: Any]
        #expect(plain?["tls"] as? String == "")
        #expect(plain?["tls_version"] == nil && plain?["tls_verified"] == nil)
        // The stored text: what JSONEncoder writes with sorted keys, read back the same.
        fields["reply"] = "250 2.0.0 \"ok\"\nqueued / done"
        fields["data_ms"] = "7"
        fields["reused"] = "yes"
        let timed = try #require(AttemptRecord(result: fields, at: "t"))
        #expect(timed.timings?.dataMs == 7)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        for record in [secure, clear, timed] {
            #expect(record.json == String(decoding: try encoder.encode(record), as: UTF8.self))
            #expect(try JSONDecoder().decode(AttemptRecord.self, from: Data(record.json.utf8))
                    == record)
        }
        // Records written before these fields existed still decode.
        let old = #"{"at":"t","attempt":1,"outcome":"deferred","code":451,"enhanced":"","#
            + #""reply":"","stage":"rcpt","mx":"","addr":"","ip":"","tls":"","ms":3}"#
        #expect(try JSONDecoder().decode(AttemptRecord.self, from: Data(old.utf8)).code == 451)
    }

    @Test func sortedJSONEscapesWhatRFC8259AsksAndSortsKeys() {
        let text = SortedJSON.encode([
            "z": "a\"b\\c\n\u{01}/é", "a": 1, "m": [true, 2.5] as [any Sendable],
            "n": ["y": Int64(7), "b": RawJSON(#"{"k":"v"}"#)] as [String: any Sendable],
        ])
        #expect(text == #"{"a":1,"m":[true,2.5],"n":{"b":{"k":"v"},"y":7},"#
                + #""z":"a\"b\\c\n\u0001/é"}"#)
    }
}
