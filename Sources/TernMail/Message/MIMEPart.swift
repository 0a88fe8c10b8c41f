// The MIME structure of a message being built (RFC 2045, RFC 2046): leaves that carry encoded
// content and multiparts that hold them between boundary lines.
//
// Boundaries start with "=_", which neither quoted-printable nor base64 output can contain,
// and a part is sent 7bit only when its text holds no "=_" either, so no boundary can occur
// inside any part (RFC 2046 §5.1.1). Each multipart of a message has its own kind in its
// boundary, and none is a prefix of another.

import Foundation

indirect enum MIMEPart {
    /// Header fields (each ending in CRLF) and the encoded content, ending in CRLF.
    case leaf(fields: String, content: [UInt8])
    /// multipart/<subtype>; `parameters` follow the boundary in its Content-Type.
    case multipart(subtype: String, boundary: String,
                   parameters: [(name: String, value: String)], parts: [MIMEPart])

    /// The entity's header fields and its body.
    func rendered() -> (fields: String, body: [UInt8]) {
        switch self {
        case let .leaf(fields, content):
            return (fields, content)
        case let .multipart(subtype, boundary, parameters, parts):
            let fields = HeaderWriter.parameterized(
                "Content-Type", "multipart/" + subtype,
                [(name: "boundary", value: boundary)] + parameters)
            var body: [UInt8] = []
            for part in parts {
                let (partFields, partBody) = part.rendered()
                body += Array("--\(boundary)\r\n\(partFields)\r\n".utf8)
                body += partBody
                body += [0x0D, 0x0A]
            }
            body += Array("--\(boundary)--\r\n".utf8)
            return (fields, body)
        }
    }

    /// The boundary of one kind of multipart in message `id`.
    static func boundary(_ kind: String, id: String) -> String { "=_tern_" + kind + "_" + id }

    // MARK: Leaves

    /// A text/<subtype> part in UTF-8: line ends made CRLF, a final CRLF added, and the
    /// transfer encoding chosen by `encode`.
    static func text(_ content: String, subtype: String) -> MIMEPart {
        var text = MessageBody.normalizeLineEndings(Array(content.utf8))
        if !text.isEmpty && text.last != 0x0A { text += [0x0D, 0x0A] }
        let (encoding, body) = encode(text)
        return .leaf(fields: "Content-Type: text/\(subtype); charset=utf-8\r\n"
                         + "Content-Transfer-Encoding: \(encoding)\r\n",
                     content: body)
    }

    /// An attachment, always base64: its bytes are the client's, whatever they are.
    static func attachment(_ a: Attachment) -> MIMEPart {
        var fields = HeaderWriter.parameterized("Content-Type", a.mediaType,
                                                a.parameters + [(name: "name", value: a.filename)])
        // RFC 2183: an inline part is shown in place (the HTML refers to it by Content-ID).
        fields += HeaderWriter.parameterized("Content-Disposition",
                                             a.contentID == nil ? "attachment" : "inline",
                                             [(name: "filename", value: a.filename)])
        if let id = a.contentID { fields += "Content-ID: <" + id + ">\r\n" }
        fields += "Content-Transfer-Encoding: base64\r\n"
        return .leaf(fields: fields, content: base64Lines(a.content))
    }

    // MARK: Transfer encodings

    /// 7bit for ASCII text in lines of at most 998 octets that cannot hold a boundary;
    /// otherwise quoted-printable (readable, for mostly-Latin text), unless base64 is clearly
    /// shorter (text mostly outside ASCII, which quoted-printable would triple).
    static func encode(_ text: [UInt8]) -> (name: String, body: [UInt8]) {
        if !MessageBuilder.needsEncoding(text) && !containsBoundaryStart(text) {
            return ("7bit", text)
        }
        let quoted = QuotedPrintable.encode(text)
        let base64Size = (text.count + 2) / 3 * 4 + ((text.count + 56) / 57) * 2
        // A quarter's slack keeps short Latin text readable where base64 would save a byte.
        if quoted.count <= base64Size + base64Size / 4 { return ("quoted-printable", quoted) }
        return ("base64", base64Lines(text))
    }

    static func containsBoundaryStart(_ text: [UInt8]) -> Bool {
        text.withUnsafeBytes { raw in
            var i = 0
            while i + 1 < raw.count {
                // No "=" in the next eight bytes: no "=_" starts among them.
                if i + 8 <= raw.count, !MessageBody.hasZeroByte(
                    raw.loadUnaligned(fromByteOffset: i, as: UInt64.self) ^ 0x3D3D_3D3D_3D3D_3D3D)
                {
                    i += 8
                    continue
                }
                if raw[i] == 0x3D && raw[i + 1] == 0x5F { return true }  // "=_"
                i += 1
            }
            return false
        }
    }

    /// RFC 2045 §6.8: base64 in lines of 76 characters, each ending in CRLF.
    static func base64Lines(_ bytes: [UInt8]) -> [UInt8] {
        let encoded = Array(Data(bytes).base64EncodedString().utf8)
        var out: [UInt8] = []
        out.reserveCapacity(encoded.count + encoded.count / 38 + 2)
        var i = 0
        while i < encoded.count {
            let end = min(i + 76, encoded.count)
            out += encoded[i..<end]
            out += [0x0D, 0x0A]
            i = end
        }
        return out
    }
}
