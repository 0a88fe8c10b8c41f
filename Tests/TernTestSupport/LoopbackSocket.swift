// A raw socket on 127.0.0.1, for tests that need a peer below TernCore's own I/O: a server
// that writes octet by octet on a thread, or a DNS port that never answers.

import Foundation
import TernCore

/// A socket of `type` (SOCK_STREAM, SOCK_DGRAM) bound to 127.0.0.1 on a port the kernel
/// picks, listening when it is a stream, closed on exec (a test that starts `openssl` must
/// not hand it our sockets). The caller closes `fd`.
public func loopbackSocket(_ type: __socket_type) throws -> (fd: Int32, port: UInt16) {
    let fd = socket(AF_INET, Int32(type.rawValue | SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw IOError.system(call: "socket", errno: errno) }
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let stream = type == SOCK_STREAM
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, length) == 0 && (!stream || listen(fd, 64) == 0)
                && getsockname(fd, $0, &length) == 0
        }
    }
    guard bound else {
        let code = errno
        close(fd)
        throw IOError.system(call: "bind", errno: code)
    }
    return (fd, UInt16(bigEndian: address.sin_port))
}
