// VERP return paths: round trip, case changes, forgery and foreign domains.

import Testing
import TernCore
@testable import TernMail

@Suite struct VERPTests {
    let verp = VERP(secret: Array("0123456789abcdef0123456789abcdef".utf8),
                    domain: "Bounces.Example.COM")
    let id = MessageID.make(timestampMs: 1_741_000_000_000, random: Array(1...10))

    @Test func roundTrip() throws {
        let address = verp.address(for: id)
        let local = try #require(address.split(separator: "@").first)
        #expect(address.hasSuffix("@bounces.example.com"))
        #expect(local.hasPrefix("b." + id + "."))
        #expect(local.count == 2 + 26 + 1 + 16)
        #expect(local.count <= EmailAddress.maxLocalPart)
        #expect(address == address.lowercased())
        #expect(try EmailAddress(address).description == address)
        #expect(verp.decode(address) == .success(id))
        #expect(verp.decode("<" + address + ">") == .success(id))
    }

    @Test func signatureIsTheHMACPrefix() {
        let mac = Crypto.hmacSHA256(key: Array("0123456789abcdef0123456789abcdef".utf8),
                                    data: Array(id.utf8))
        let expected = "b." + id + "." + Base32.encode(Array(mac.prefix(10)))
            + "@bounces.example.com"
        #expect(verp.address(for: id) == expected)
    }

    @Test func caseChangesDoNotBreakIt() {
        let address = verp.address(for: id)
        #expect(verp.decode(address.uppercased()) == .success(id))
        #expect(verp.decode(address.prefix(1).uppercased() + address.dropFirst()) == .success(id))
        #expect(verp.decode(address + ".") == .success(id))  // trailing root dot
    }

    @Test func forgeriesAreRefused() {
        let address = verp.address(for: id)
        // Replace the last signature character with a different digit.
        let at = address.firstIndex(of: "@")!
        let last = address[address.index(before: at)]
        let forged = String(address[..<address.index(before: at)]) + (last == "0" ? "1" : "0")
            + String(address[at...])
        #expect(verp.decode(forged) == .failure(.badSignature))
        // Another message's id with this message's signature.
        let other = MessageID.make(timestampMs: 1_741_000_000_000, random: Array(2...11))
        let swapped = address.replacingOccurrences(of: id, with: other)
        #expect(verp.decode(swapped) == .failure(.badSignature))
        // Signed with another secret.
        let stranger = VERP(secret: Array("another secret".utf8), domain: "bounces.example.com")
        #expect(verp.decode(stranger.address(for: id)) == .failure(.badSignature))
    }

    @Test(arguments: [
        "postmaster@bounces.example.com",
        "b.@bounces.example.com",
        "b.abc@bounces.example.com",
        "x.01arz3ndektsv4rrffq69g5fav.0000000000000000@bounces.example.com",
        "b.01arz3ndektsv4rrffq69g5fav.000000000000000@bounces.example.com",   // 15 digits
        "b.01arz3ndektsv4rrffq69g5fav.000000000000000i@bounces.example.com",  // not base32
        "b.01arz3ndektsv4rrffq69g5fav.0000000000000000",                      // no domain
        "",
    ])
    func notVERP(_ address: String) {
        #expect(verp.decode(address) == .failure(.notVERP))
    }

    @Test func wrongDomain() {
        let elsewhere = VERP(secret: Array("0123456789abcdef0123456789abcdef".utf8),
                             domain: "other.example.net")
        #expect(verp.decode(elsewhere.address(for: id)) == .failure(.wrongDomain))
    }
}
