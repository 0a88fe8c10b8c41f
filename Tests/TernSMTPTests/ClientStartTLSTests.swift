// STARTTLS in the client state machine (RFC 3207) under each policy: when it is sent, what
// a refusal, a failed handshake or an unverified certificate leads to.

import Testing
import TernCore
import TernMail
@testable import TernSMTP

@Suite struct ClientStartTLSTests {
    typealias C = ClientSessionTests
    static let ehloPlain = C.reply(250, "mx.example greets out1", "SIZE 1000000", "PIPELINING")
    static let verified = TLSSessionInfo(version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384",
                                         verified: true)
    static let unverified = TLSSessionInfo(version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384",
                                           verified: false,
                                           verifyError: "self-signed certificate")

    /// A session through the greeting and the first EHLO.
    static func greeted(_ policy: TLSPolicy, ehlo: SMTPReply = C.ehloFull)
        -> (SMTPClientSession, SMTPClientAction)
    {
        var s = SMTPClientSession(helo: "out1.tern.example", mxHost: "mx.example",
                                  address: "127.0.0.11", tlsPolicy: policy)
        _ = s.start()
        _ = s.receive(C.reply(220, "mx.example ESMTP"))
        let action = s.receive(ehlo)
        return (s, action)
    }

    @Test func offeredSTARTTLSIsUsedThenEHLOAgain() {
        var (s, action) = Self.greeted(.opportunistic)
        #expect(C.line(action) == "STARTTLS\r\n")
        #expect(s.receive(C.reply(220, "2.0.0 go ahead")) == .startTLS(timeout: .seconds(300)))
        #expect(C.line(s.tlsEstablished(Self.verified)) == "EHLO out1.tern.example\r\n")
        // The first EHLO's extensions are forgotten until the second answers (§4.2).
        #expect(!s.extensions.pipelining)
        #expect(s.receive(Self.ehloPlain) == .ready)
        #expect(s.extensions.pipelining && !s.extensions.startTLS)
        _ = s.send(C.message)
        _ = s.receive(C.reply(250, "ok"))
        _ = s.receive(C.reply(250, "ok"))
        _ = s.receive(C.reply(354, "go"))
        let result = C.result(s.receive(C.reply(250, "2.0.0 queued")))
        #expect(result?.outcome == .delivered && result?.tls == Self.verified)
        #expect(result?.tlsSummary == "TLSv1.3 TLS_AES_256_GCM_SHA384")
    }

    @Test func aTLSSessionPipelinesAndResetsAndEveryResultCarriesTheTLSDetails() {
        var (s, _) = Self.greeted(.required)
        _ = s.receive(C.reply(220, "2.0.0 go ahead"))
        _ = s.tlsEstablished(Self.verified)
        #expect(s.receive(Self.ehloPlain) == .ready)
        // Pipelined: MAIL, RCPT and DATA in one write; the refused RCPT decides after DATA.
        #expect(C.line(s.send(C.message))?.hasPrefix("MAIL FROM:") == true)
        _ = s.receive(C.reply(250))
        _ = s.receive(C.reply(550, "5.1.1 no such user"))
        let refused = C.result(s.receive(C.reply(554, "5.5.1 no valid recipients")))
        #expect(refused?.stage == .rcpt && refused?.tls == Self.verified && s.needsReset)
        // The next transaction on the same TLS session starts with RSET in the same write.
        #expect(C.line(s.send(C.message))?.hasPrefix("RSET\r\nMAIL FROM:") == true)
        _ = s.receive(C.reply(250))
        _ = s.receive(C.reply(250))
        _ = s.receive(C.reply(250))
        _ = s.receive(C.reply(354, "go"))
        let delivered = C.result(s.receive(C.reply(250, "2.0.0 queued")))
        #expect(delivered?.outcome == .delivered && delivered?.tls == Self.verified)
    }

    @Test func disabledNeverSendsSTARTTLS() {
        let (s, action) = Self.greeted(.disabled)
        #expect(action == .ready && s.tls == nil)
    }

    @Test func notOfferedIsClearForOpportunisticAndADeferralWhenRequired() {
        let (_, opportunistic) = Self.greeted(.opportunistic, ehlo: Self.ehloPlain)
        #expect(opportunistic == .ready)

        let (s, required) = Self.greeted(.required, ehlo: Self.ehloPlain)
        let r = C.result(required)
        #expect(r?.outcome == .deferred && r?.stage == .tls && r?.code == 0)
        #expect(r?.enhanced == "4.7.10")
        #expect(r?.text == "TLS is required for this destination and mx.example does not "
                + "offer STARTTLS")
        #expect(s.phase == .refused)
    }

    @Test func aRefusedSTARTTLSGoesOnInClearUnlessRequired() {
        var (s, _) = Self.greeted(.opportunistic)
        #expect(s.receive(C.reply(454, "4.7.0 TLS not available")) == .ready)
        #expect(s.tls == nil && s.extensions.startTLS)

        var (t, _) = Self.greeted(.required)
        let r = C.result(t.receive(C.reply(554, "5.7.0 no TLS for you")))
        // A 5yz to STARTTLS is still a deferral: waiting costs less than a bounce.
        #expect(r?.outcome == .deferred && r?.stage == .tls && r?.code == 0)
        #expect(r?.text == "TLS is required for this destination and mx.example refused "
                + "STARTTLS: 554 5.7.0 no TLS for you")
    }

    @Test func aFailedHandshakeAsksForClearTextOnlyWhenOpportunistic() {
        var (s, _) = Self.greeted(.opportunistic)
        _ = s.receive(C.reply(220, "go"))
        let r = C.result(s.tlsFailed("wrong version number"))
        #expect(r?.outcome == .deferred && r?.stage == .tls && r?.fallback == .withoutTLS)
        #expect(r?.enhanced == "4.7.5")
        #expect(r?.detail == "STARTTLS with mx.example failed: wrong version number")
        #expect(s.phase == .closed)

        var (t, _) = Self.greeted(.required)
        _ = t.receive(C.reply(220, "go"))
        let q = C.result(t.tlsFailed("wrong version number"))
        #expect(q?.outcome == .deferred && q?.fallback == DeliveryFallback.none)
    }

    @Test func anUnverifiedCertificateEncryptsButDoesNotSatisfyRequired() {
        var (s, _) = Self.greeted(.opportunistic)
        _ = s.receive(C.reply(220, "go"))
        #expect(C.line(s.tlsEstablished(Self.unverified)) == "EHLO out1.tern.example\r\n")
        #expect(s.tls?.verified == false)

        var (t, _) = Self.greeted(.required)
        _ = t.receive(C.reply(220, "go"))
        let r = C.result(t.tlsEstablished(Self.unverified))
        #expect(r?.outcome == .deferred && r?.stage == .tls && r?.enhanced == "4.7.5")
        #expect(r?.tls == Self.unverified)
        #expect(r?.text == "TLS is required for this destination and the certificate of "
                + "mx.example did not verify: self-signed certificate")
        // The session can still say QUIT, over TLS.
        #expect(C.line(t.quit()) == "QUIT\r\n")

        var (u, _) = Self.greeted(.required)
        _ = u.receive(C.reply(220, "go"))
        #expect(C.line(u.tlsEstablished(Self.verified)) == "EHLO out1.tern.example\r\n")
    }

    @Test func theConnectionLostAfterSTARTTLSIsADeferralAtStageTLS() {
        var (s, _) = Self.greeted(.opportunistic)
        let r = C.result(s.linkFailed(.closed))
        #expect(r?.stage == .tls && r?.outcome == .deferred)
        #expect(r?.detail == "connection closed by the server waiting for the reply to STARTTLS")
    }

    @Test func policiesPerDomain() throws {
        let domains = try TLSPolicies.parseDomains(
            "Example.com=required, foo.example = disabled").get()
        #expect(domains == ["example.com": .required, "foo.example": .disabled])
        let p = TLSPolicies(default: .opportunistic, domains: domains)
        #expect(p.policy(for: "EXAMPLE.com.") == .required)
        #expect(p.policy(for: "foo.example") == .disabled)
        #expect(p.policy(for: "sub.example.com") == .opportunistic)
        #expect(TLSPolicies.parseDomains("example.com=maybe")
                == .failure(.init(entry: "example.com=maybe")))
        #expect(TLSPolicies.parseDomains("=required") == .failure(.init(entry: "=required")))
        #expect(try TLSPolicies.parseDomains("").get().isEmpty)
    }

    @Test func theFallbackCacheForgetsAfterItsTTL() async throws {
        let cache = TLSFallbackCache(ttl: .milliseconds(200))
        #expect(!cache.avoidsTLS("mx.example"))
        cache.remember("MX.example")
        #expect(cache.avoidsTLS("mx.example"))
        #expect(!cache.avoidsTLS("other.example"))
        try await Task.sleep(for: .milliseconds(400))
        #expect(!cache.avoidsTLS("mx.example"))
    }
}
