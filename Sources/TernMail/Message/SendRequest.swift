// The validated form of a `POST /v1/send` body. Every check names the JSON field it concerns,
// so the API can answer 400 with something a client can act on; whatever passes here can be
// built into a message without further checks.

import Foundation
import TernCore

/// A request field that failed validation.
public struct ValidationError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The JSON field, such as "to" or "headers.X-Tag"; "body" for the document as a whole.
    public let field: String
    public let message: String

    public init(field: String, message: String) {
        self.field = field
        self.message = message
    }

    public var description: String { field + ": " + message }
}

/// One metadata value: JSON string, number or boolean.
public enum MetadataValue: Sendable, Hashable {
    case string(String)
    case integer(Int64)
    case number(Double)
    case bool(Bool)
}

public struct SendRequest: Sendable, Equatable {
    /// Header From and the address the client sends as.
    public var from: EmailAddress
    /// The one recipient.
    public var to: EmailAddress
    public var replyTo: EmailAddress?
    /// Display names shown beside from, to and reply_to in the header; nil when not given.
    public var fromName: String?
    public var toName: String?
    public var replyToName: String?
    public var subject: String?
    public var text: String?
    public var html: String?
    /// A complete RFC 5322 message; when set, subject, text, html, headers, reply_to and
    /// attachments are not.
    public var raw: String?
    /// Custom header fields, sorted by name (JSON objects have no order).
    public var headers: [HeaderField]
    public var org: String
    public var pool: String
    public var metadata: [String: MetadataValue]
    /// `metadata` as compact JSON with sorted keys, "{}" when there is none; echoed in events.
    public var metadataJSON: String
    /// Files to attach; empty for none.
    public var attachments: [Attachment]
    /// Short labels the client groups its mail by, echoed in status and events.
    public var tags: [String]
    /// `tags` as a compact JSON array, "[]" when there are none.
    public var tagsJSON: String
    /// The earliest time the message may go; nil for at once (a past time is taken as now).
    public var sendAt: Date?
    /// How engaged the recipient is, 0-100; nil leaves it to the organisation's store.
    public var engagement: Int?

    // MARK: - Limits

    public static let knownFields: Set<String> = [
        "from", "to", "subject", "text", "html", "raw", "headers", "org", "pool", "metadata",
        "reply_to", "attachments", "tags", "send_at", "engagement",
    ]
    /// Fields Tern writes itself; a client may not supply them as custom headers.
    public static let reservedHeaders: Set<String> = [
        "from", "to", "subject", "date", "message-id", "return-path", "received",
        "dkim-signature", "content-type", "content-transfer-encoding", "mime-version",
        "reply-to", "cfbl-address", "cfbl-feedback-id", "content-disposition", "content-id",
    ]
    /// Fields no submitter writes: Bcc would show the hidden recipient to every reader,
    /// Delivered-To is trace written at delivery, Content-Length frames mailboxes, not mail,
    /// and the Resent-* fields (RFC 5322 §3.6.6) record a re-sending, which a request is not.
    /// Authentication results (RFC 8601), ARC sets (RFC 8617) and Received-SPF are written
    /// by receivers about what they checked; from a sender they would be forged verdicts.
    /// X-Original-To and Envelope-To are delivery trace like Delivered-To.
    public static let envelopeHeaders: Set<String> = [
        "bcc", "delivered-to", "content-length", "authentication-results", "arc-seal",
        "arc-message-signature", "arc-authentication-results", "received-spf",
        "x-original-to", "envelope-to",
    ]

    static func isEnvelopeHeader(_ name: String) -> Bool {
        let lower = name.lowercased()
        return envelopeHeaders.contains(lower) || lower.hasPrefix("resent-")
    }

    public static let maxMetadataBytes = 4096
    public static let maxHeaders = 50
    /// A subject must fit one line after "Subject: " (RFC 5322 §2.1.1's 998 octets).
    public static let maxSubjectBytes = 998 - "Subject: ".utf8.count
    public static let defaultName = "default"
    public static let maxTags = 10
    public static let maxTagBytes = 64
    /// How far ahead send_at may be: further than a month is more likely a mistake (a year
    /// typed wrong) than a plan, and the record would wait in Redis all that time.
    public static let maxScheduleAhead: TimeInterval = 30 * 86400

    // MARK: - Decoding

    public static func decode(_ body: Data, now: Date = Date())
        throws(ValidationError) -> SendRequest
    {
        try SendRequest(json: jsonObject(body: Array(body)), now: now)
    }

    /// A request body as a JSON object (a send, or a batch of them).
    public static func jsonObject(body: [UInt8]) throws(ValidationError) -> [String: Any] {
        let parsed: Any
        do {
            // Fragments allowed, so that a bare string or number is told it is not an object
            // rather than that it is not JSON.
            parsed = try JSONReading.value(body, fragments: true)
        } catch {
            throw ValidationError(field: "body", message: error.reason)
        }
        guard let object = parsed as? [String: Any] else {
            throw ValidationError(field: "body", message: "must be a JSON object")
        }
        return object
    }

    public static func decode(_ body: [UInt8], now: Date = Date())
        throws(ValidationError) -> SendRequest
    {
        try decode(Data(body), now: now)
    }

    /// Validates an already-decoded JSON object, field by field; `now` judges send_at.
    public init(json: [String: Any], now: Date = Date()) throws(ValidationError) {
        let unknown = json.keys.filter { !SendRequest.knownFields.contains($0) }.sorted()
        if let first = unknown.first {
            throw ValidationError(field: first, message: unknown.count == 1
                ? "is not a known field" : "unknown fields: " + unknown.joined(separator: ", "))
        }
        // JSON null is taken as absent, as most client libraries write absent fields that way.
        let json = json.filter { !($0.value is NSNull) }

        let sender = try SendRequest.address(json, "from", required: true)!
        let recipient = try SendRequest.address(json, "to", required: true)!
        let replyAddress = try SendRequest.address(json, "reply_to", required: false)
        (from, fromName) = (sender.address, sender.name)
        (to, toName) = (recipient.address, recipient.name)
        (replyTo, replyToName) = (replyAddress?.address, replyAddress?.name)
        try SendRequest.checkDeliverable(to)

        subject = try SendRequest.string(json, "subject")
        if let subject {
            if subject.unicodeScalars.contains(where: { $0 == "\r" || $0 == "\n" }) {
                throw ValidationError(field: "subject", message: "must not contain CR or LF")
            }
            if subject.unicodeScalars.contains(where: SendRequest.isForbiddenInHeader) {
                throw ValidationError(field: "subject", message: "must not contain controls")
            }
            if subject.utf8.count > SendRequest.maxSubjectBytes {
                throw ValidationError(field: "subject", message: "is longer than "
                    + "\(SendRequest.maxSubjectBytes) octets")
            }
        }
        text = try SendRequest.body(json, "text")
        html = try SendRequest.body(json, "html")
        raw = try SendRequest.string(json, "raw")
        headers = try SendRequest.headerFields(json["headers"])
        attachments = try Attachment.decodeList(json["attachments"])

        if let raw {
            for field in ["subject", "text", "html", "headers", "reply_to", "attachments"]
            where json[field] != nil {
                throw ValidationError(field: field, message: "cannot be combined with raw; put "
                    + "it in the raw message")
            }
            try SendRequest.checkRaw(raw)
        } else if text == nil && html == nil {
            throw ValidationError(field: "text", message: "one of text, html or raw is required")
        }

        org = try SendRequest.name(json, "org")
        pool = try SendRequest.name(json, "pool")
        (metadata, metadataJSON) = try SendRequest.metadata(json["metadata"])
        engagement = try SendRequest.engagement(json["engagement"])
        (tags, tagsJSON) = try SendRequest.tags(json["tags"])
        sendAt = try SendRequest.sendAt(json["send_at"], now: now)
    }

    /// The field that adds most to the built message, named when it is too large: base64
    /// makes an attachment a third larger than its bytes.
    public var largestField: String {
        var sizes = [("text", text?.utf8.count ?? 0), ("html", html?.utf8.count ?? 0),
                     ("raw", raw?.utf8.count ?? 0)]
        for (i, a) in attachments.enumerated() {
            sizes.append(("attachments[\(i)].content", a.content.count / 3 * 4))
        }
        return sizes.max { $0.1 < $1.1 }?.0 ?? "body"
    }

    // MARK: - Field checks

    private static func string(_ json: [String: Any], _ field: String)
        throws(ValidationError) -> String?
    {
        guard let value = json[field] else { return nil }
        guard let string = value as? String else {
            throw ValidationError(field: field, message: "must be a string")
        }
        return string
    }

    private static func address(_ json: [String: Any], _ field: String, required: Bool)
        throws(ValidationError) -> NamedAddress?
    {
        guard let value = json[field] else {
            if required { throw ValidationError(field: field, message: "is required") }
            return nil
        }
        if value is [Any] {
            throw ValidationError(field: field, message: "must be one address as a string; "
                + "send one request per recipient")
        }
        return try NamedAddress.decode(value, field: field)
    }

    /// A recipient Tern could never deliver to is refused now rather than bounced later:
    /// address literals (the sender resolves MX records, and an IP address in the envelope
    /// would bypass every check on where mail may go) and `localhost` names, which RFC 6761
    /// §6.3 reserves for the sending machine itself.
    static func checkDeliverable(_ recipient: EmailAddress) throws(ValidationError) {
        if recipient.isAddressLiteral {
            throw ValidationError(field: "to", message: "address literals such as "
                + "\(recipient.domain) are not supported as recipients; use a domain name")
        }
        let domain = recipient.asciiDomain
        if domain == "localhost" || domain.hasSuffix(".localhost") {
            throw ValidationError(field: "to", message: "\(domain) names this machine "
                + "(RFC 6761); mail to it is not sent")
        }
    }

    /// Text and HTML bodies: any text but NUL, which RFC 2045 §2.7 keeps out of mail.
    private static func body(_ json: [String: Any], _ field: String)
        throws(ValidationError) -> String?
    {
        guard var value = try string(json, field) else { return nil }
        // memchr over the UTF-8 bytes: a body may be megabytes, and stepping through the
        // String's UTF8View costs several times as much.
        let hasNUL = value.withUTF8 { bytes in
            bytes.baseAddress.map { memchr($0, 0, bytes.count) != nil } ?? false
        }
        if hasNUL {
            throw ValidationError(field: field, message: "must not contain NUL")
        }
        return value
    }

    /// Controls other than tab have no place in a header field; CR and LF would start a new
    /// field (header injection), NUL is refused by many servers.
    /// C1 controls (U+0080-U+009F) are no text either; some readers take U+0085 as a line end.
    static func isForbiddenInHeader(_ s: Unicode.Scalar) -> Bool {
        (s.value < 0x20 && s != "\t") || (0x7F...0x9F).contains(s.value)
    }

    /// Display names and custom field values also refuse the invisible bidirectional
    /// controls, which make text read as other text (as in addresses and file names). A
    /// subject keeps them: right-to-left subjects may need the marks and isolates.
    static func isForbiddenInName(_ s: Unicode.Scalar) -> Bool {
        isForbiddenInHeader(s) || EmailAddress.isBidiControl(s)
    }

    private static func headerFields(_ value: Any?) throws(ValidationError) -> [HeaderField] {
        guard let value else { return [] }
        guard let object = value as? [String: Any] else {
            throw ValidationError(field: "headers", message: "must be an object of name: value")
        }
        guard object.count <= maxHeaders else {
            throw ValidationError(field: "headers", message: "at most \(maxHeaders) fields")
        }
        var fields: [HeaderField] = []
        for name in object.keys.sorted() {
            let field = "headers." + name
            guard HeaderField.isValidName(name) else {
                throw ValidationError(field: field, message: "is not a valid header field name "
                    + "(printable ASCII without spaces or colons, RFC 5322 §3.6.8)")
            }
            guard !isEnvelopeHeader(name) else {
                throw ValidationError(field: field, message: "is an envelope or trace field "
                    + "and cannot be supplied; the recipient is the to field")
            }
            guard !reservedHeaders.contains(name.lowercased()) else {
                throw ValidationError(field: field, message: name.lowercased() == "reply-to"
                    ? "use the reply_to field" : "is set by Tern and cannot be supplied")
            }
            guard let text = object[name] as? String else {
                throw ValidationError(field: field, message: "must be a string")
            }
            if text.unicodeScalars.contains(where: { $0 == "\r" || $0 == "\n" || $0 == "\0" }) {
                throw ValidationError(field: field, message: "must not contain CR, LF or NUL")
            }
            if text.unicodeScalars.contains(where: isForbiddenInName) {
                throw ValidationError(field: field, message: "must not contain controls "
                    + "(C0, C1, or bidirectional ones such as U+202E)")
            }
            // RFC 5322 §2.1.1: the field must fit one 998-octet line even unfolded, so
            // folding is a nicety and never a necessity.
            if name.utf8.count + 2 + text.utf8.count > HeaderWriter.hardLimit {
                throw ValidationError(field: field, message: "name and value exceed 998 octets")
            }
            fields.append(HeaderField(name: name, value: text))
        }
        return fields
    }

    /// org and pool: [a-z0-9_-]{1,64}, "default" when absent.
    private static func name(_ json: [String: Any], _ field: String)
        throws(ValidationError) -> String
    {
        guard let value = try string(json, field) else { return defaultName }
        guard (1...64).contains(value.utf8.count),
              value.utf8.allSatisfy({ (97...122).contains($0) || (48...57).contains($0)
                                      || $0 == 95 || $0 == 45 })
        else {
            throw ValidationError(field: field, message: "must be 1 to 64 characters of a-z, "
                + "0-9, _ and -")
        }
        return value
    }

    private static func metadata(_ value: Any?)
        throws(ValidationError) -> ([String: MetadataValue], String)
    {
        guard let value else { return ([:], "{}") }
        guard let object = value as? [String: Any] else {
            throw ValidationError(field: "metadata", message: "must be an object")
        }
        var result: [String: MetadataValue] = [:]
        for (key, item) in object {
            let field = "metadata." + key
            guard !key.isEmpty else {
                throw ValidationError(field: "metadata", message: "keys must not be empty")
            }
            // Metadata reaches every event, webhook and operator's screen: keys are names,
            // and no value may hide text behind bidirectional controls or carry a NUL.
            guard !key.unicodeScalars.contains(where: isForbiddenInName) else {
                throw ValidationError(field: field, message: "the key must not contain control "
                    + "or bidirectional control characters")
            }
            if let string = item as? String {
                guard !string.unicodeScalars.contains(where: {
                    $0 == "\u{0}" || EmailAddress.isBidiControl($0)
                }) else {
                    throw ValidationError(field: field, message: "must not contain NUL or "
                        + "bidirectional control characters")
                }
                result[key] = .string(string)
            } else if let number = item as? NSNumber {
                // JSONSerialization gives booleans as NSNumber with the "c" (char) type.
                switch String(cString: number.objCType) {
                case "c", "B": result[key] = .bool(number.boolValue)
                case "d", "f": result[key] = .number(number.doubleValue)
                default: result[key] = .integer(number.int64Value)
                }
            } else {
                throw ValidationError(field: field, message: "must be a string, number or "
                    + "boolean")
            }
        }
        let encoded: Data
        do {
            encoded = try JSONSerialization.data(
                withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        } catch {
            throw ValidationError(field: "metadata", message: "cannot be encoded as JSON")
        }
        guard encoded.count <= maxMetadataBytes else {
            throw ValidationError(field: "metadata", message: "is \(encoded.count) bytes as "
                + "JSON; the limit is \(maxMetadataBytes)")
        }
        return (result, String(decoding: encoded, as: UTF8.self))
    }

    /// Up to `maxTags` distinct strings of 1 to 64 octets without controls.
    private static func tags(_ value: Any?) throws(ValidationError) -> ([String], String) {
        guard let value else { return ([], "[]") }
        guard let list = value as? [Any] else {
            throw ValidationError(field: "tags", message: "must be an array of strings")
        }
        guard list.count <= maxTags else {
            throw ValidationError(field: "tags", message: "has \(list.count) tags; the limit "
                + "is \(maxTags)")
        }
        var tags: [String] = []
        for (i, item) in list.enumerated() {
            let field = "tags[\(i)]"
            guard let tag = item as? String else {
                throw ValidationError(field: field, message: "must be a string")
            }
            // Tags are shown to people (ternctl, webhooks' consumers): nothing that hides or
            // reorders text, as in metadata.
            guard (1...maxTagBytes).contains(tag.utf8.count),
                  !tag.unicodeScalars.contains(where: {
                      EmailAddress.isControl($0) || EmailAddress.isBidiControl($0)
                  })
            else {
                throw ValidationError(field: field, message: "must be 1 to \(maxTagBytes) "
                    + "octets without control or bidirectional control characters")
            }
            guard !tags.contains(tag) else {
                throw ValidationError(field: field, message: "repeats an earlier tag")
            }
            tags.append(tag)
        }
        let encoded = (try? JSONSerialization.data(
            withJSONObject: tags, options: [.withoutEscapingSlashes])) ?? Data("[]".utf8)
        return (tags, String(decoding: encoded, as: UTF8.self))
    }

    /// An RFC 3339 timestamp at most `maxScheduleAhead` after `now`; nil when it is not
    /// after `now`, as "send at a time already past" can only mean at once.
    private static func sendAt(_ value: Any?, now: Date) throws(ValidationError) -> Date? {
        guard let value else { return nil }
        guard let text = value as? String, let date = RFC3339.parse(text) else {
            throw ValidationError(field: "send_at", message: "must be an RFC 3339 timestamp "
                + "such as 2026-12-24T09:00:00Z")
        }
        guard date.timeIntervalSince(now) <= maxScheduleAhead else {
            throw ValidationError(field: "send_at", message: "is more than "
                + "\(Int(maxScheduleAhead / 86400)) days ahead")
        }
        return date > now ? date : nil
    }

    /// A raw message must have a header section with one From field, at most one Sender,
    /// none of `envelopeHeaders` or Resent-*, no NUL, and no line over 998 octets
    /// (RFC 5322 §2.1.1): Tern sends it as given and cannot rewrap it.
    private static func checkRaw(_ raw: String) throws(ValidationError) {
        let bytes = MessageBody.normalizeLineEndings(Array(raw.utf8))
        guard !bytes.isEmpty else {
            throw ValidationError(field: "raw", message: "is empty")
        }
        guard !bytes.contains(0) else {
            throw ValidationError(field: "raw", message: "must not contain NUL")
        }
        guard let section = HeaderSection.parse(bytes[...]) else {
            throw ValidationError(field: "raw", message: "does not start with a header section")
        }
        guard section.contains("From") else {
            throw ValidationError(field: "raw", message: "has no From header field")
        }
        // RFC 5322 §3.6: one From and at most one Sender. With two, readers, filters and
        // DKIM could each take a different one as the author.
        for name in ["From", "Sender"] {
            let count = section.fields.filter {
                $0.name.caseInsensitiveCompare(name) == .orderedSame
            }.count
            if count > 1 {
                throw ValidationError(field: "raw", message: "has \(count) \(name) fields; "
                    + "RFC 5322 §3.6 allows one")
            }
        }
        // The recipient is the request's `to`; these fields would say otherwise, show a
        // hidden recipient (Bcc) or forge a receiver's trace, as in `headers`.
        if let field = section.fields.first(where: { isEnvelopeHeader($0.name) }) {
            throw ValidationError(field: "raw", message: "has a \(field.name) field, an "
                + "envelope or trace field that is not sent"
                + (field.name.lowercased() == "bcc"
                    ? " (it would show the hidden recipients to every reader)" : "")
                + "; remove it")
        }
        if let line = MessageBody.linesLonger(than: MessageBody.maxLineLength, in: bytes).first {
            throw ValidationError(field: "raw", message: "line \(line + 1) is longer than 998 "
                + "octets")
        }
    }

    /// engagement: an integer 0-100 (a boolean is not one, though JSON gives it as a number).
    private static func engagement(_ value: Any?) throws(ValidationError) -> Int? {
        guard let value else { return nil }
        guard let n = value as? NSNumber, !["c", "B"].contains(String(cString: n.objCType)),
              n.doubleValue == n.doubleValue.rounded(), (0...100).contains(n.doubleValue)
        else {
            throw ValidationError(field: "engagement", message: "must be an integer 0 to 100")
        }
        return n.intValue
    }
}
