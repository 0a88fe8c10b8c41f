// Files attached to a send request: `[{"filename", "content_type", "content" (base64),
// "content_id"}]`. Each is checked here, naming `attachments[i].<field>`, so the builder
// can write every one without further checks. An attachment with a content_id is inline:
// the HTML part shows it as <img src="cid:...">, RFC 2392.

import Foundation

public struct Attachment: Sendable, Equatable {
    /// The name as the reader's program offers to save it; no path, no controls.
    public var filename: String
    /// Lowercased "type/subtype"; application/octet-stream when the request gave none.
    public var mediaType: String
    /// Parameters of the content type (charset, ...), names lowercased, sorted by name.
    public var parameters: [(name: String, value: String)]
    /// The decoded content.
    public var content: [UInt8]
    /// Without angle brackets; set for an inline attachment.
    public var contentID: String?

    public static func == (a: Attachment, b: Attachment) -> Bool {
        a.filename == b.filename && a.mediaType == b.mediaType && a.content == b.content
            && a.contentID == b.contentID
            && a.parameters.map { [$0.name, $0.value] } == b.parameters.map { [$0.name, $0.value] }
    }

    public static let maxCount = 100
    /// Octets of a file name in UTF-8; most file systems allow 255.
    public static let maxFilenameBytes = 255
    static let knownFields: Set<String> = ["filename", "content_type", "content", "content_id"]

    /// The attachments of a request, from its JSON value.
    static func decodeList(_ value: Any?) throws(ValidationError) -> [Attachment] {
        guard let value else { return [] }
        guard let list = value as? [Any] else {
            throw ValidationError(field: "attachments", message: "must be an array of objects")
        }
        guard list.count <= maxCount else {
            throw ValidationError(field: "attachments", message: "has \(list.count) items; "
                + "the limit is \(maxCount)")
        }
        var attachments: [Attachment] = []
        var contentIDs: Set<String> = []
        for (i, item) in list.enumerated() {
            let attachment = try Attachment(json: item, field: "attachments[\(i)]")
            if let id = attachment.contentID, !contentIDs.insert(id.lowercased()).inserted {
                throw ValidationError(field: "attachments[\(i)].content_id", message: "is "
                    + "the content_id of an earlier attachment too")
            }
            attachments.append(attachment)
        }
        return attachments
    }

    init(json: Any, field: String) throws(ValidationError) {
        guard let object = (json as? [String: Any])?.filter({ !($0.value is NSNull) }) else {
            throw ValidationError(field: field, message: "must be an object with filename, "
                + "content_type and content")
        }
        if let unknown = object.keys.filter({ !Attachment.knownFields.contains($0) }).min() {
            throw ValidationError(field: field + "." + unknown, message: "is not a known field")
        }
        func string(_ name: String, required: Bool) throws(ValidationError) -> String? {
            guard let value = object[name] else {
                if required {
                    throw ValidationError(field: field + "." + name, message: "is required")
                }
                return nil
            }
            guard let text = value as? String else {
                throw ValidationError(field: field + "." + name, message: "must be a string")
            }
            return text
        }
        filename = try Attachment.checkFilename(string("filename", required: true)!,
                                                field: field + ".filename")
        (mediaType, parameters) = try Attachment.checkContentType(
            string("content_type", required: false) ?? "application/octet-stream",
            field: field + ".content_type")
        guard let content = Attachment.base64Decode(try string("content", required: true)!)
        else {
            throw ValidationError(field: field + ".content", message: "is not valid base64")
        }
        self.content = content
        contentID = try string("content_id", required: false).map {
            (id) throws(ValidationError) in
            try Attachment.checkContentID(id, field: field + ".content_id")
        }
    }

    /// A name without a path (no "/" or "\"), controls or bidirectional overrides (which
    /// can show "exe.pdf" for "fdp.exe"), not "." or "..", at most 255 octets.
    static func checkFilename(_ name: String, field: String) throws(ValidationError) -> String {
        let name = name.trimmingCharacters(in: .whitespaces)
        guard !name.isEmpty, name != ".", name != ".." else {
            throw ValidationError(field: field, message: "must name a file")
        }
        if name.contains("/") || name.contains("\\") {
            throw ValidationError(field: field, message: "must be a file name without a path "
                + "(no / or \\)")
        }
        if name.unicodeScalars.contains(where: {
            EmailAddress.isControl($0) || EmailAddress.isBidiControl($0)
        }) {
            throw ValidationError(field: field, message: "must not contain control characters")
        }
        guard name.utf8.count <= maxFilenameBytes else {
            throw ValidationError(field: field, message: "is longer than \(maxFilenameBytes) "
                + "octets")
        }
        return name
    }

    /// RFC 2045 §5.1: type "/" subtype, both tokens, then "; name=value" parameters with
    /// printable ASCII values. Composite types are refused: multipart/* is Tern's own
    /// structure, and message/* may not be base64-encoded (RFC 2046 §5.2.1).
    static func checkContentType(_ text: String, field: String)
        throws(ValidationError) -> (String, [(name: String, value: String)])
    {
        guard text.unicodeScalars.allSatisfy({ (0x20...0x7E).contains($0.value) }),
              let parsed = ContentType(text), isToken(parsed.type), isToken(parsed.subtype)
        else {
            throw ValidationError(field: field, message: "is not a media type such as "
                + "application/pdf (RFC 2045 §5.1)")
        }
        if parsed.type == "multipart" || parsed.type == "message" {
            throw ValidationError(field: field, message: "\(parsed.mimeType) cannot be "
                + "attached; send it as application/octet-stream")
        }
        // Every ";" outside quotes must have started a parameter that parsed, once.
        var separators = 0, quoted = false, escaped = false
        for c in text.unicodeScalars {
            if escaped { escaped = false; continue }
            if c == "\\" && quoted { escaped = true } else if c == "\"" { quoted.toggle() }
            if c == ";" && !quoted { separators += 1 }
        }
        guard separators == parsed.parameters.count,
              parsed.parameters.keys.allSatisfy(isToken)
        else {
            throw ValidationError(field: field, message: "has a malformed or repeated "
                + "parameter (RFC 2045 §5.1)")
        }
        // The file's name is written from filename; a second one could contradict it.
        let parameters = parsed.parameters.filter { $0.key != "name" }.sorted { $0.key < $1.key }
            .map { (name: $0.key, value: $0.value) }
        return (parsed.mimeType, parameters)
    }

    /// RFC 2045 §5.1 token: printable ASCII without spaces and tspecials.
    static func isToken(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy {
            (33...126).contains($0) && !"()<>@,;:\\\"/[]?=".utf8.contains($0)
        }
    }

    /// RFC 2392 content-id: an addr-spec-like id, written as <id>; the brackets are
    /// optional in the request. Dot-atom characters and "@" only, so it can never break
    /// out of its field.
    static func checkContentID(_ text: String, field: String) throws(ValidationError) -> String {
        var id = text.trimmingCharacters(in: .whitespaces)
        if id.hasPrefix("<") && id.hasSuffix(">") && id.count >= 2 {
            id = String(id.dropFirst().dropLast())
        }
        guard (1...200).contains(id.utf8.count),
              id.unicodeScalars.allSatisfy({ $0 == "." || $0 == "@" || ($0.value < 0x80
                  && EmailAddress.isAtext($0)) })
        else {
            throw ValidationError(field: field, message: "must be 1 to 200 characters of "
                + "letters, digits, ., @ and !#$%&'*+-/=?^_`{|}~ (RFC 2392)")
        }
        return id
    }

    /// Standard base64 (RFC 4648 §4) with padding; line breaks and spaces are skipped, as
    /// clients often wrap it. Anything else, URL-safe characters included, fails.
    static func base64Decode(_ text: String) -> [UInt8]? {
        let compact = text.utf8.filter { $0 != 0x0D && $0 != 0x0A && $0 != 0x20 && $0 != 0x09 }
        guard compact.count % 4 == 0 else { return nil }
        return Data(base64Encoded: Data(compact)).map { Array($0) }
    }
}
