// The webhooks' pure parts: the signature, the back-off arithmetic, the settings, the body
// built from an `events` entry; and the HTTP client against a real server on loopback.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernAPI

@Suite struct WebhookSignatureTests {
    let secret = Array("whsec-0123456789abcdef".utf8)
    let body = Array(#"{"id":"1-0"}"#.utf8)

    @Test func signsTimestampDotBodyWithHMACSHA256() {
        // The expected MAC is Python's hmac module's, not ours.
        #expect(WebhookSignature.sign(body: body, secret: secret, unixSeconds: 1_764_870_000)
                == "t=1764870000,v1=adb29111791d643804b4b3464e31c5a3"
                + "d67087422aa09f4213571285e1529c20")
    }

    @Test(arguments: [
        (0, true), (300, true), (-300, true), (301, false), (-301, false),
    ] as [(Int64, Bool)])
    func acceptsOnlyTimestampsWithinTheTolerance(skew: Int64, accepted: Bool) {
        let field = WebhookSignature.sign(body: body, secret: secret, unixSeconds: 1_000_000)
        #expect(WebhookSignature.verify(field, body: body, secret: secret,
                                        nowSeconds: 1_000_000 + skew) == accepted)
    }

    @Test func refusesAnotherSecretAChangedBodyAndMalformedFields() {
        let now: Int64 = 1_764_870_000
        let field = WebhookSignature.sign(body: body, secret: secret, unixSeconds: now)
        let other = Array("other-secret-000000".utf8)
        #expect(!WebhookSignature.verify(field, body: body, secret: other, nowSeconds: now))
        #expect(!WebhookSignature.verify(field, body: body + [0x20], secret: secret,
                                         nowSeconds: now))
        for bad in ["", "t=abc,v1=00", "v1=" + String(field.split(separator: "=").last!),
                    "t=\(now)", "t=\(now),v1=zz"] {
            #expect(!WebhookSignature.verify(bad, body: body, secret: secret, nowSeconds: now))
        }
        // A receiver accepts any of several v1 values (a sender may sign with two secrets).
        #expect(WebhookSignature.verify(field + ",v1=00ff", body: body, secret: secret,
                                        nowSeconds: now))
        let rotating = WebhookSignature.sign(body: body, secrets: [other, secret],
                                             unixSeconds: now)
        #expect(rotating.hasPrefix("t=\(now),v1=") && rotating.hasSuffix(field.dropFirst(13)))
        #expect(WebhookSignature.verify(rotating, body: body, secret: secret, nowSeconds: now))
        #expect(WebhookSignature.verify(rotating, body: body, secret: other, nowSeconds: now))
    }
}

@Suite struct WebhookBackoffTests {
    let backoff = WebhookBackoff(first: .seconds(10), max: .seconds(3600),
                                 retryFor: .seconds(86400))

    @Test(arguments: [
        (1, 10_000), (2, 20_000), (3, 40_000), (6, 320_000), (9, 2_560_000), (10, 3_600_000),
        (11, 3_600_000), (64, 3_600_000), (1_000, 3_600_000), (0, 10_000),
    ] as [(Int, Int64)])
    func doublesFromTheFirstDelayUpToTheMaximum(failures: Int, ms: Int64) {
        #expect(backoff.delayMs(failures: failures, jitter: 0) == ms)
        // Jitter only ever shortens, by at most a fifth.
        let shortest = backoff.delayMs(failures: failures, jitter: 0.999_999)
        #expect(shortest <= ms && shortest >= ms - ms / 5)
    }

    @Test func retriesUntilTheDeadlineThenGivesUp() {
        let first: Int64 = 1_000_000
        #expect(backoff.next(failures: 1, firstFailureMs: first, nowMs: first, jitter: 0)
                == .retry(atMs: first + 10_000))
        // Close to the deadline the retry is at the deadline itself: one last try.
        let late = first + 86_400_000 - 1_000
        #expect(backoff.next(failures: 30, firstFailureMs: first, nowMs: late, jitter: 0)
                == .retry(atMs: first + 86_400_000))
        #expect(backoff.next(failures: 31, firstFailureMs: first, nowMs: first + 86_400_000,
                             jitter: 0) == .giveUp)
    }

    @Test func anEndpointDownForAnHourIsRetriedAllThroughIt() {
        // Attempts at the back-off's own pace over an hour: none is given up.
        var now: Int64 = 0
        var failures = 0
        while now < 3_600_000 {
            failures += 1
            guard case .retry(let at) = backoff.next(failures: failures, firstFailureMs: 0,
                                                      nowMs: now, jitter: 0.5) else {
                Issue.record("given up after \(now) ms")
                return
            }
            #expect(at > now)
            now = at
        }
        #expect(failures < 20)
    }
}

@Suite struct WebhookSettingsTests {
    func settings(_ webhooks: String, _ more: [String: String] = [:]) throws -> WebhookSettings {
        try WebhookSettings(Environment(["TERN_WEBHOOKS": webhooks].merging(more) { $1 }))
    }

    @Test func readsEndpointsFromJSONOrAFile() throws {
        let json = #"""
            [{"name": "crm", "url": "http://127.0.0.1:9000/hook?x=1", "secret": "0123456789abcdef",
              "events": ["delivered", "bounced"]},
             {"name": "all", "url": "https://hooks.example.com/t", "connect": "192.0.2.1",
              "secret": "0123456789abcdef", "orgs": ["acme"], "old_secrets": ["fedcba9876543210"]}]
            """#
        let s = try settings(json, ["TERN_WEBHOOK_RETRY_FOR": "1h"])
        #expect(s.endpoints.map(\.name) == ["crm", "all"])
        #expect(s.endpoints[0].target.description == "http://127.0.0.1:9000/hook?x=1")
        #expect(s.endpoints[0].wants(type: "delivered", org: nil))
        #expect(!s.endpoints[0].wants(type: "accepted", org: "acme"))
        #expect(s.endpoints[1].target.secure && s.endpoints[1].target.host == "hooks.example.com")
        #expect(s.endpoints[1].target.address?.description == "192.0.2.1:443")
        #expect(!s.needsResolver)
        #expect(s.endpoints[0].secrets.count == 1)
        #expect(s.endpoints[1].secrets == [Array("0123456789abcdef".utf8),
                                           Array("fedcba9876543210".utf8)])
        #expect(s.endpoints[1].wants(type: "accepted", org: "acme"))
        #expect(!s.endpoints[1].wants(type: "accepted", org: "globex"))
        #expect(!s.endpoints[1].wants(type: "ip_listed", org: nil))
        #expect(s.backoff.retryFor == .seconds(3600) && s.timeout == .seconds(10))

        let file = FileManager.default.temporaryDirectory
            .appendingPathComponent("webhooks-\(UUID().uuidString).json")
        try Data(json.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        #expect(try settings(file.path).endpoints.count == 2)
        #expect(try WebhookSettings(Environment([:])).endpoints.isEmpty)
    }

    static let ok = #""url": "http://127.0.0.1/", "secret": "0123456789abcdef""#

    @Test(arguments: [
        #"{"name": "x"}"#,
        #"[{"url": "http://127.0.0.1/", "secret": "0123456789abcdef"}]"#,
        #"[{"name": "Bad Name", "url": "http://127.0.0.1/", "secret": "0123456789abcdef"}]"#,
        #"[{"name": "a", "url": "http://hooks..example/", "secret": "0123456789abcdef"}]"#,
        #"[{"name": "a", "url": "http://h.example/", "connect": "h2", "#
            + #""secret": "0123456789abcdef"}]"#,
        #"[{"name": "a", "url": "ftp://127.0.0.1/", "secret": "0123456789abcdef"}]"#,
        #"[{"name": "a", "url": "http://127.0.0.1/", "secret": "short"}]"#,
        #"[{"name": "a", "events": ["sent"], "# + WebhookSettingsTests.ok + "}]",
        #"[{"name": "a", "events": [], "# + WebhookSettingsTests.ok + "}]",
        #"[{"name": "a", "retries": 3, "# + WebhookSettingsTests.ok + "}]",
        #"[{"name": "a", "# + WebhookSettingsTests.ok + #"}, "#
            + #"{"name": "a", "# + WebhookSettingsTests.ok + "}]",
        "/no/such/file.json",
    ])
    func refusesWhatCannotBeUsed(_ text: String) {
        #expect(throws: ConfigError.self) { try settings(text) }
    }

    @Test func refusesABackoffAboveItsMaximum() {
        let one = #"[{"name": "a", "url": "http://127.0.0.1/", "secret": "0123456789abcdef"}]"#
        #expect(throws: ConfigError.self) {
            try settings(one, ["TERN_WEBHOOK_BACKOFF": "2h", "TERN_WEBHOOK_BACKOFF_MAX": "1h"])
        }
    }
}

@Suite struct WebhookEventTests {
    @Test func aMessageEventIsPostedInAnEnvelopeKeyedByItsMessage() throws {
        let doc = #"{"at":"2026-12-04T18:00:00.000Z","event":"delivered","id":"m1","#
            + #""metadata":{"uid":"42"},"org":"acme","reply":"250 ok","to":"a@inbox.example"}"#
        let event = try #require(WebhookEvent(entry: StreamEntry(
            id: "1764871200000-3", fields: ["id": "m1", "event": "delivered", "json": doc])))
        #expect(event.orderKey == "msg:m1" && event.org == "acme" && event.type == "delivered")
        #expect(event.body == #"{"data":"# + doc + #","id":"1764871200000-3","message_id":"m1","#
                + #""org":"acme","recipient":"a@inbox.example","#
                + #""timestamp":"2026-12-04T18:00:00.000Z","type":"delivered"}"#)
    }

    @Test func eventsAboutNoMessageAreOrderedByTheirIPOrOrganisation() throws {
        let listed = try #require(WebhookEvent(entry: StreamEntry(id: "5-0", fields: [
            "event": "ip_listed", "ip": "192.0.2.10", "pool": "default",
            "json": #"{"event":"ip_listed","ip":"192.0.2.10"}"#])))
        #expect(listed.orderKey == "ip:192.0.2.10" && listed.org == nil)
        #expect(listed.body.contains(#""timestamp":"1970-01-01T00:00:00.005Z""#))
        let paused = try #require(WebhookEvent(entry: StreamEntry(id: "6-0", fields: [
            "event": "ip_paused",
            "json": #"{"event":"ip_paused","ip":"192.0.2.10","message_id":"m2"}"#])))
        #expect(paused.orderKey == "ip:192.0.2.10")
        #expect(paused.body.contains(#""message_id":"m2""#))
        let breaker = try #require(WebhookEvent(entry: StreamEntry(id: "7-0", fields: [
            "event": "breaker_opened", "json": #"{"event":"breaker_opened","org":"acme"}"#])))
        #expect(breaker.orderKey == "org:acme" && breaker.org == "acme")
    }

    @Test func anEntryThatIsNoEventIsRefused() {
        #expect(WebhookEvent(entry: StreamEntry(id: "1-0", fields: ["id": "m"])) == nil)
        #expect(WebhookEvent(entry: StreamEntry(id: "1-0", fields: [
            "event": "delivered", "json": "[1]"])) == nil)
    }

    @Test func sortableIDsSortAsStreamIDsDo() throws {
        let ids = ["1764871200000-10", "1764871200000-9", "999-0", "1764871200001-0"]
        let sortable = try ids.map { try #require(WebhookEvent.sortable($0)) }
        #expect(sortable.sorted().map { WebhookEvent.streamID(sortable: $0) }
                == ["999-0", "1764871200000-9", "1764871200000-10", "1764871200001-0"])
        #expect(WebhookEvent.sortable("nope") == nil)
    }
}

@Suite struct HTTPClientTests {
    func withServer(_ handler: @escaping HTTPHandler,
                    _ body: (SocketAddress) async throws -> Void) async throws {
        let listener = try TCPListener(address: SocketAddress("127.0.0.1:0")!)
        let server = HTTPServer(listener: listener, settings: HTTPServerSettings(),
                                logger: Logger(label: "test", level: .critical), handler: handler)
        let shutdown = Shutdown()
        async let serving: Void = server.serve(until: shutdown)
        do {
            try await body(server.address)
        } catch {
            shutdown.request()
            await serving
            throw error
        }
        shutdown.request()
        await serving
    }

    @Test func postsTheBodyWithItsFieldsAndReadsTheAnswer() async throws {
        try await withServer({ request in
            let echo = "\(request.method) \(request.path)?\(request.query ?? "") "
                + "\(request.headers["Host"] ?? "") \(request.headers["X-Test"] ?? "") "
                + String(decoding: request.body, as: UTF8.self)
            return .text(201, echo)
        }) { address in
            let target = try #require(HTTPTarget(url: "http://\(address)/hook?a=1"))
            let response = try await HTTPClient.post(target, headers: ["X-Test": "yes"],
                                                     body: Array("hello".utf8),
                                                     timeout: .seconds(5), tls: nil)
            #expect(response.status == 201)
            #expect(String(decoding: response.body, as: UTF8.self)
                    == "POST /hook?a=1 \(address) yes hello")
        }
    }

    @Test func aRefusedConnectionAndASilentServerAreFailures() async throws {
        // A port just freed: nothing listens there.
        let closed = try TCPListener(address: SocketAddress("127.0.0.1:0")!)
        let port = closed.address.port
        closed.close()
        let refused = try #require(HTTPTarget(url: "http://127.0.0.1:\(port)/"))
        await #expect(throws: HTTPClientError.self) {
            try await HTTPClient.post(refused, headers: [:], body: [], timeout: .seconds(5),
                                      tls: nil)
        }
        // A listener that never accepts: the kernel completes the handshake, nobody answers.
        let silent = try TCPListener(address: SocketAddress("127.0.0.1:0")!)
        defer { silent.close() }
        let target = try #require(HTTPTarget(url: "http://\(silent.address)/"))
        do {
            _ = try await HTTPClient.post(target, headers: [:], body: Array("x".utf8),
                                          timeout: .milliseconds(300), tls: nil)
            Issue.record("a silent server answered")
        } catch {
            #expect(error == .timedOut)
        }
    }

    /// One https exchange served by hand: handshake, request head and body, a 204.
    func serveTLSOnce(_ listener: TCPListener, _ context: TLSContext) async throws -> String {
        let deadline = ContinuousClock.now + .seconds(10)
        let tcp = try await listener.accept()
        defer { tcp.close() }
        let tls = try TLSStream.server(over: tcp, context: context)
        try await tls.accept(deadline: deadline)
        let reader = LineReader(tls)
        var length = 0
        var head: [String] = []
        while let line = try await reader.readLine(limit: 8192, deadline: deadline),
              !line.isEmpty {
            let text = String(decoding: line, as: UTF8.self)
            head.append(text)
            if text.lowercased().hasPrefix("content-length:") {
                length = Int(text.dropFirst(15).trimmingCharacters(in: .whitespaces)) ?? 0
            }
        }
        let body = try await reader.readExactly(length, deadline: deadline)
        try await tls.write(Array("HTTP/1.1 204 No Content\r\n\r\n".utf8), deadline: deadline)
        return (head.first ?? "") + " " + String(decoding: body, as: UTF8.self)
    }

    @Test func httpsNeedsACertificateThatVerifiesForTheURLsHost() async throws {
        let certs = try await TestCertificates.make()
        defer { certs.remove() }
        let leaf = try await certs.leaf("hooks.test.example")
        let server = try TLSContext.server(certificateFile: leaf.certificate, keyFile: leaf.key)
        let client = try TLSContext.client(caFile: certs.caFile)
        let listener = try TCPListener(address: SocketAddress("127.0.0.1:0")!)
        defer { listener.close() }
        let port = listener.address.port

        async let served = serveTLSOnce(listener, server)
        let good = try #require(HTTPTarget(url: "https://hooks.test.example:\(port)/in",
                                           connect: "127.0.0.1"))
        let response = try await HTTPClient.post(good, headers: [:], body: Array("{}".utf8),
                                                 timeout: .seconds(10), tls: client)
        #expect(response.status == 204)
        #expect(try await served == "POST /in HTTP/1.1 {}")

        // Another name on the same certificate: the handshake completes, the post does not.
        async let refused = try? serveTLSOnce(listener, server)
        let wrong = try #require(HTTPTarget(url: "https://other.test.example:\(port)/in",
                                            connect: "127.0.0.1"))
        do {
            _ = try await HTTPClient.post(wrong, headers: [:], body: [], timeout: .seconds(10),
                                          tls: client)
            Issue.record("an unverified certificate was accepted")
        } catch {
            guard case .tls(let why) = error else {
                Issue.record("not a TLS failure: \(error)")
                return
            }
            #expect(why.contains("does not verify"))
        }
        _ = await refused
    }

    @Test func urlsGiveTheirAddressUnlessTheHostIsAName() {
        #expect(HTTPTarget(url: "http://127.0.0.1/")?.address?.description == "127.0.0.1:80")
        #expect(HTTPTarget(url: "http://[::1]:8080/x")?.hostField == "[::1]:8080")
        #expect(HTTPTarget(url: "https://hooks.example.com/")?.address == nil)
        #expect(HTTPTarget(url: "https://hooks.example.com/", connect: "192.0.2.1")?.hostField
                == "hooks.example.com")
        #expect(HTTPTarget(url: "http://user:pw@127.0.0.1/") == nil)
        #expect(HTTPTarget(url: "mailto:a@b") == nil)
    }
}
