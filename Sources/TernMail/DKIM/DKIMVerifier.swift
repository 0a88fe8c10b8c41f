// Checking DKIM signatures (RFC 6376 §6) on mail that comes to us: feedback reports from
// mailbox providers, whose signature says which provider really sent them. RSA-SHA256 and
// Ed25519-SHA256 (RFC 8463); simple and relaxed canonicalisation; l= (only the signed
// length of the body is hashed) and x= (expiry) honoured.
//
// Pure apart from the key lookup, which the caller supplies (the bounce receiver asks DNS
// through its configured resolver with a timeout). Bounded: at most `maxSignatures`
// signatures are checked per message, so a message cannot make us ask DNS many times.

import Foundation
import TernCore

/// What a key lookup found for `selector._domainkey.domain`.
public enum DKIMKeyAnswer: Sendable, Equatable {
    /// The TXT record's text (character-strings joined).
    case record(String)
    /// No such name or no TXT record: a permanent failure (RFC 6376 §6.1.2).
    case none
    /// Timeout, SERVFAIL: try again later (§6.1.2 TEMPFAIL).
    case temporary(String)
}

/// The verdict on a message, as recorded for operators.
public struct DKIMResult: Sendable, Equatable {
    public enum Verdict: String, Sendable {
        case pass, fail, none, temperror
    }

    public var verdict: Verdict
    /// The d= of the signature the verdict is about; "" with `none`.
    public var domain: String
    /// Why a signature failed, for the log; "" on pass.
    public var reason: String

    public init(_ verdict: Verdict, domain: String = "", reason: String = "") {
        self.verdict = verdict
        self.domain = domain
        self.reason = reason
    }
}

public struct DKIMVerifier: Sendable {
    public static let maxSignatures = 3

    public init() {}

    /// Checks the message's DKIM-Signature fields, top first. One that passes decides;
    /// otherwise a temporary failure beats a permanent one, and the first signature's
    /// domain is reported.
    public func verify(_ message: [UInt8], now: Date,
                       key: @Sendable (String) async -> DKIMKeyAnswer) async -> DKIMResult {
        let (fields, bodyStart) = DKIMSigner.headerFields(message)
        let signatures = fields.filter { $0.name == "dkim-signature" }
            .prefix(Self.maxSignatures)
        guard !signatures.isEmpty else { return DKIMResult(.none) }
        var results: [DKIMResult] = []
        for signature in signatures {
            let result = await check(signature, fields: fields, message: message,
                                     bodyStart: bodyStart, now: now, key: key)
            if result.verdict == .pass { return result }
            results.append(result)
        }
        return results.first { $0.verdict == .temperror } ?? results[0]
    }

    // MARK: - One signature

    func check(_ signature: DKIMSigner.Field, fields: [DKIMSigner.Field], message: [UInt8],
               bodyStart: Int, now: Date,
               key: @Sendable (String) async -> DKIMKeyAnswer) async -> DKIMResult {
        let raw = message[signature.range]
        guard let colon = raw.firstIndex(of: 0x3A) else { return DKIMResult(.fail) }
        let tags = Self.tags(String(decoding: raw[(colon + 1)...], as: UTF8.self))
        let domain = (tags["d"] ?? "").lowercased()
        func fail(_ why: String) -> DKIMResult { DKIMResult(.fail, domain: domain, reason: why) }

        guard tags["v"] == "1" else { return fail("v= is not 1") }
        guard let algorithm = tags["a"]?.lowercased(),
              algorithm == "rsa-sha256" || algorithm == "ed25519-sha256"
        else { return fail("unsupported algorithm") }
        guard let selector = tags["s"], !selector.isEmpty, !domain.isEmpty,
              let signed = tags["b"].flatMap({ Data(base64Encoded: Self.noSpace($0)) }),
              let bodyHash = tags["bh"].flatMap({ Data(base64Encoded: Self.noSpace($0)) }),
              let h = tags["h"]
        else { return fail("a required tag is missing") }
        let names = h.split(separator: ":").map {
            $0.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        }
        guard names.contains("from") else { return fail("h= does not sign From") }
        let (headerCanon, bodyCanon) = Self.canonicalization(tags["c"] ?? "simple/simple")
        guard let headerCanon, let bodyCanon else { return fail("unknown canonicalization") }
        if let x = tags["x"] {
            guard let expiry = Int64(x) else { return fail("bad x=") }
            if Int64(now.timeIntervalSince1970) > expiry { return fail("signature expired") }
        }

        // §3.7: the body hash first; l= limits how much of the canonical body counts.
        var body = bodyCanon == "relaxed"
            ? DKIMCanonicalization.relaxedBody(message[bodyStart...])
            : Self.simpleBody(message[bodyStart...])
        if let l = tags["l"] {
            guard let length = Int(l), length >= 0, length <= body.count else {
                return fail("bad l=")
            }
            body = Array(body.prefix(length))
        }
        guard Crypto.sha256(body) == Array(bodyHash) else { return fail("body hash differs") }

        var data: [UInt8] = []
        for range in DKIMSigner.selected(names, from: fields) where range != signature.range {
            data += headerCanon == "relaxed"
                ? DKIMCanonicalization.relaxedHeader(message[range]) : Array(message[range])
        }
        let blanked = Self.withoutSignatureValue(raw)
        data += headerCanon == "relaxed"
            ? DKIMCanonicalization.relaxedHeader(blanked[...], terminated: false)
            : Array(blanked.dropLast(Self.endsInCRLF(blanked) ? 2 : 0))

        let record: String
        switch await key(selector + "._domainkey." + domain) {
        case .record(let text): record = text
        case .none: return fail("no key record")
        case .temporary(let why): return DKIMResult(.temperror, domain: domain, reason: why)
        }
        guard let publicKey = Self.publicKey(record, algorithm: algorithm) else {
            return fail("key record unusable or revoked")
        }
        if case .rsa(let bits) = publicKey.kind, bits < 1024 {
            return fail("RSA key under 1024 bits")     // RFC 8301 §3.2
        }
        // RFC 8463 §3: Ed25519 signs the SHA-256 digest of the data.
        let input = algorithm == "ed25519-sha256" ? Crypto.sha256(data) : data
        guard publicKey.verify(Array(signed), of: input) else {
            return fail("signature does not verify")
        }
        return DKIMResult(.pass, domain: domain)
    }

    // MARK: - Parsing

    /// A tag-list (§3.2): names and values trimmed of whitespace; a repeated name keeps
    /// the first.
    static func tags(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for item in text.split(separator: ";") {
            guard let eq = item.firstIndex(of: "=") else { continue }
            let name = item[..<eq].trimmingCharacters(in: .whitespacesAndNewlines)
            let value = item[item.index(after: eq)...]
                .trimmingCharacters(in: .whitespacesAndNewlines)
            if out[name] == nil { out[name] = value }
        }
        return out
    }

    static func noSpace(_ s: String) -> String { s.filter { !$0.isWhitespace } }

    /// c= as (header, body); nil for a name we do not know.
    static func canonicalization(_ c: String) -> (String?, String?) {
        let parts = c.lowercased().split(separator: "/").map(String.init)
        let known: Set<String> = ["simple", "relaxed"]
        let header = parts.first.flatMap { known.contains($0) ? $0 : nil }
        let body = parts.count > 1 ? (known.contains(parts[1]) ? parts[1] : nil) : "simple"
        return (parts.count <= 2 ? header : nil, body)
    }

    /// The "simple" body (§3.4.3): empty lines at the end removed, a CRLF ending the last
    /// line; an empty body is one CRLF.
    static func simpleBody(_ body: ArraySlice<UInt8>) -> [UInt8] {
        var end = body.endIndex
        while end - body.startIndex >= 2 && body[end - 2] == 0x0D && body[end - 1] == 0x0A {
            end -= 2
        }
        return Array(body[..<end]) + [0x0D, 0x0A]
    }

    static func endsInCRLF(_ bytes: [UInt8]) -> Bool { bytes.suffix(2).elementsEqual([13, 10]) }

    /// The signature field with the value of its b= tag removed (§3.7), everything else,
    /// including the final CRLF, as it was.
    static func withoutSignatureValue(_ field: ArraySlice<UInt8>) -> [UInt8] {
        guard let colon = field.firstIndex(of: 0x3A) else { return Array(field) }
        var out = Array(field[...colon])
        var i = colon + 1
        let end = endsInCRLF(Array(field.suffix(2))) ? field.endIndex - 2 : field.endIndex
        while i < end {
            let tagEnd = field[i..<end].firstIndex(of: 0x3B) ?? end
            let tag = field[i..<tagEnd]
            if let eq = tag.firstIndex(of: 0x3D),
               String(decoding: tag[..<eq], as: UTF8.self)
                   .trimmingCharacters(in: .whitespacesAndNewlines) == "b" {
                out += field[i...eq]
            } else {
                out += tag
            }
            if tagEnd < end { out.append(0x3B) }
            i = tagEnd + 1
        }
        out += field[end...]
        return out
    }

    /// The public key of a key record (§3.6.1), if it suits `algorithm`; nil for a revoked
    /// key (empty p=), another key type or a record that is not DKIM1.
    static func publicKey(_ record: String, algorithm: String) -> VerifyingKey? {
        let tags = Self.tags(record)
        if let v = tags["v"], v != "DKIM1" { return nil }
        if let h = tags["h"], !h.split(separator: ":").contains(where: {
            $0.trimmingCharacters(in: .whitespaces) == "sha256" }) { return nil }
        let k = (tags["k"] ?? "rsa").lowercased()
        guard algorithm.hasPrefix(k + "-"),
              let p = tags["p"], let der = Data(base64Encoded: noSpace(p)), !der.isEmpty
        else { return nil }
        return k == "ed25519" ? VerifyingKey(ed25519Raw: Array(der))
            : VerifyingKey(rsaDER: Array(der))
    }
}
