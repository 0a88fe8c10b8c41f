// IPv4 and IPv6 socket addresses, parsed from the forms operators write in settings:
// "127.0.0.1:25", "[::1]:25", or a bare address with the port given separately.

#if canImport(Glibc)
import Glibc
#endif

public struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
    public enum Family: Sendable { case inet, inet6 }

    public let host: String
    public let port: UInt16
    public let family: Family

    /// Parses a numeric address (no names: resolving is the caller's business).
    public init?(host: String, port: UInt16) {
        let bracketed = host.hasPrefix("[") && host.hasSuffix("]")
        let h = bracketed ? String(host.dropFirst().dropLast()) : host
        var v4 = in_addr(), v6 = in6_addr()
        if inet_pton(AF_INET, h, &v4) == 1 {
            family = .inet
        } else if inet_pton(AF_INET6, h, &v6) == 1 {
            family = .inet6
        } else {
            return nil
        }
        self.host = h
        self.port = port
    }

    /// Parses "host:port" or "[v6]:port".
    public init?(_ text: String) {
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            let host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":"), let port = UInt16(rest.dropFirst()) else { return nil }
            self.init(host: host, port: port)
        } else {
            guard let colon = text.lastIndex(of: ":"),
                  let port = UInt16(text[text.index(after: colon)...]) else { return nil }
            let host = String(text[..<colon])
            guard !host.contains(":") else { return nil }
            self.init(host: host, port: port)
        }
    }

    public var description: String {
        family == .inet6 ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    var domain: Int32 { family == .inet ? AF_INET : AF_INET6 }

    /// Calls `body` with this address as a `sockaddr`.
    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        switch family {
        case .inet:
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_port = port.bigEndian
            inet_pton(AF_INET, host, &sa.sin_addr)
            return withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    body($0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        case .inet6:
            var sa = sockaddr_in6()
            sa.sin6_family = sa_family_t(AF_INET6)
            sa.sin6_port = port.bigEndian
            inet_pton(AF_INET6, host, &sa.sin6_addr)
            return withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    body($0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        }
    }

    private static func text(_ buf: [CChar]) -> String {
        String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) },
               as: UTF8.self)
    }

    /// Reads an address the kernel filled in (accept, getsockname).
    static func from(_ storage: sockaddr_storage) -> SocketAddress? {
        var copy = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &copy) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { p in
                    var addr = p.pointee.sin_addr
                    var buf = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
                    inet_ntop(AF_INET, &addr, &buf, socklen_t(buf.count))
                    return SocketAddress(host: text(buf),
                                         port: UInt16(bigEndian: p.pointee.sin_port))
                }
            }
        case AF_INET6:
            return withUnsafePointer(to: &copy) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                    var addr = p.pointee.sin6_addr
                    var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
                    inet_ntop(AF_INET6, &addr, &buf, socklen_t(buf.count))
                    return SocketAddress(host: text(buf),
                                         port: UInt16(bigEndian: p.pointee.sin6_port))
                }
            }
        default:
            return nil
        }
    }
}
