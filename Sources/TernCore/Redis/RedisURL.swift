// TERN_REDIS_URL, `redis://[[user]:password@]host[:port][/db]` with a numeric host, parsed
// once for the daemons' clients and for `ternctl config check`, and shown with its
// password masked wherever it is logged or put in an error.

import Foundation

public struct RedisURL: Sendable, Equatable {
    public let address: SocketAddress
    public let password: String?
    public let db: Int

    public init(_ url: String) throws(RedisError) {
        // A port over 65535 or a database that is not a number is a bad URL, not a trap
        // nor a silent database 0.
        guard let u = URLComponents(string: url), u.scheme == "redis",
              let host = u.host,
              let port = UInt16(exactly: u.port ?? 6379),
              let address = SocketAddress(host: host, port: port)
        else { throw RedisError.badURL(RedisURL.masked(url)) }
        let path = u.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        guard path.isEmpty || (Int(path) ?? -1) >= 0 else {
            throw RedisError.badURL(RedisURL.masked(url))
        }
        self.address = address
        self.password = u.password.flatMap { $0.isEmpty ? nil : $0 }
        self.db = Int(path) ?? 0
    }

    /// `url` with the password replaced by `***`, for logs and errors. Works on text that
    /// does not parse too: the user part runs to the last "@", as no host, port or database
    /// holds one, and a user part without ":" is taken as all password.
    public static func masked(_ url: String) -> String {
        guard let at = url.lastIndex(of: "@") else { return url }
        let scheme = url.range(of: "://").map { $0.upperBound } ?? url.startIndex
        guard scheme <= at else { return url }
        let user = url[scheme..<at]
        let kept = user.firstIndex(of: ":").map { user[..<$0] + ":" } ?? ""
        return url[..<scheme] + kept + "***" + url[at...]
    }
}
