// An address with the display name a reader sees beside it ("Alice Example <alice@example.com>"),
// as a send request gives it and as the From, To and Reply-To fields show it.
//
// A request may write the address as a string, with or without a name in front of "<...>",
// or as an object {"email": ..., "name": ...}. The name is text, not RFC 5322 syntax: Tern
// quotes it or writes it as RFC 2047 encoded words itself (`HeaderWriter.mailbox`).

import Foundation

public struct NamedAddress: Sendable, Hashable {
    public var address: EmailAddress
    /// The display name, trimmed; nil when the request gave none.
    public var name: String?

    /// Octets of a display name: it must fit one header line with its address.
    public static let maxNameBytes = 256

    public init(address: EmailAddress, name: String? = nil) {
        self.address = address
        self.name = name
    }

    /// Reads `value`, a JSON string or object, for the request field `field`.
    static func decode(_ value: Any, field: String) throws(ValidationError) -> NamedAddress {
        let text: String
        var name: String?
        if let object = value as? [String: Any] {
            let unknown = object.keys.filter { $0 != "email" && $0 != "name" }.sorted()
            if let first = unknown.first {
                throw ValidationError(field: field + "." + first, message: "is not a known "
                    + "field; an address object has email and name")
            }
            guard let email = object["email"] as? String else {
                throw ValidationError(field: field + ".email", message: "is required and must "
                    + "be a string")
            }
            text = email
            if let given = object["name"], !(given is NSNull) {
                guard let string = given as? String else {
                    throw ValidationError(field: field + ".name", message: "must be a string")
                }
                name = string
            }
        } else if let string = value as? String {
            (name, text) = split(string)
        } else {
            throw ValidationError(field: field, message: "must be a string or an object "
                + "with email and name")
        }
        let address: EmailAddress
        do throws(EmailAddressError) {
            address = try EmailAddress(text)
        } catch {
            throw ValidationError(field: field, message: error.message)
        }
        return NamedAddress(address: address, name: try checkName(name, field: field))
    }

    /// "Name <addr>" into its name and address; a string without "<...>" at its end is all
    /// address. A quoted name loses its quotes and backslash escapes (RFC 5322 §3.2.4).
    static func split(_ text: String) -> (name: String?, address: String) {
        let trimmed = text.trimmingSpaces()
        guard trimmed.hasSuffix(">"), let open = trimmed.lastIndex(of: "<") else {
            return (nil, text)
        }
        let address = String(trimmed[trimmed.index(after: open)..<trimmed.index(before:
            trimmed.endIndex)])
        var name = trimmed[..<open].trimmingSpaces()
        if name.count >= 2, name.hasPrefix("\""), name.hasSuffix("\"") {
            var unquoted = ""
            var escaped = false
            for c in name.dropFirst().dropLast() {
                if c == "\\" && !escaped { escaped = true; continue }
                unquoted.append(c)
                escaped = false
            }
            name = unquoted
        }
        return (name.isEmpty ? nil : name, address)
    }

    private static func checkName(_ name: String?, field: String)
        throws(ValidationError) -> String?
    {
        guard let name = name?.trimmingCharacters(in: .whitespaces), !name.isEmpty else {
            return nil
        }
        // Bidirectional controls too: they could make "Bank" <x@evil> read as another
        // sender (Trojan Source, CVE-2021-42574).
        if name.unicodeScalars.contains(where: SendRequest.isForbiddenInName) {
            throw ValidationError(field: field, message: "the display name must not contain "
                + "CR, LF or other controls (C1, or bidirectional ones such as U+202E)")
        }
        guard name.utf8.count <= maxNameBytes else {
            throw ValidationError(field: field, message: "the display name is longer than "
                + "\(maxNameBytes) octets")
        }
        return name
    }
}
