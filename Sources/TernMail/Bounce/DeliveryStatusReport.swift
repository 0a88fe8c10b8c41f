// A minimal reader for delivery status notifications (RFC 3464) as the bounce receiver gets
// them: find the message/delivery-status part of a multipart/report (RFC 6522), possibly nested
// in other multiparts, and read its per-message and per-recipient fields.
//
// Input comes from anyone on the Internet, so every step tolerates garbage: malformed input
// gives an error value, never a crash, and nesting is bounded.

import Foundation

/// What a report says about one recipient (RFC 3464 §2.3).
public struct RecipientStatus: Sendable, Hashable {
    /// Final-Recipient, without its address type ("rfc822;").
    public var recipient: String
    /// Original-Recipient when present, without its address type.
    public var originalRecipient: String?
    /// Action, lowercased: failed, delayed, delivered, relayed or expanded (§2.3.3).
    public var action: String
    /// Status, the RFC 3463 code such as "5.1.1", without any comment (§2.3.4).
    public var status: String
    /// Diagnostic-Code without its type ("smtp;"), usually the remote server's reply.
    public var diagnostic: String?
    /// Remote-MTA without its type ("dns;").
    public var remoteMTA: String?

    public init(recipient: String, originalRecipient: String? = nil, action: String,
                status: String, diagnostic: String? = nil, remoteMTA: String? = nil)
    {
        self.recipient = recipient
        self.originalRecipient = originalRecipient
        self.action = action
        self.status = status
        self.diagnostic = diagnostic
        self.remoteMTA = remoteMTA
    }

    /// The status as a parsed code, nil when the reporter wrote something else.
    public var enhanced: EnhancedStatus? { EnhancedStatus(status) }
}

public enum DeliveryStatusError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No header section, or the top-level entity is not multipart.
    case notMultipart
    /// No message/delivery-status part anywhere in the MIME tree.
    case noDeliveryStatus
    /// A delivery-status part with no recipient group in it.
    case noRecipients

    public var description: String {
        switch self {
        case .notMultipart: return "not a multipart message"
        case .noDeliveryStatus: return "no message/delivery-status part"
        case .noRecipients: return "delivery-status part names no recipient"
        }
    }
}

public struct DeliveryStatusReport: Sendable, Hashable {
    /// Reporting-MTA without its type ("dns;").
    public var reportingMTA: String?
    /// Original-Envelope-Id (RFC 3461 ENVID) when the report carries one.
    public var originalEnvelopeID: String?
    public var recipients: [RecipientStatus]

    public init(reportingMTA: String?, originalEnvelopeID: String? = nil,
                recipients: [RecipientStatus])
    {
        self.reportingMTA = reportingMTA
        self.originalEnvelopeID = originalEnvelopeID
        self.recipients = recipients
    }

    /// Multipart nesting deeper than this is not followed; real reports use two levels.
    static let maxDepth = 8

    /// Reads the report in a whole message (headers and body, any line endings).
    public static func parse(_ message: [UInt8]) throws(DeliveryStatusError)
        -> DeliveryStatusReport
    {
        let normalized = MessageBody.normalizeLineEndings(message)
        guard let top = HeaderSection.parse(normalized[...]),
              ContentType(top.value("Content-Type") ?? "")?.type == "multipart"
        else { throw .notMultipart }
        guard let status = findStatus(normalized[...], depth: 0) else {
            throw .noDeliveryStatus
        }
        return try parseStatus(status)
    }

    // MARK: - MIME tree

    /// The decoded body of the first delivery-status entity in `entity`, depth first.
    private static func findStatus(_ entity: ArraySlice<UInt8>, depth: Int) -> [UInt8]? {
        guard depth <= maxDepth, let section = HeaderSection.parse(entity) else { return nil }
        // RFC 2045 §5.2: no Content-Type means text/plain.
        guard let type = ContentType(section.value("Content-Type") ?? "text/plain") else {
            return nil
        }
        let body = entity[section.bodyStart...]
        switch type.mimeType {
        case "message/delivery-status", "message/global-delivery-status":
            // Reports are 7bit in practice, but base64 turns up from some gateways.
            let encoding = section.value("Content-Transfer-Encoding")?.lowercased()
            if encoding == "base64" {
                return Data(base64Encoded: Data(body), options: .ignoreUnknownCharacters)
                    .map { Array($0) }
            }
            return Array(body)
        default:
            guard type.type == "multipart", let boundary = type.parameters["boundary"],
                  !boundary.isEmpty
            else { return nil }
            for part in parts(of: body, boundary: Array(boundary.utf8)) {
                if let found = findStatus(part, depth: depth + 1) { return found }
            }
            return nil
        }
    }

    /// The body parts between "--boundary" delimiter lines (RFC 2046 §5.1.1). The CRLF before
    /// each delimiter belongs to the delimiter; the preamble and epilogue are dropped.
    static func parts(of body: ArraySlice<UInt8>, boundary: [UInt8]) -> [ArraySlice<UInt8>] {
        let delimiter = [UInt8(ascii: "-"), UInt8(ascii: "-")] + boundary
        var parts: [ArraySlice<UInt8>] = []
        var partStart: Int?
        var i = body.startIndex
        while i < body.endIndex {
            let lineEnd = body[i...].firstIndex(of: 0x0A) ?? body.endIndex
            var contentEnd = lineEnd
            if contentEnd > i && body[contentEnd - 1] == 0x0D { contentEnd -= 1 }
            let line = body[i..<contentEnd]
            let next = lineEnd < body.endIndex ? lineEnd + 1 : body.endIndex
            if line.starts(with: delimiter) {
                var rest = line.dropFirst(delimiter.count)
                let closing = rest.starts(with: [0x2D, 0x2D])
                if closing { rest = rest.dropFirst(2) }
                // Only transport padding (whitespace) may follow the boundary.
                if rest.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) {
                    if let start = partStart {
                        // Drop the line break before the delimiter line.
                        var end = i
                        if end > start && body[end - 1] == 0x0A { end -= 1 }
                        if end > start && body[end - 1] == 0x0D { end -= 1 }
                        parts.append(body[start..<max(start, end)])
                    }
                    if closing { return parts }
                    partStart = next
                }
            }
            i = next
        }
        // A missing closing delimiter is common in truncated bounces; keep the last part.
        if let start = partStart, start < body.endIndex { parts.append(body[start...]) }
        return parts
    }

    // MARK: - Delivery-status fields

    /// Groups of fields separated by empty lines (RFC 3464 §2.1), unfolded. Lines that are
    /// neither a field nor a continuation are skipped rather than failing the report.
    static func fieldGroups(_ text: [UInt8]) -> [[HeaderField]] {
        var groups: [[HeaderField]] = []
        var current: [HeaderField] = []
        var lines = text.split(separator: 0x0A, omittingEmptySubsequences: false)
        if lines.last?.isEmpty == true { lines.removeLast() }
        for var line in lines {
            if line.last == 0x0D { line = line.dropLast() }
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) {
                if !current.isEmpty { groups.append(current) }
                current = []
            } else if line.first == 0x20 || line.first == 0x09 {
                if !current.isEmpty {
                    current[current.count - 1].value += " " + String(decoding: line, as: UTF8.self)
                        .trimmingCharacters(in: .whitespaces)
                }
            } else if let colon = line.firstIndex(of: 0x3A) {
                let name = String(decoding: line[..<colon], as: UTF8.self)
                    .trimmingCharacters(in: .whitespaces)
                let value = String(decoding: line[(colon + 1)...], as: UTF8.self)
                    .trimmingCharacters(in: .whitespaces)
                current.append(HeaderField(name: name, value: value))
            }
        }
        if !current.isEmpty { groups.append(current) }
        return groups
    }

    static func parseStatus(_ text: [UInt8]) throws(DeliveryStatusError)
        -> DeliveryStatusReport
    {
        var report = DeliveryStatusReport(reportingMTA: nil, recipients: [])
        var sawMessageGroup = false
        for group in fieldGroups(text) {
            func value(_ name: String) -> String? {
                group.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
            }
            if let final = value("Final-Recipient") ?? value("Original-Recipient") {
                report.recipients.append(RecipientStatus(
                    recipient: withoutType(final),
                    originalRecipient: value("Original-Recipient").map(withoutType),
                    action: firstWord(value("Action") ?? "").lowercased(),
                    status: firstWord(value("Status") ?? ""),
                    diagnostic: value("Diagnostic-Code").map(withoutType),
                    remoteMTA: value("Remote-MTA").map(withoutType)))
            } else if !sawMessageGroup {
                // §2.2: the per-message group comes first; later stray groups are ignored.
                sawMessageGroup = true
                report.reportingMTA = value("Reporting-MTA").map(withoutType)
                report.originalEnvelopeID = value("Original-Envelope-Id")
            }
        }
        guard !report.recipients.isEmpty else { throw .noRecipients }
        return report
    }

    /// "rfc822; <user@example.com>" -> "user@example.com": the value after the type and its
    /// semicolon (§2.1.2), without angle brackets some reporters add.
    private static func withoutType(_ value: String) -> String {
        var rest = Substring(value)
        if let semicolon = rest.firstIndex(of: ";") {
            rest = rest[rest.index(after: semicolon)...]
        }
        var result = rest.trimmingCharacters(in: .whitespaces)
        if result.hasPrefix("<") && result.hasSuffix(">") && result.count >= 2 {
            result = String(result.dropFirst().dropLast())
        }
        return result
    }

    /// "5.1.1 (mailbox unknown)" -> "5.1.1": drops an RFC 822 comment after the value.
    private static func firstWord(_ value: String) -> String {
        String(value.prefix { $0 != " " && $0 != "\t" && $0 != "(" })
    }
}
