// Sorts whatever reaches a return path or a feedback-loop address into report records: one
// per recipient the report is about (docs/bounces.md).
//
// In order of trust in the format: an RFC 5965 feedback report (ARF) or Microsoft's older
// JMRP form; an RFC 3464 delivery status notification; a bounce written as text for people;
// an auto-reply; and, failing all of these, "not a report". The message it concerns comes
// from a signed VERP address (the envelope recipient, or one quoted in the report), else
// from the Message-ID of the returned original.
//
// Pure and bounded: no I/O, no clock; any input gives records, never a crash (see
// `MIMEEntity` for the limits and `scripts/fuzz-classify` for the fuzzer that checks it).

import Foundation

public struct BounceClassifier: Sendable {
    /// The key that verifies VERP addresses; without it ids are read from their shape only.
    public let verp: VERP?
    public let limits: MIMEEntity.Limits
    /// Records per message at most; a Tern message has one recipient.
    public static let maxRecords = 50

    public init(verp: VERP? = nil, limits: MIMEEntity.Limits = MIMEEntity.Limits()) {
        self.verp = verp
        self.limits = limits
    }

    /// Classifies one whole message (header and body). `envelopeRecipients` are the RCPT
    /// addresses it came with, `envelopeSender` its MAIL FROM ("" for the null path), when
    /// known. `toFeedbackAddress`: it came to a feedback-loop address, where a plain
    /// forward of one of our messages is a complaint too.
    public func classify(_ message: [UInt8], envelopeRecipients: [String] = [],
                         envelopeSender: String? = nil, toFeedbackAddress: Bool = false)
        -> [ReportRecord]
    {
        let input = message.count > limits.maxInput ? Array(message.prefix(limits.maxInput))
            : message
        let root = MIMEEntity.parse(input, limits: limits)
        let all = root.all
        let human = Self.humanText(root)
        var records: [ReportRecord]
        if let arf = all.first(where: { $0.mimeType == "message/feedback-report" }) {
            records = feedbackRecords(arf, all: all)
        } else if let dsn = all.first(where: { Self.statusTypes.contains($0.mimeType) }),
                  let found = deliveryRecords(dsn, humanText: human), !found.isEmpty {
            records = found
        } else if let jmrp = jmrpRecord(all) {
            records = [jmrp]
        } else if toFeedbackAddress, let forward = forwardedComplaint(all) {
            records = [forward]
        } else if let reply = autoReply(root, humanText: human, strong: true) {
            records = [reply]
        } else if let text = textRecords(root, humanText: human, envelopeSender: envelopeSender) {
            records = text
        } else if let reply = autoReply(root, humanText: human, strong: false) {
            records = [reply]
        } else {
            var r = ReportRecord(kind: .notAReport, severity: .none, reason: .other)
            r.format = "none"
            r.recipient = firstAddress(root.value("From") ?? "")
            records = [r]
        }
        let cfbl = feedbackIDCheck(all)
        let (id, source) = messageID(root, input, envelopeRecipients: envelopeRecipients,
                                     cfbl: cfbl)
        return records.prefix(Self.maxRecords).map { record in
            var r = record
            r.messageID = id
            r.idSource = source
            switch cfbl {
            case .message?: r.cfbl = "pass"
            case .forged?: r.cfbl = "fail"
            case .foreign?, nil: r.cfbl = ""
            }
            r.remoteReply = Self.oneLine(r.remoteReply, limit: 1000)
            r.recipient = Self.oneLine(r.recipient, limit: 300)
            r.originalRecipient = Self.oneLine(r.originalRecipient, limit: 300)
            r.remoteMTA = Self.oneLine(r.remoteMTA, limit: 300)
            r.reporter = Self.oneLine(r.reporter, limit: 300)
            return r
        }
    }

    /// Octets of a delivery-status or feedback-report part that are read: real ones are a
    /// few hundred octets per recipient.
    static let maxReportPart = 64 * 1024

    static let statusTypes: Set<String> = [
        "message/delivery-status", "message/global-delivery-status",
    ]

    // MARK: - Feedback reports (RFC 5965, RFC 6591)

    func feedbackRecords(_ arf: MIMEEntity, all: [MIMEEntity]) -> [ReportRecord] {
        let part = Array(arf.decodedBody.prefix(Self.maxReportPart))
        let fields = DeliveryStatusReport.fieldGroups(part).flatMap { $0 }
        func values(_ name: String) -> [String] {
            fields.filter { $0.name.caseInsensitiveCompare(name) == .orderedSame }.map(\.value)
        }
        let type = Self.firstWord(values("Feedback-Type").first ?? "").lowercased()
        let kind: ReportRecord.Kind
        let reason: BounceReason
        switch type {
        case "abuse": (kind, reason) = (.complaint, .complaint)
        case "fraud": (kind, reason) = (.complaint, .fraud)
        case "not-spam": (kind, reason) = (.feedback, .notSpam)
        case "auth-failure": (kind, reason) = (.feedback, .authFailure)
        case "virus": (kind, reason) = (.feedback, .virus)
        default: (kind, reason) = (.feedback, .other)
        }
        var recipients = values("Original-Rcpt-To").prefix(Self.maxRecords).map(Self.withoutType)
        if recipients.isEmpty, let original = Self.originalHeaders(all) {
            let named = original.first { $0.name.caseInsensitiveCompare(
                "X-HmXmrOriginalRecipient") == .orderedSame }?.value
                ?? original.first { $0.name.caseInsensitiveCompare("To") == .orderedSame }?.value
            recipients = [named.map(firstAddress) ?? ""]
        }
        if recipients.isEmpty { recipients = [""] }
        let reporter = values("Reporting-MTA").first.map(Self.withoutType)
            ?? values("User-Agent").first ?? ""
        return recipients.map { rcpt in
            var r = ReportRecord(kind: kind, severity: .none, reason: reason)
            r.format = "arf"
            r.feedbackType = type
            r.recipient = rcpt
            r.reporter = reporter
            return r
        }
    }

    /// Microsoft's JMRP reports without an ARF part: the complained-of message attached,
    /// carrying the recipient in X-HmXmrOriginalRecipient.
    func jmrpRecord(_ all: [MIMEEntity]) -> ReportRecord? {
        guard let original = Self.originalHeaders(all),
              let rcpt = original.first(where: { $0.name.caseInsensitiveCompare(
                  "X-HmXmrOriginalRecipient") == .orderedSame })?.value
        else { return nil }
        var r = ReportRecord(kind: .complaint, severity: .none, reason: .complaint)
        r.format = "jmrp"
        r.feedbackType = "abuse"
        r.recipient = firstAddress(rcpt)
        return r
    }

    /// A complaint sent to a feedback address as a plain forward of the message, without
    /// ARF (some smaller providers and abuse desks do this).
    func forwardedComplaint(_ all: [MIMEEntity]) -> ReportRecord? {
        guard let original = Self.originalHeaders(all) else { return nil }
        let to = original.first { $0.name.caseInsensitiveCompare("To") == .orderedSame }?.value
        var r = ReportRecord(kind: .complaint, severity: .none, reason: .complaint)
        r.format = "forward"
        r.feedbackType = "abuse"
        r.recipient = firstAddress(to ?? "")
        return r
    }

    /// The header fields of the returned original: a message/rfc822 part's, or a
    /// text/rfc822-headers part read as a header section.
    static func originalHeaders(_ all: [MIMEEntity]) -> [HeaderField]? {
        for e in all.dropFirst() {
            switch e.mimeType {
            case "message/rfc822", "message/global":
                if let inner = e.children.first { return inner.fields }
            case "text/rfc822-headers", "message/rfc822-headers", "text/rfc822-header":
                return MIMEEntity.readFields(e.decodedBody[...], limit: 500).0
            default:
                continue
            }
        }
        return nil
    }

    // MARK: - Delivery status notifications (RFC 3464)

    func deliveryRecords(_ part: MIMEEntity, humanText: String) -> [ReportRecord]? {
        let body = Array(part.decodedBody.prefix(Self.maxReportPart))
        guard let report = try? DeliveryStatusReport.parseStatus(body) else { return nil }
        return report.recipients.prefix(Self.maxRecords).map { s in
            let diagnostic = s.diagnostic ?? ""
            // A missing or generic Status (5.0.0) gives way to the code in the reply itself.
            var status = s.enhanced
            if let said = TextBounce.enhancedStatus(in: diagnostic) {
                if let given = status {
                    if given.subject == 0 && given.detail == 0
                        && said.statusClass == given.statusClass { status = said }
                } else {
                    status = said
                }
            }
            let action = s.action
            let kind: ReportRecord.Kind
            switch action {
            case "failed": kind = .bounce
            case "delayed": kind = .delay
            case "delivered", "relayed", "expanded": kind = .delivered
            default:
                switch status?.statusClass {
                case 2: kind = .delivered
                case 4: kind = .delay
                default: kind = .bounce
                }
            }
            var r: ReportRecord
            if kind == .delivered {
                r = ReportRecord(kind: kind, severity: .none, reason: .delivered)
            } else {
                var text = diagnostic
                if text.isEmpty, status.map({ $0.subject == 0 || $0.subject == 7 }) ?? true {
                    text = String(TextBounce.report(of: humanText).prefix(4000))
                }
                let reason = ReasonRules.reason(status: status, text: text)
                r = ReportRecord(kind: kind, severity: Self.severity(kind, status, reason),
                                 reason: reason)
            }
            r.format = "dsn"
            r.status = status?.description ?? s.status
            r.action = action
            r.remoteReply = diagnostic
            r.remoteMTA = s.remoteMTA ?? ""
            r.reporter = report.reportingMTA ?? ""
            r.recipient = s.recipient
            r.originalRecipient = s.originalRecipient ?? ""
            return r
        }
    }

    static func severity(_ kind: ReportRecord.Kind, _ status: EnhancedStatus?,
                         _ reason: BounceReason) -> ReportRecord.Severity {
        switch kind {
        case .bounce:
            let permanent = status.map { $0.statusClass == 5 } ?? true
            return permanent && reason.isAboutAddress ? .hard : .soft
        case .delay:
            return .soft
        default:
            return .none
        }
    }

    // MARK: - Text bounces

    static let bounceSubjects = [
        "undeliver", "delivery status notification", "mail delivery failed", "failure notice",
        "returned mail", "delivery failure", "not delivered", "delivery has failed",
        "could not be delivered", "could not send message", "delayed mail", "delivery delayed",
        "message delayed", "nondeliverable", "non-delivery", "delivery problem",
        "mail delivery system", "delivery notification", "undelivered", "rejected:",
        "delivery incomplete", "mail system error", "returned to sender", "delivery status",
    ]
    static let daemonSenders = [
        "mailer-daemon", "mailer_daemon", "mail-daemon", "mailerdaemon", "postmaster@",
        "mail delivery", "mdaemon", "microsoftexchange",
    ]

    func textRecords(_ root: MIMEEntity, humanText: String, envelopeSender: String?)
        -> [ReportRecord]?
    {
        let from = MIMEText.decodeWords(root.value("From") ?? "").lowercased()
        let subject = MIMEText.decodeWords(root.value("Subject") ?? "").lowercased()
        let nullSender = envelopeSender == "" || root.value("Return-Path") == "<>"
        let byDaemon = Self.daemonSenders.contains { from.contains($0) }
        let bySubject = Self.bounceSubjects.contains { subject.contains($0) }
        let text = TextBounce.report(of: humanText)
        guard byDaemon || bySubject || nullSender && TextBounce.hasCode(String(text.prefix(4000)))
        else { return nil }

        let sender = firstAddress(root.value("From") ?? "").lowercased()
        let parsed = TextBounce.parse(text, subject: subject) { address in
            let a = address.lowercased()
            return a == sender || a.hasPrefix("postmaster@") || a.hasPrefix("mailer-daemon@")
                || self.isReturnPath(a)
        }
        let entries = parsed.entries.isEmpty
            ? [TextBounce.Entry(recipient: "", reply: TextBounce.replyText(
                in: text.split(separator: "\n").prefix(2000).map(String.init)))]
            : parsed.entries
        let reporter = sender.split(separator: "@").last.map(String.init) ?? ""
        return entries.map { e in
            var status = TextBounce.enhancedStatus(in: e.reply)
            if status == nil, let start = TextBounce.codeStart(in: e.reply),
               let code = Int(e.reply[start...].prefix(3)) {
                status = EnhancedStatus(statusClass: code / 100, subject: 0, detail: 0)
            }
            let kind: ReportRecord.Kind = parsed.delayed ? .delay : .bounce
            let reason = ReasonRules.reason(
                status: status, text: e.reply.isEmpty ? String(text.prefix(4000)) : e.reply)
            var r = ReportRecord(kind: kind, severity: Self.severity(kind, status, reason),
                                 reason: reason)
            r.format = "text"
            r.status = status?.description ?? ""
            r.action = parsed.delayed ? "delayed" : "failed"
            r.remoteReply = e.reply
            r.remoteMTA = e.remoteMTA
            r.reporter = reporter
            r.recipient = e.recipient
            return r
        }
    }

    /// True for an address in our VERP domain (our own return path quoted in the report).
    func isReturnPath(_ address: String) -> Bool {
        if let verp, address.hasSuffix("@" + verp.domain) { return true }
        return VERPScan.unverifiedID(address) != nil
    }

    /// The text of the report itself: the first text part outside any returned message;
    /// HTML is reduced to its text when there is no plain part.
    static let maxHumanText = 64 * 1024

    static func humanText(_ root: MIMEEntity) -> String {
        var html: MIMEEntity?
        var stack = [root]
        var visited = 0
        while let e = stack.popLast(), visited < 200 {
            visited += 1
            let type = e.mimeType
            if type == "text/plain" { return e.text(limit: maxHumanText) }
            if type == "text/html", html == nil { html = e }
            if type.hasPrefix("multipart/") { stack += e.children.reversed() }
        }
        return html.map { stripTags($0.text(limit: maxHumanText)) } ?? ""
    }

    static func stripTags(_ html: String) -> String {
        var out = ""
        var inTag = false
        for c in html {
            switch c {
            case "<": inTag = true
            case ">" where inTag:
                inTag = false
                out.append(" ")
            default:
                if !inTag { out.append(c) }
            }
        }
        return out.replacingOccurrences(of: "&nbsp;", with: " ")
            .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&amp;", with: "&")
    }

    // MARK: - Auto-replies

    static let vacationPhrases = [
        "out of office", "out of the office", "automatic reply", "auto reply", "auto-reply",
        "autoreply", "auto response", "auto-response", "autoresponse", "vacation",
        "away from", "on leave", "on holiday", "abwesenheit", "automatische antwort",
        "réponse automatique", "respuesta automática", "risposta automatica", "absence",
        "currently out", "i am away", "i'm away", "ooo:", "afwezig",
    ]
    static let challengePhrases = [
        "please confirm", "confirm that you", "verify that you", "sender verification",
        "challenge", "approved senders", "whitelist", "spam protection", "are a human",
        "not a robot", "requires verification", "awaiting your confirmation", "verify your",
        "confirm your message", "boxbe", "spamarrest", "mailbox protected by",
    ]

    /// `strong`: only with clear signs (a vacation or challenge phrase, an auto-reply
    /// header); otherwise any `Auto-Submitted` message that reached us is taken as one.
    func autoReply(_ root: MIMEEntity, humanText: String, strong: Bool) -> ReportRecord? {
        let subject = MIMEText.decodeWords(root.value("Subject") ?? "").lowercased()
        let from = MIMEText.decodeWords(root.value("From") ?? "").lowercased()
        if Self.daemonSenders.contains(where: { from.contains($0) }) { return nil }
        let headerSign = ["X-Autoreply", "X-Autorespond", "X-Auto-Response", "X-Vacation"]
            .contains { root.value($0) != nil }
            || ["auto_reply", "auto-reply", "autoreply"].contains(
                (root.value("Precedence") ?? root.value("X-Precedence") ?? "").lowercased())
        let submitted = (root.value("Auto-Submitted") ?? "no").lowercased()
        let autoSubmitted = !submitted.hasPrefix("no")
        let body = String(humanText.prefix(3000)).lowercased()
        let headers = root.fields.map { $0.name.lowercased() }
        let challenge = Self.challengePhrases.contains { subject.contains($0) || body.contains($0) }
            || headers.contains { $0.hasPrefix("x-boxbe") || $0.hasPrefix("x-challenge") }
        let vacation = Self.vacationPhrases.contains { subject.contains($0) }
            || (headerSign || autoSubmitted)
                && Self.vacationPhrases.contains { body.contains($0) }
        let reason: BounceReason
        if challenge && (autoSubmitted || headerSign || !strong) {
            reason = .challenge
        } else if vacation {
            reason = .vacation
        } else if headerSign || !strong && autoSubmitted {
            reason = .other
        } else {
            return nil
        }
        var r = ReportRecord(kind: .autoReply, severity: .none, reason: reason)
        r.format = "auto-reply"
        r.recipient = firstAddress(root.value("From") ?? "")
        return r
    }

    // MARK: - Tying the report to a message

    func messageID(_ root: MIMEEntity, _ message: [UInt8], envelopeRecipients: [String],
                   cfbl: CFBL.Check? = nil) -> (String, String)
    {
        if let verp {
            for rcpt in envelopeRecipients {
                if case .success(let id) = verp.decode(rcpt) { return (id, "verp") }
            }
        }
        // RFC 9477: the original's CFBL-Feedback-ID, believed only when its tag verifies.
        if case .message(let id)? = cfbl { return (id, "cfbl") }
        for address in VERPScan.candidates(in: message) {
            if let verp {
                if case .success(let id) = verp.decode(address) { return (id, "verp") }
            } else if let id = VERPScan.unverifiedID(address) {
                return (id, "verp-unverified")
            }
        }
        // The returned original's Message-ID: a header line anywhere below the top header.
        for value in Self.messageIDLines(root.rawBody) {
            if let id = Self.ourID(value) { return (id, "message-id") }
        }
        for name in ["In-Reply-To", "References"] {
            for token in (root.value(name) ?? "").split(separator: " ") {
                if let id = Self.ourID(String(token)) { return (id, "message-id") }
            }
        }
        return ("", "")
    }

    /// The returned original's CFBL-Feedback-ID checked against the VERP key; nil when it
    /// has none or there is no key to check it with.
    func feedbackIDCheck(_ all: [MIMEEntity]) -> CFBL.Check? {
        guard let verp, let original = Self.originalHeaders(all),
              let field = original.first(where: {
                  $0.name.caseInsensitiveCompare("CFBL-Feedback-ID") == .orderedSame })
        else { return nil }
        return CFBL.check(field.value, verp: verp)
    }

    /// The values of lines that start with "Message-ID:" (any case), read over the bytes so
    /// a large body costs one pass and no copies; at most 20.
    static func messageIDLines(_ body: ArraySlice<UInt8>) -> [String] {
        let name = Array("message-id:".utf8)
        var found: [String] = []
        var i = body.startIndex
        while i + name.count < body.endIndex, found.count < 20 {
            let atLineStart = i == body.startIndex || body[i - 1] == 0x0A
            if atLineStart,
               zip(body[i..<(i + name.count)], name).allSatisfy({ $0 | 0x20 == $1 }) {
                let start = i + name.count
                let end = body[start...].prefix(998).firstIndex { $0 == 0x0D || $0 == 0x0A }
                    ?? min(body.endIndex, start + 998)
                found.append(String(decoding: body[start..<end], as: UTF8.self))
                i = end
                continue
            }
            i += 1
        }
        return found
    }

    /// "<01jn...@host>" -> the id, when the left side is one of our message ids.
    static func ourID(_ value: String) -> String? {
        let v = value.trimmingCharacters(in: .whitespacesAndNewlines)
        guard v.hasPrefix("<"), let at = v.firstIndex(of: "@") else { return nil }
        let local = v[v.index(after: v.startIndex)..<at].lowercased()
        return MessageID.isValid(local) ? local : nil
    }

    // MARK: - Helpers

    func firstAddress(_ value: String) -> String {
        AddressScan.addresses(in: value).first ?? ""
    }

    static func withoutType(_ value: String) -> String {
        var rest = Substring(value)
        if let semicolon = rest.firstIndex(of: ";") { rest = rest[rest.index(after: semicolon)...] }
        var result = rest.trimmingCharacters(in: .whitespaces)
        if result.hasPrefix("<") && result.hasSuffix(">") && result.count >= 2 {
            result = String(result.dropFirst().dropLast())
        }
        return result
    }

    static func firstWord(_ value: String) -> String {
        String(value.trimmingCharacters(in: .whitespaces).prefix { $0 != " " && $0 != ";" })
    }

    /// Controls become spaces, runs of whitespace one space, length capped.
    static func oneLine(_ text: String, limit: Int) -> String {
        var out = ""
        var lastSpace = false
        for u in text.unicodeScalars.prefix(limit * 2) {
            let space = u.value < 0x20 || u.value == 0x7F || u == " "
            if space {
                if !lastSpace && !out.isEmpty { out.unicodeScalars.append(" ") }
            } else {
                out.unicodeScalars.append(u)
            }
            lastSpace = space
        }
        while out.hasSuffix(" ") { out.removeLast() }
        return String(out.prefix(limit))
    }
}

/// Finds VERP-shaped addresses (`b.<id>.<sig>@domain`) in raw bytes.
enum VERPScan {
    static let idLength = 26, sigLength = 16

    static func candidates(in message: [UInt8]) -> [String] {
        var found: [String] = []
        let n = message.count
        let shapeLength = 2 + idLength + 1 + sigLength
        var i = 0
        while i + shapeLength < n, found.count < 20 {
            defer { i += 1 }
            guard message[i] | 0x20 == UInt8(ascii: "b"), message[i + 1] == UInt8(ascii: "."),
                  i == 0 || !isLocalByte(message[i - 1]),
                  message[i + 2 + idLength] == UInt8(ascii: "."),
                  message[i + shapeLength] == UInt8(ascii: "@")
            else { continue }
            var end = i + shapeLength + 1
            while end < n, end - i < 300, isDomainByte(message[end]) { end += 1 }
            let text = String(decoding: message[i..<end], as: UTF8.self).lowercased()
            found.append(text.hasSuffix(".") ? String(text.dropLast()) : text)
        }
        return found
    }

    /// The id in a VERP-shaped address, without checking its signature.
    static func unverifiedID(_ address: String) -> String? {
        let a = address.lowercased()
        guard a.hasPrefix(VERP.prefix), let at = a.lastIndex(of: "@") else { return nil }
        let local = a[a.index(a.startIndex, offsetBy: 2)..<at]
        let parts = local.split(separator: ".")
        guard parts.count == 2, MessageID.isValid(parts[0]),
              Base32.decode(parts[1], byteCount: 10) != nil
        else { return nil }
        return String(parts[0])
    }

    static func isLocalByte(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b | 0x20 >= 0x61 && b | 0x20 <= 0x7A) || b == 0x2E
            || b == 0x2D || b == 0x5F || b == 0x2B
    }

    static func isDomainByte(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b | 0x20 >= 0x61 && b | 0x20 <= 0x7A) || b == 0x2E
            || b == 0x2D
    }
}
