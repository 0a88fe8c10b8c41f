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
