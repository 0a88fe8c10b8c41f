// Complaint Feedback Loop fields (RFC 9477). Each outbound message says where mailbox
// providers may send complaint reports about it (CFBL-Address, §3.1) and carries an opaque
// identifier they return in the report (CFBL-Feedback-ID, §3.2). Ours is `<id>:<tag>`, the
// tag being the message id's VERP signature: the receiver believes a returned id only when
// its tag verifies, so nobody can file complaints against messages they never received.
//
// RFC 9477 §4 asks that both fields be covered by a DKIM signature whose d= aligns with the
// CFBL-Address domain; the DKIM signer already signs them, so the operator must give the
// From domain a key and choose a CFBL address in that domain (docs/configuration.md).

import Foundation

public struct CFBL: Sendable {
    /// The feedback address, lowercased, as written in CFBL-Address.
    public let address: String
    let verp: VERP

    public init(address: String, verp: VERP) {
        self.address = address.lowercased()
        self.verp = verp
    }

    /// The domain of `address`, which DKIM's d= must align with.
    public var domain: String {
        address.split(separator: "@").last.map(String.init) ?? ""
    }

    /// `CFBL-Feedback-ID` value for message `id`.
    public func feedbackID(for id: String) -> String { id.lowercased() + ":" + verp.tag(for: id) }

    /// Both header fields, CRLF-terminated, for message `id`.
    public func fields(for id: String) -> String {
        "CFBL-Address: " + address + "; report=arf\r\n"
            + "CFBL-Feedback-ID: " + feedbackID(for: id) + "\r\n"
    }

    /// What a returned CFBL-Feedback-ID says.
    public enum Check: Equatable, Sendable {
        /// The tag verifies: the id is ours.
        case message(String)
        /// Shaped like ours, but the tag does not verify.
        case forged
        /// Not our format at all (another sender's field, or garbled).
        case foreign
    }

    /// Checks a returned value against `verp`'s key.
    public static func check(_ value: String, verp: VERP) -> Check {
        let v = value.trimmingCharacters(in: .whitespaces)
        let parts = v.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, MessageID.isValid(parts[0].lowercased()),
              !parts[1].isEmpty, parts[1].count <= 64
        else { return .foreign }
        let id = parts[0].lowercased()
        return verp.verifies(tag: parts[1], for: id) ? .message(id) : .forged
    }
}
