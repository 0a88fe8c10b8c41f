// Relaxed canonicalisation (RFC 6376 §3.4.2, §3.4.4): the example of §3.4.5, then the edge
// cases a signer meets: trailing empty lines, an empty body, runs of whitespace, folded long
// fields, 8-bit UTF-8 in fields and body.

import Foundation
import Testing
@testable import TernMail

@Suite struct DKIMCanonicalizationTests {
    func header(_ text: String) -> String {
        String(decoding: DKIMCanonicalization.relaxedHeader(Array(text.utf8)[...]), as: UTF8.self)
    }

    func body(_ text: String) -> String {
        String(decoding: DKIMCanonicalization.relaxedBody(Array(text.utf8)[...]), as: UTF8.self)
    }

    // RFC 6376 §3.4.5, the example message, field by field and body.
    @Test func rfc6376Example() {
        #expect(header("A: X\r\n") == "a:X\r\n")
        #expect(header("B : Y\t\r\n\tZ  \r\n") == "b:Y Z\r\n")
        #expect(body(" C \r\nD \t E\r\n\r\n\r\n") == " C\r\nD E\r\n")
    }

    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        let input: String
        let expected: String
        var testDescription: String { name }
    }

    static let headerCases: [Case] = [
        Case(name: "name lowercased, value case kept", input: "SUBJECT: Hello World\r\n",
             expected: "subject:Hello World\r\n"),
        Case(name: "whitespace before and after the colon", input: "To \t:  \t a@b.example\r\n",
             expected: "to:a@b.example\r\n"),
        Case(name: "runs of WSP become one SP", input: "Subject: a \t  b\t\tc\r\n",
             expected: "subject:a b c\r\n"),
        Case(name: "trailing WSP removed", input: "Subject: a b \t \r\n",
             expected: "subject:a b\r\n"),
        Case(name: "folded field unfolded",
             input: "References: <1@a.example>\r\n <2@a.example>\r\n\t<3@a.example>\r\n",
             expected: "references:<1@a.example> <2@a.example> <3@a.example>\r\n"),
        Case(name: "folded right after the colon", input: "Subject:\r\n  folded\r\n",
             expected: "subject:folded\r\n"),
        Case(name: "empty value", input: "Subject:\r\n", expected: "subject:\r\n"),
        Case(name: "only whitespace", input: "Subject:   \r\n", expected: "subject:\r\n"),
        Case(name: "8-bit UTF-8 kept as bytes", input: "Subject:  Grüße \t aus Köln\r\n",
             expected: "subject:Grüße aus Köln\r\n"),
        Case(name: "no final CRLF", input: "From: a@b.example", expected: "from:a@b.example\r\n"),
    ]

    @Test(arguments: headerCases) func relaxedHeader(_ c: Case) {
        #expect(header(c.input) == c.expected)
    }

    @Test func signatureFieldIsHashedWithoutCRLF() {
        let field = Array("DKIM-Signature: v=1;\r\n b=".utf8)[...]
        let out = DKIMCanonicalization.relaxedHeader(field, terminated: false)
        #expect(String(decoding: out, as: UTF8.self) == "dkim-signature:v=1; b=")
    }

    @Test func longFoldedFieldOfManyLines() {
        let words = (1...200).map { "word\($0)" }
        let folded = "Subject: " + words.joined(separator: "\r\n\t ")
        #expect(header(folded + "\r\n") == "subject:" + words.joined(separator: " ") + "\r\n")
    }

    static let bodyCases: [Case] = [
        Case(name: "empty body stays empty", input: "", expected: ""),
        Case(name: "only CRLF: empty", input: "\r\n", expected: ""),
        Case(name: "only empty lines: empty", input: "\r\n\r\n\r\n", expected: ""),
        Case(name: "only whitespace lines: empty", input: "  \r\n\t\r\n \t \r\n", expected: ""),
        Case(name: "trailing empty lines removed", input: "Hi\r\n\r\n\r\n\r\n",
             expected: "Hi\r\n"),
        Case(name: "trailing whitespace-only lines removed", input: "Hi\r\n \r\n\t\r\n",
             expected: "Hi\r\n"),
        Case(name: "inner empty lines kept", input: "a\r\n\r\n\r\nb\r\n",
             expected: "a\r\n\r\n\r\nb\r\n"),
        Case(name: "missing final CRLF added", input: "a\r\nb", expected: "a\r\nb\r\n"),
        Case(name: "WSP at line ends removed", input: "a \t\r\nb  \r\n",
             expected: "a\r\nb\r\n"),
        Case(name: "WSP runs become one SP, leading kept", input: "\t a\t\t b  c\r\n",
             expected: " a b c\r\n"),
        Case(name: "8-bit UTF-8 untouched", input: "Grüße,  Zoë\r\n→ ✓ \r\n",
             expected: "Grüße, Zoë\r\n→ ✓\r\n"),
        Case(name: "quoted-printable soft breaks are plain text", input: "a=\r\nb \r\n",
             expected: "a=\r\nb\r\n"),
        Case(name: "a lone CR or LF is an ordinary byte", input: "a\rb\nc\r\n",
             expected: "a\rb\nc\r\n"),
    ]

    @Test(arguments: bodyCases) func relaxedBody(_ c: Case) {
        #expect(body(c.input) == c.expected)
    }

    /// dkimpy's own relaxed body over the same inputs (one python for all of them): the two
    /// implementations agree.
    @Test func dkimpyAgreesOnBodies() async throws {
        let inputs = DKIMCanonicalizationTests.bodyCases.map(\.input)
        let script = """
            import json, sys
            from dkim.canonicalization import Relaxed
            bodies = json.load(sys.stdin)
            print(json.dumps([Relaxed.canonicalize_body(b.encode()).decode() for b in bodies]))
            """
        let (status, out) = try await runTool(["python3", "-c", script],
                                              input: Array(try JSONEncoder().encode(inputs)))
        #expect(status == 0)
        let theirs = try JSONDecoder().decode([String].self, from: Data(out))
        #expect(theirs == inputs.map(body))
    }
}
