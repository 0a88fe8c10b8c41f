// The export of an organisation's suppression list, the same from the API
// (`GET /v1/suppressions/{org}?format=csv`) and `ternctl suppressions export`.

import Foundation

/// CSV as RFC 4180 writes it: an `address` header, one address a record, CRLF after each.
public enum SuppressionExport {
    public static let mediaType = "text/csv; charset=utf-8"

    public static func csv(_ addresses: [String]) -> String {
        (["address"] + addresses).map(field).joined(separator: "\r\n") + "\r\n"
    }

    /// RFC 4180 §2.6-2.7: a field holding a quote, a comma or a line break goes in quotes,
    /// its quotes doubled. A quoted local part (`"a,b"@example.com`) needs it.
    static func field(_ text: String) -> String {
        guard text.contains(where: { $0 == "\"" || $0 == "," || $0 == "\r" || $0 == "\n" })
        else { return text }
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}
