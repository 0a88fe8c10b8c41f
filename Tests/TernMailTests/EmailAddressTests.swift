// Envelope address validation: RFC 5321 §4.1.2 syntax, §4.5.3.1 limits, SMTPUTF8 flags and
// the A-label form of internationalised domains.

import Testing
@testable import TernMail

@Suite struct EmailAddressTests {
    struct Valid: Sendable, CustomTestStringConvertible {
        let input: String
        let localPart: String
        let domain: String
        let asciiDomain: String
        let utf8: Bool
        var testDescription: String { input }
    }

    static let valid: [Valid] = [
        Valid(input: "user@example.com", localPart: "user", domain: "example.com",
              asciiDomain: "example.com", utf8: false),
        Valid(input: "User.Name+tag@Example.COM", localPart: "User.Name+tag",
              domain: "example.com", asciiDomain: "example.com", utf8: false),
        Valid(input: "!#$%&'*+-/=?^_`{|}~@example.com", localPart: "!#$%&'*+-/=?^_`{|}~",
              domain: "example.com", asciiDomain: "example.com", utf8: false),
        Valid(input: "\"john doe\"@example.com", localPart: "\"john doe\"",
              domain: "example.com", asciiDomain: "example.com", utf8: false),
        Valid(input: #""a\"b\\c"@example.com"#, localPart: #""a\"b\\c""#,
              domain: "example.com", asciiDomain: "example.com", utf8: false),
        Valid(input: "\"a@b\"@example.com", localPart: "\"a@b\"", domain: "example.com",
              asciiDomain: "example.com", utf8: false),
        Valid(input: "postmaster@localhost", localPart: "postmaster", domain: "localhost",
              asciiDomain: "localhost", utf8: false),
        Valid(input: "x@[192.0.2.1]", localPart: "x", domain: "[192.0.2.1]",
              asciiDomain: "[192.0.2.1]", utf8: false),
        Valid(input: "x@[IPv6:2001:db8::1]", localPart: "x", domain: "[ipv6:2001:db8::1]",
              asciiDomain: "[ipv6:2001:db8::1]", utf8: false),
        Valid(input: "x@[IPv6:::ffff:192.0.2.1]", localPart: "x",
              domain: "[ipv6:::ffff:192.0.2.1]", asciiDomain: "[ipv6:::ffff:192.0.2.1]",
              utf8: false),
        Valid(input: "user@xn--bcher-kva.de", localPart: "user", domain: "xn--bcher-kva.de",
              asciiDomain: "xn--bcher-kva.de", utf8: false),
        Valid(input: "user@BÜCHER.de", localPart: "user", domain: "bücher.de",
              asciiDomain: "xn--bcher-kva.de", utf8: true),
        Valid(input: "josé@münchen.example", localPart: "josé", domain: "münchen.example",
              asciiDomain: "xn--mnchen-3ya.example", utf8: true),
        Valid(input: "用户@例子.广告", localPart: "用户", domain: "例子.广告",
              asciiDomain: "xn--fsqu00a.xn--4rr70v", utf8: true),
        Valid(input: "info@例え.テスト", localPart: "info", domain: "例え.テスト",
              asciiDomain: "xn--r8jz45g.xn--zckzah", utf8: true),
        Valid(input: "\"ü x\"@example.com", localPart: "\"ü x\"", domain: "example.com",
              asciiDomain: "example.com", utf8: true),
        Valid(input: String(repeating: "a", count: 64) + "@example.com",
              localPart: String(repeating: "a", count: 64), domain: "example.com",
              asciiDomain: "example.com", utf8: false),
        Valid(input: "a@" + String(repeating: "b", count: 63) + ".com", localPart: "a",
              domain: String(repeating: "b", count: 63) + ".com",
              asciiDomain: String(repeating: "b", count: 63) + ".com", utf8: false),
    ]

    @Test(arguments: valid) func accepts(_ c: Valid) throws {
        let address = try EmailAddress(c.input)
        #expect(address.localPart == c.localPart)
        #expect(address.domain == c.domain)
        #expect(address.asciiDomain == c.asciiDomain)
        #expect(address.needsSMTPUTF8 == c.utf8)
        #expect(address.description == c.localPart + "@" + c.domain)
    }

    static let invalid: [(String, EmailAddressError)] = [
        ("", .empty),
        ("userexample.com", .missingAt),
        ("@example.com", .emptyLocalPart),
        ("user@", .emptyDomain),
        ("us er@example.com", .whitespace),
        ("user@exam ple.com", .whitespace),
        (" user@example.com", .whitespace),
        ("user\r\n@example.com", .controlCharacter),
        ("user@example.com\r\nRCPT TO:<x@y>", .controlCharacter),
        ("user@exa\0mple.com", .controlCharacter),
        ("us\ter@example.com", .controlCharacter),
        ("user@example.com\u{85}", .controlCharacter),
        (".user@example.com", .misplacedDot),
        ("user.@example.com", .misplacedDot),
        ("us..er@example.com", .misplacedDot),
        ("user@example..com", .emptyLabel),
        ("user@.example.com", .emptyLabel),
        ("user@example.com.", .emptyLabel),
        ("user@-example.com", .labelHyphen("-example")),
        ("user@example-.com", .labelHyphen("example-")),
        ("user@exam_ple.com", .invalidDomainCharacter("_")),
        ("a@b@example.com", .invalidDomainCharacter("@")),
        ("us(er@example.com", .invalidLocalPartCharacter("(")),
        ("<user@example.com>", .invalidLocalPartCharacter("<")),
        ("us\"er@example.com", .invalidLocalPartCharacter("\"")),
        ("user\u{2028}x@example.com", .invalidLocalPartCharacter("\u{2028}")),
        ("\"unterminated@example.com", .unterminatedQuote),
        ("\"ab\"c@example.com", .textAfterQuote),
        ("\"ab\"", .missingAt),
        ("\"\"@example.com", .emptyLocalPart),
        ("user@[300.1.1.1]", .invalidAddressLiteral("[300.1.1.1]")),
        ("user@[1.2.3]", .invalidAddressLiteral("[1.2.3]")),
        ("user@[IPv6:zz::1]", .invalidAddressLiteral("[IPv6:zz::1]")),
        ("user@[IPv6:1:2:3:4:5:6:7:8:9]", .invalidAddressLiteral("[IPv6:1:2:3:4:5:6:7:8:9]")),
        ("user@[IPv6:1::2::3]", .invalidAddressLiteral("[IPv6:1::2::3]")),
        ("user@[1.2.3.4", .invalidAddressLiteral("[1.2.3.4")),
        ("user@[tag:stuff]", .invalidAddressLiteral("[tag:stuff]")),
        (String(repeating: "a", count: 65) + "@example.com", .localPartTooLong(octets: 65)),
        ("a@" + String(repeating: "b", count: 64) + ".com",
         .labelTooLong(String(repeating: "b", count: 64))),
        ("a@" + Array(repeating: String(repeating: "c", count: 63), count: 4)
            .joined(separator: "."), .tooLong(octets: 257)),
        // 80 labels of "ü" fit the mailbox limit but grow to 639 octets as A-labels.
        ("a@" + Array(repeating: "ü", count: 80).joined(separator: "."),
         .domainTooLong(octets: 639)),
    ]

    @Test(arguments: invalid) func rejects(_ input: String, _ expected: EmailAddressError) {
        #expect(throws: expected) { try EmailAddress(input) }
        #expect(EmailAddress.parse(input) == .failure(expected))
    }

    @Test func errorMessagesAreSentences() {
        #expect(EmailAddressError.localPartTooLong(octets: 70).message
                == "local part is 70 octets; the limit is 64 (RFC 5321)")
        #expect(EmailAddressError.missingAt.description == "address has no @")
    }

    @Test func asciiFormForServersWithoutSMTPUTF8() throws {
        #expect(try EmailAddress("user@bücher.de").asciiForm == "user@xn--bcher-kva.de")
        #expect(try EmailAddress("user@example.com").asciiForm == "user@example.com")
        #expect(try EmailAddress("josé@example.com").asciiForm == nil)
    }

    @Test func equalityUsesLowercasedDomain() throws {
        #expect(try EmailAddress("a@EXAMPLE.com") == EmailAddress("a@example.com"))
        #expect(try EmailAddress("A@example.com") != EmailAddress("a@example.com"))
    }

    @Test(arguments: [
        ("bücher", "bcher-kva"),
        ("münchen", "mnchen-3ya"),
        ("правительство", "80aealotwbjpid2k"),
        ("ü", "tda"),
        // RFC 3492 §7.1 (A), Arabic (Egyptian).
        ("ليهمابتكلموشعربي؟", "egbpdaj6bu4bxfgehfvwxn"),
    ])
    func punycode(_ label: String, _ encoded: String) {
        #expect(Punycode.encode(label) == encoded)
        #expect(Punycode.decode(encoded) == label)
        #expect(Punycode.decode(encoded.uppercased())?.lowercased() == label)
    }

    @Test(arguments: ["zz", "99999999999", "bcher-kv", "ü", "b!", "-9"])
    func punycodeThatDoesNotDecode(_ text: String) {
        #expect(Punycode.decode(text) == nil, "\(Punycode.decode(text) ?? "")")
    }

    static let invalidIDNs: [(String, EmailAddressError)] = [
        ("a@xn--zz.example", .invalidALabel("xn--zz")),
        ("a@xn--a.example", .invalidALabel("xn--a")),  // U+0080, a control
        ("a@xn--9a.example", .symbolInDomain("£")),
        ("a@xn--bcher-kvb.example", .invalidALabel("xn--bcher-kvb")),  // not lowercase NFC
        ("a@xn--ls8h.example", .symbolInDomain("💩")),
        ("a@xn--n3h.example", .symbolInDomain("☃")),
        ("a@☃.example", .symbolInDomain("☃")),
        ("a@i❤.example", .symbolInDomain("❤")),
        ("a@pay€.example", .symbolInDomain("€")),
        ("a@a∑b.example", .symbolInDomain("∑")),
        ("a@exa\u{202E}mple.com", .bidiControl("\u{202E}")),
        ("ad\u{200F}min@example.com", .bidiControl("\u{200F}")),
        ("a@b\u{2066}c.example", .bidiControl("\u{2066}")),
        ("\"a\u{200E}b\"@example.com", .bidiControl("\u{200E}")),
    ]

    @Test func acceptsAValidALabel() throws {
        let address = try EmailAddress("a@xn--4ca.example")
        #expect(address.asciiDomain == "xn--4ca.example")
        #expect(!address.needsSMTPUTF8)
    }

    @Test(arguments: invalidIDNs) func refusesInvalidIDNs(_ input: String,
                                                          _ expected: EmailAddressError) {
        #expect(throws: expected) { try EmailAddress(input) }
        #expect(!expected.message.isEmpty)
    }
}
