// Request ids against the running API: every answer carries X-Request-Id, a sane one from
// the client is kept and any other replaced, and every line logged for a request names it.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernAPI

extension APIDaemonTests {
    static func isGeneratedID(_ id: String?) -> Bool {
        guard let id else { return false }
        return id.count == 32 && id.allSatisfy { $0.isHexDigit && !$0.isUppercase }
    }

    @Test func everyAnswerCarriesARequestIdThatItsLogLinesName() async throws {
        let h = try await Harness()
        let sent = try await h.post(Self.valid(), headers: [("X-Request-Id", "client-req:42")])
        #expect(sent.status == 202)
        #expect(sent.headers["X-Request-Id"] == "client-req:42")
        let id = try #require(sent.json["id"] as? String)
        let lines = h.logs.records.filter { $0.fields["message_id"] == id }
        #expect(lines.contains { $0.message == "accepted" })
        #expect(lines.allSatisfy { $0.fields["request_id"] == "client-req:42" })

        // A refusal, an unknown route, a wrong key: each has an id; an insane one is replaced.
        let refused = try await h.post(Self.valid(["to": "x@localhost"]),
                                       headers: [("X-Request-Id", "has space")])
        #expect(Self.isGeneratedID(refused.headers["X-Request-Id"]))
        let long = try await h.post(Self.valid(["to": "x@localhost"]),
                                    headers: [("X-Request-Id", String(repeating: "a", count: 129))])
        #expect(Self.isGeneratedID(long.headers["X-Request-Id"]))
        #expect(Self.isGeneratedID(try await h.get("/nowhere").headers["X-Request-Id"]))
        let wrong = try await h.get("/v1/throttles", key: "nope")
        #expect(Self.isGeneratedID(wrong.headers["X-Request-Id"]))
        let notice = h.logs.records.first { $0.message.contains("unknown API key") }
        #expect(notice?.fields["request_id"] == wrong.headers["X-Request-Id"])
        #expect(refused.headers["X-Request-Id"] != long.headers["X-Request-Id"])

        // The HTTP server's own refusals (here a body over TERN_API_MAX_BODY) carry one too.
        let big = try await h.post(Self.json(Self.valid(["text": String(repeating: "x",
                                                                          count: 30000)])))
        #expect(big.status == 413)
        #expect(big.headers["Content-Type"] == "application/problem+json")
        #expect(Self.isGeneratedID(big.headers["X-Request-Id"]))
        await h.stop()
    }
}
