// The TLS layer over real loopback sockets and real OpenSSL, with certificates made by the
// openssl command: handshakes, what "verified" means, data both ways, reloads, and a peer
// that does not speak TLS at all.

import Foundation
import Testing
import TernCore
import TernTestSupport

@Suite(.serialized) struct TLSTests {
    /// A connected pair of TCP connections on 127.0.0.1.
    static func pair() async throws -> (client: TCPConnection, server: TCPConnection) {
        let listener = try TCPListener(address: SocketAddress("127.0.0.1:0")!)
        defer { listener.close() }
        async let accepted = listener.accept()
        let client = try await TCPConnection.connect(to: listener.address,
                                                     deadline: .now + .seconds(5))
        return (client, try await accepted)
    }

    /// Client and server handshakes run at once; the client's result or error.
    static func handshake(server context: TLSContext, client: TLSContext, host: String)
        async throws -> (client: TLSStream, server: TLSStream)
    {
        let (c, s) = try await pair()
        let deadline = ContinuousClock.now + .seconds(10)
        let secure = try TLSStream.server(over: s, context: context)
        async let accepted: Void = secure.accept(deadline: deadline)
        let tls = try await TLSStream.connect(over: c, context: client, host: host,
                                              deadline: deadline)
        try await accepted
        return (tls, secure)
    }

    /// A session for mx.test.example whose certificate the client verifies.
    static func verifiedSession(_ certs: TestCertificates) async throws
        -> (client: TLSStream, server: TLSStream)
    {
        let leaf = try await certs.leaf("mx.test.example")
        let server = try TLSContext.server(certificateFile: leaf.certificate, keyFile: leaf.key)
        let client = try TLSContext.client(caFile: certs.caFile)
        return try await handshake(server: server, client: client, host: "mx.test.example")
    }

    @Test func aVerifiedSessionCarriesBytesBothWays() async throws {
        let certs = try await TestCertificates.make()
        defer { certs.remove() }
        let (c, s) = try await Self.verifiedSession(certs)
        #expect(c.info.verified && c.info.verifyError == "")
        #expect(c.info.version == "TLSv1.3" && s.info.version == "TLSv1.3")
        #expect(c.info.cipher.hasPrefix("TLS_") && c.info.cipher == s.info.cipher)
        #expect(c.info.summary == "TLSv1.3 " + c.info.cipher)

        // More than one TLS record (16 KiB) each way.
        let big = (0..<40_000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        async let sent: Void = c.write(big, deadline: .now + .seconds(10))
        var got: [UInt8] = []
        while got.count < big.count {
            got += try await s.read(max: 65536, deadline: .now + .seconds(10))
        }
        try await sent
        #expect(got == big)
        try await s.write(Array("250 ok\r\n".utf8), deadline: .now + .seconds(5))
        #expect(try await c.read(max: 100, deadline: .now + .seconds(5))
                == Array("250 ok\r\n".utf8))
        // The peer going away ends the stream rather than failing it.
        c.close()
        #expect(try await s.read(max: 100, deadline: .now + .seconds(5)) == [])
    }

    @Test func readIfReadyTakesWhatHasArrivedWithoutWaiting() async throws {
        let certs = try await TestCertificates.make()
        defer { certs.remove() }
        let (c, s) = try await Self.verifiedSession(certs)
        // Nothing sent (the session tickets TLS 1.3 sends after the handshake are no data).
        #expect(try c.readIfReady(max: 100) == nil)
        try await s.write(Array("250 spare\r\n".utf8), deadline: .now + .seconds(5))
        var got: [UInt8]?
        for _ in 0..<500 where got == nil {
            got = try c.readIfReady(max: 100)
            if got == nil { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(got == Array("250 spare\r\n".utf8))
        #expect(try c.readIfReady(max: 100) == nil)
        // The stream still reads and writes as before.
        try await c.write(Array("QUIT\r\n".utf8), deadline: .now + .seconds(5))
        #expect(try await s.read(max: 100, deadline: .now + .seconds(5))
                == Array("QUIT\r\n".utf8))
        s.close()
        var end: [UInt8]?
        for _ in 0..<500 where end == nil {
            end = try c.readIfReady(max: 100)
            if end == nil { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(end == [])
        c.close()
    }

    @Test func readIfReadyFindsARecordAnEarlierReadLeftBehind() async throws {
        let certs = try await TestCertificates.make()
        defer { certs.remove() }
        let (c, s) = try await Self.verifiedSession(certs)
        // Two records, both in the client's socket before it reads: the read that returns
        // the first takes the second's ciphertext from the socket too, and keeps it.
        try await s.write(Array("250 ok\r\n".utf8), deadline: .now + .seconds(5))
        try await s.write(Array("250 spare\r\n".utf8), deadline: .now + .seconds(5))
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await c.read(max: 100, deadline: .now + .seconds(5))
                == Array("250 ok\r\n".utf8))
        #expect(try c.readIfReady(max: 100) == Array("250 spare\r\n".utf8))
        c.close()
        s.close()
    }

    @Test func aWrongNameOrAnUnknownCAStillEncryptsButIsNotVerified() async throws {
        let certs = try await TestCertificates.make()
        defer { certs.remove() }
        let leaf = try await certs.leaf("mx.test.example")
        let server = try TLSContext.server(certificateFile: leaf.certificate, keyFile: leaf.key)

        let ours = try TLSContext.client(caFile: certs.caFile)
        let (c, _) = try await Self.handshake(server: server, client: ours,
                                              host: "other.test.example")
        #expect(!c.info.verified && c.info.verifyError == "hostname mismatch")

        // The system's trust store does not know our CA.
        let system = try TLSContext.client(caFile: nil)
        let (d, _) = try await Self.handshake(server: server, client: system,
                                              host: "mx.test.example")
        #expect(!d.info.verified && d.info.version == "TLSv1.3")
        #expect(d.info.verifyError == "unable to get local issuer certificate")
    }

    @Test func aPeerThatDoesNotSpeakTLSFailsTheHandshake() async throws {
        let (c, s) = try await Self.pair()
        try await s.write(Array("this is not TLS at all\r\n".utf8), deadline: .now + .seconds(5))
        let client = try TLSContext.client(caFile: nil)
        await #expect(throws: TLSError.self) {
            _ = try await TLSStream.connect(over: c, context: client, host: "mx.test.example",
                                            deadline: .now + .seconds(5))
        }
        s.close()
    }

    @Test func filesThatCannotBeUsedAreRefusedWithTheirNames() async throws {
        let certs = try await TestCertificates.make()
        defer { certs.remove() }
        let a = try await certs.leaf("a.test.example")
        let b = try await certs.leaf("b.test.example")
        #expect(throws: TLSError.self) {
            _ = try TLSContext.server(certificateFile: a.certificate, keyFile: b.key)
        }
        do {
            _ = try TLSContext.client(caFile: certs.dir + "/missing.pem")
            Issue.record("a missing CA file was accepted")
        } catch let error as TLSError {
            #expect(error.description.hasPrefix("cannot read the CA file \(certs.dir)/missing"))
        }
    }

    @Test func aReloadServesTheNewCertificateAndOpenSessionsKeepTheOld() async throws {
        let certs = try await TestCertificates.make()
        defer { certs.remove() }
        let a = try await certs.leaf("a.test.example", stem: "served")
        let reloadable = try ReloadableTLSContext(certificateFile: a.certificate, keyFile: a.key)
        let client = try TLSContext.client(caFile: certs.caFile)
        let (old, oldServer) = try await Self.handshake(
            server: reloadable.context, client: client, host: "a.test.example")
        #expect(old.info.verified)

        // The files are replaced in place, as an operator renewing a certificate does.
        _ = try await certs.leaf("b.test.example", stem: "served")
        try reloadable.reload()
        let (new, _) = try await Self.handshake(server: reloadable.context, client: client,
                                                host: "b.test.example")
        #expect(new.info.verified)
        let (stale, _) = try await Self.handshake(server: reloadable.context, client: client,
                                                  host: "a.test.example")
        #expect(!stale.info.verified && stale.info.verifyError == "hostname mismatch")

        // The session made before the reload still works.
        try await old.write(Array("NOOP\r\n".utf8), deadline: .now + .seconds(5))
        #expect(try await oldServer.read(max: 100, deadline: .now + .seconds(5))
                == Array("NOOP\r\n".utf8))

        // A reload that fails keeps the current certificate.
        try "not a key".write(toFile: a.key, atomically: true, encoding: .utf8)
        #expect(throws: TLSError.self) { try reloadable.reload() }
        let (still, _) = try await Self.handshake(server: reloadable.context, client: client,
                                                  host: "b.test.example")
        #expect(still.info.verified)
    }
}
