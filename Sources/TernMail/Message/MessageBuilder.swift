// Turns a validated send request into the RFC 5322 message Tern stores and sends: CRLF line
// endings, the header fields Tern owns first, the client's custom fields after them, and MIME
// bodies in 7bit when they are plain short-lined ASCII and quoted-printable otherwise.

import Foundation

public enum MessageBuilder {
    /// An address as a header field shows it: with an ASCII local part, the domain in
    /// A-labels, which every reader understands (RFC 5890 §2.3.2.1); a UTF-8 local part can
    /// only travel as RFC 6532 UTF-8, so its domain stays in U-labels beside it.
    static func headerForm(_ address: EmailAddress) -> String {
        address.asciiForm ?? address.description
    }

    /// The complete message for `request`, accepted as message `id` at `now` by `hostname`;
    /// with `cfbl`, its RFC 9477 fields too (before signing, so DKIM covers them).
    public static func build(_ request: SendRequest, id: String, now: Date, hostname: String,
                             cfbl: CFBL? = nil) -> [UInt8]
    {
        let messageID = "<" + id + "@" + hostname.lowercased() + ">"
        let feedback = cfbl?.fields(for: id) ?? ""
        if let raw = request.raw {
            return completeRaw(Array(raw.utf8), messageID: messageID, now: now,
                               feedback: feedback)
        }
        var head = ""
        head += "Date: " + MailDate.string(from: now) + "\r\n"
        head += "Message-ID: " + messageID + "\r\n"
        head += feedback
        head += "From: " + headerForm(request.from) + "\r\n"
        if let replyTo = request.replyTo { head += "Reply-To: " + headerForm(replyTo) + "\r\n" }
        head += "To: " + headerForm(request.to) + "\r\n"
        if let subject = request.subject { head += HeaderWriter.unstructured("Subject", subject) }
        head += "MIME-Version: 1.0\r\n"

        var body: [UInt8] = []
        switch (request.text, request.html) {
        case let (text?, html?):
            // RFC 2046 §5.1.1: "=_" cannot occur in quoted-printable output, and the id makes
            // the boundary unique to this message.
            let boundary = "=_tern_" + id
            head += "Content-Type: multipart/alternative; boundary=\"" + boundary + "\"\r\n"
            body += Array("--\(boundary)\r\n".utf8)
            body += entity(text, subtype: "plain")
            body += Array("\r\n--\(boundary)\r\n".utf8)
            body += entity(html, subtype: "html")
            body += Array("\r\n--\(boundary)--\r\n".utf8)
        case let (text?, nil):
            body = part(text, subtype: "plain", head: &head)
        case let (nil, html?):
            body = part(html, subtype: "html", head: &head)
        case (nil, nil):
            // SendRequest guarantees a body; an empty text part keeps the message valid.
            body = part("", subtype: "plain", head: &head)
        }
        for field in request.headers {
            head += HeaderWriter.unstructured(field.name, field.value)
        }
        return Array((head + "\r\n").utf8) + body
    }

    /// A MIME entity: its Content-Type and Content-Transfer-Encoding fields, an empty line and
    /// the encoded content (ending in CRLF).
    private static func entity(_ content: String, subtype: String) -> [UInt8] {
        var head = ""
        let body = part(content, subtype: subtype, head: &head)
        return Array((head + "\r\n").utf8) + body
    }

    /// Appends the part's fields to `head` and returns its encoded content.
    private static func part(_ content: String, subtype: String, head: inout String)
        -> [UInt8]
    {
        var text = MessageBody.normalizeLineEndings(Array(content.utf8))
        if !text.isEmpty && text.last != 0x0A { text += [0x0D, 0x0A] }
        head += "Content-Type: text/\(subtype); charset=utf-8\r\n"
        if needsEncoding(text) {
            head += "Content-Transfer-Encoding: quoted-printable\r\n"
            return QuotedPrintable.encode(text)
        }
        head += "Content-Transfer-Encoding: 7bit\r\n"
        return text
    }

    /// 7bit (RFC 2045 §2.7) allows only ASCII without NUL or lone CR/LF, in lines of at most
    /// 998 octets; anything else is sent quoted-printable.
    static func needsEncoding(_ text: [UInt8]) -> Bool {
        for b in text where b >= 0x80 || (b < 0x20 && b != 0x09 && b != 0x0D && b != 0x0A) {
            return true
        }
        return MessageBody.longestLine(text) > MessageBody.maxLineLength
    }

    /// A client's raw message with CRLF line endings, plus Date and Message-ID fields in front
    /// when it has none (RFC 5322 §3.6 requires Date; Message-ID lets replies and bounces
    /// find the message).
    static func completeRaw(_ raw: [UInt8], messageID: String, now: Date,
                            feedback: String = "") -> [UInt8] {
        let message = MessageBody.normalizeLineEndings(raw)
        let section = HeaderSection.parse(message[...])
        var added = ""
        if section?.contains("Date") != true {
            added += "Date: " + MailDate.string(from: now) + "\r\n"
        }
        if section?.contains("Message-ID") != true {
            added += "Message-ID: " + messageID + "\r\n"
        }
        // A raw message's own CFBL fields are the submitter's choice and stay alone.
        let ownCFBL = section?.contains("CFBL-Address") == true
            || section?.contains("CFBL-Feedback-ID") == true
        if !ownCFBL {
            added += feedback
        }
        return Array(added.utf8) + message
    }
}
