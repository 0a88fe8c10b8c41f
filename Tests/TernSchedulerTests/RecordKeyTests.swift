// A record's recipient keys for suppression lists: the API's `rcpt_key` when the record has
// one, the address parsed again when it does not (records written before the field), the
// same members either way.

import Testing
import TernMail
@testable import TernScheduler

@Suite struct RecordKeyTests {
    func record(to: String, key: String) -> SchedulerDaemon.Record {
        SchedulerDaemon.Record(id: "m", org: "acme", pool: "default", domain: "x", from: "f",
                               to: to, metadata: "{}", tags: "[]", expiresMs: 0, createdMs: 0,
                               sendAtMs: 0, state: .queued, recipientKey: key)
    }

    @Test(arguments: ["plain@inbox.example", "Mixed.Case@INBOX.Example",
                      "rÉc@bücher.example", "not an address"])
    func theStoredKeyGivesWhatParsingGives(_ to: String) {
        let parsed = record(to: to, key: "")
        let stored = record(to: to, key: EmailAddress.listKey(of: to))
        #expect(stored.suppressionMembers == parsed.suppressionMembers)
        #expect(stored.suppressionMembers == EmailAddress.suppressionMembers(of: to))
        #expect(stored.listKey == parsed.listKey && parsed.listKey == EmailAddress.listKey(of: to))
    }

    @Test func theStoredKeyIsTrustedAsTheAPIWroteIt() {
        let r = record(to: "Bob@Inbox.example", key: "bob@inbox.example")
        #expect(r.suppressionMembers == ["bob@inbox.example"])
        let idn = record(to: "a@Bücher.example", key: "a@xn--bcher-kva.example")
        #expect(idn.suppressionMembers == ["a@xn--bcher-kva.example", "a@bücher.example"])
        #expect(idn.listKey == "a@xn--bcher-kva.example")
    }
}
