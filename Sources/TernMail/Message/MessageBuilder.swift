// Turns a validated send request into the RFC 5322 message Tern stores and sends: CRLF line
// endings, the header fields Tern owns first (addresses with their display names), the
// client's custom fields after them, and the MIME tree of `structure` (MIMEPart.swift
// chooses each part's transfer encoding).

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
        head += HeaderWriter.mailbox("From", name: request.fromName,
                                     address: headerForm(request.from))
        if let replyTo = request.replyTo {
            head += HeaderWriter.mailbox("Reply-To", name: request.replyToName,
                                         address: headerForm(replyTo))
        }
        head += HeaderWriter.mailbox("To", name: request.toName, address: headerForm(request.to))
        if let subject = request.subject { head += HeaderWriter.unstructured("Subject", subject) }
        head += "MIME-Version: 1.0\r\n"

        let (fields, body) = structure(request, id: id).rendered()
        head += fields
        for field in request.headers {
            head += HeaderWriter.unstructured(field.name, field.value)
        }
        return Array((head + "\r\n").utf8) + body
    }

    /// The MIME tree of a request (RFC 2046): one text part, or text and HTML as
    /// multipart/alternative; an HTML part with inline attachments goes in a
    /// multipart/related with them (RFC 2387), and attachments make the whole the first part
    /// of a multipart/mixed. Inline attachments without HTML to show them are plain
    /// attachments.
    static func structure(_ request: SendRequest, id: String) -> MIMEPart {
        let inline = request.html == nil ? [] : request.attachments.filter {
            $0.contentID != nil
        }
        var html = request.html.map { MIMEPart.text($0, subtype: "html") }
        if let page = html, !inline.isEmpty {
            html = .multipart(subtype: "related", boundary: MIMEPart.boundary("rel", id: id),
                              parameters: [(name: "type", value: "text/html")],
                              parts: [page] + inline.map(MIMEPart.attachment))
        }
        let text = request.text.map { MIMEPart.text($0, subtype: "plain") }
        var root: MIMEPart
        switch (text, html) {
        case let (text?, html?):
            root = .multipart(subtype: "alternative", boundary: MIMEPart.boundary("alt", id: id),
                              parameters: [], parts: [text, html])
        case let (text?, nil): root = text
        case let (nil, html?): root = html
        case (nil, nil):
            // SendRequest guarantees a body; an empty text part keeps the message valid.
            root = MIMEPart.text("", subtype: "plain")
        }
        let files = inline.isEmpty ? request.attachments
            : request.attachments.filter { $0.contentID == nil }
        if !files.isEmpty {
            root = .multipart(subtype: "mixed", boundary: MIMEPart.boundary("mix", id: id),
                              parameters: [], parts: [root] + files.map(MIMEPart.attachment))
        }
        return root
    }

    /// 7bit (RFC 2045 §2.7) allows only ASCII without NUL or lone CR/LF, in lines of at most
    /// 998 octets; anything else is sent quoted-printable or base64.
    static func needsEncoding(_ text: [UInt8]) -> Bool {
        // One pass over the bytes for both questions, eight at a time while they are
        // printable ASCII: a body is walked several times on its way in.
        text.withUnsafeBytes { raw in
            let n = raw.count
            var i = 0, line = 0
            while i < n {
                if i + 8 <= n {
                    let w = raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                    // Below 0x80, a lane is at least 0x20 when adding 0x60 sets its top bit.
                    let atLeastSpace = (w & 0x7F7F_7F7F_7F7F_7F7F) &+ 0x6060_6060_6060_6060
                    if atLeastSpace & ~w & 0x8080_8080_8080_8080 == 0x8080_8080_8080_8080 {
                        line += 8
                        if line > MessageBody.maxLineLength { return true }
                        i += 8
                        continue
                    }
                }
                for b in UnsafeRawBufferPointer(rebasing: raw[i..<min(i + 8, n)]) {
                    if b == 0x0D || b == 0x0A {
                        line = 0
                    } else if (b >= 0x20 && b < 0x80) || b == 0x09 {
                        line += 1
                        if line > MessageBody.maxLineLength { return true }
                    } else {
                        return true
                    }
                }
                i += 8
            }
            return false
        }
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
