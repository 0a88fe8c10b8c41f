// OpenSSL contexts for STARTTLS: one for the sender's client side, one (reloadable) for the
// bounce receiver's server side. A context holds the settings every session is made from:
// TLS 1.2 at least (RFC 8996 retired 1.0 and 1.1), the trusted CAs, our certificate.
//
// An SSL_CTX is safe to share between threads once set up; each session (`TLSStream`) makes
// its own SSL object from it, which keeps the context alive for as long as the session runs.

import COpenSSL
import Synchronization

/// A TLS failure, with OpenSSL's own words for it.
public struct TLSError: Error, CustomStringConvertible, Equatable {
    public let description: String

    public init(_ description: String) { self.description = description }

    /// `what`, then whatever OpenSSL queued on this thread (the queue is emptied).
    static func openSSL(_ what: String) -> TLSError {
        var reasons: [String] = []
        while case let code = ERR_get_error(), code != 0 {
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            reasons.append(String(decoding: buffer.prefix { $0 != 0 }.map(UInt8.init),
                                  as: UTF8.self))
        }
        return TLSError(reasons.isEmpty ? what : what + ": " + reasons.joined(separator: "; "))
    }
}

/// Which side of the handshake a context is for.
public enum TLSRole: Sendable {
    case client, server
}

/// An immutable, shareable SSL_CTX.
public final class TLSContext: @unchecked Sendable {
    let ctx: OpaquePointer
    public let role: TLSRole

    private init(role: TLSRole) throws {
        let method = role == .client ? TLS_client_method() : TLS_server_method()
        guard let ctx = SSL_CTX_new(method) else {
            throw TLSError.openSSL("cannot create a TLS context")
        }
        self.ctx = ctx
        self.role = role
        // SSL_CTX_set_min_proto_version is a macro; this is what it expands to.
        guard SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MIN_PROTO_VERSION, Int(TLS1_2_VERSION), nil) == 1
        else { throw TLSError.openSSL("cannot set TLS 1.2 as the minimum") }
    }

    deinit { SSL_CTX_free(ctx) }

    /// The sender's context. Certificates are checked against `caFile` (PEM, one or more
    /// CAs), or the system's trust store when nil. The check never aborts a handshake: the
    /// session reports whether it passed and the caller's policy decides (`TLSStream`).
    public static func client(caFile: String?) throws -> TLSContext {
        let context = try TLSContext(role: .client)
        if let caFile {
            guard SSL_CTX_load_verify_locations(context.ctx, caFile, nil) == 1 else {
                throw TLSError.openSSL("cannot read the CA file \(caFile)")
            }
        } else if SSL_CTX_set_default_verify_paths(context.ctx) != 1 {
            throw TLSError.openSSL("cannot use the system's trust store")
        }
        SSL_CTX_set_verify(context.ctx, SSL_VERIFY_NONE, nil)
        return context
    }

    /// A server context with the certificate chain and private key from PEM files; fails
    /// when either cannot be read or they do not belong together.
    public static func server(certificateFile: String, keyFile: String) throws -> TLSContext {
        let context = try TLSContext(role: .server)
        guard SSL_CTX_use_certificate_chain_file(context.ctx, certificateFile) == 1 else {
            throw TLSError.openSSL("cannot read the certificate \(certificateFile)")
        }
        guard SSL_CTX_use_PrivateKey_file(context.ctx, keyFile, SSL_FILETYPE_PEM) == 1 else {
            throw TLSError.openSSL("cannot read the private key \(keyFile)")
        }
        guard SSL_CTX_check_private_key(context.ctx) == 1 else {
            throw TLSError.openSSL("the key \(keyFile) does not match \(certificateFile)")
        }
        return context
    }
}

/// A server's certificate that can be replaced while sessions run (SIGHUP): new sessions
/// get the new context, sessions already open keep the one they started with.
public final class ReloadableTLSContext: Sendable {
    public let certificateFile: String
    public let keyFile: String
    private let current: Mutex<TLSContext>

    /// Loads the files now; a failure here is a configuration error.
    public init(certificateFile: String, keyFile: String) throws {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        current = Mutex(try TLSContext.server(certificateFile: certificateFile, keyFile: keyFile))
    }

    public var context: TLSContext { current.withLock { $0 } }

    /// Reads the files again and swaps the context in; on failure the old one stays.
    public func reload() throws {
        let fresh = try TLSContext.server(certificateFile: certificateFile, keyFile: keyFile)
        current.withLock { $0 = fresh }
    }
}
