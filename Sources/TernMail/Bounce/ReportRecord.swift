// One classified report about one recipient: what the bounce receiver writes to `inbound`
// and what `ternctl classify` prints. The fields and their values are documented in
// docs/bounces.md; the JSON form has every key, always, sorted, so it can be diffed.

import Foundation

public struct ReportRecord: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        /// The message failed for this recipient (RFC 3464 Action: failed, or the text says so).
        case bounce
        /// Not delivered yet, still being tried (Action: delayed).
        case delay
        /// The recipient marked the message as spam (ARF abuse or fraud).
        case complaint
        /// Another feedback report: not-spam, auth-failure, virus, other (RFC 5965 §7.3).
        case feedback
        /// A positive DSN: delivered, relayed or expanded.
        case delivered
        /// Vacation, out of office, challenge-response: a person's robot, not a failure.
        case autoReply = "auto-reply"
        /// Anything else that reached a return path.
        case notAReport = "not-a-report"
    }

    public enum Severity: String, Sendable {
        /// The address will not take mail: do not send to it again.
        case hard
        /// This message failed or waits for a reason that may pass.
        case soft
        /// Not a delivery failure (complaints, feedback, auto-replies, positive reports).
        case none
    }

    public var kind: Kind
    public var severity: Severity
    public var reason: BounceReason
    /// RFC 3463 status, "" when the report gives none.
    public var status = ""
    /// RFC 3464 Action (failed, delayed, delivered, relayed, expanded), or the same read from
    /// a text bounce; "" for reports without one.
    public var action = ""
    /// The remote server's reply (Diagnostic-Code without its type), one line.
    public var remoteReply = ""
    public var remoteMTA = ""
    /// The host (or feedback agent) that wrote the report.
    public var reporter = ""
    /// The recipient the report is about, as written in it ("" when it does not say).
    public var recipient = ""
    public var originalRecipient = ""
    /// Our message id, "" when the report could not be tied to a message.
    public var messageID = ""
    /// How `messageID` was found: verp (a signed return path), cfbl (a verified
    /// CFBL-Feedback-ID), verp-unverified (the shape of one, read without the key),
    /// message-id (the Message-ID of the original), "".
    public var idSource = ""
    /// The returned original's CFBL-Feedback-ID (RFC 9477): pass (its tag verifies), fail
    /// (a forged tag, never used to name the message), "" (none, or not ours).
    public var cfbl = ""
    /// The report's shape: dsn, arf, jmrp, text, auto-reply, none.
    public var format = ""
    /// RFC 5965 Feedback-Type, lowercased, for feedback reports.
    public var feedbackType = ""

    public init(kind: Kind, severity: Severity, reason: BounceReason) {
        self.kind = kind
        self.severity = severity
        self.reason = reason
    }

    /// The record as a JSON object with every key (`cfbl` only when there is one, so the
    /// golden files of reports without it stay as they are).
    public var fields: [(String, String)] {
        (cfbl.isEmpty ? [] : [("cfbl", cfbl)])
        + [("kind", kind.rawValue), ("severity", severity.rawValue), ("reason", reason.rawValue),
         ("status", status), ("action", action), ("remote_reply", remoteReply),
         ("remote_mta", remoteMTA), ("reporter", reporter), ("recipient", recipient),
         ("original_recipient", originalRecipient), ("message_id", messageID),
         ("id_source", idSource), ("format", format), ("feedback_type", feedbackType)]
    }

    /// One line of JSON, keys sorted.
    public var json: String {
        let object = Dictionary(fields, uniquingKeysWith: { a, _ in a })
        let data = (try? JSONSerialization.data(
            withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}
