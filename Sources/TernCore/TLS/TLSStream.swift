// A TLS session over another ByteStream (a TCP connection after STARTTLS), itself a
// ByteStream, so the SMTP code above it does not change once the handshake is done.
//
// OpenSSL never touches the socket: it reads ciphertext from one memory BIO and writes to
// another, and this class moves bytes between those and the underlying stream with the
// event loop's async reads and writes. A handshake or a read that needs more input therefore
// suspends its task like any other socket wait and never blocks a thread.

import COpenSSL
import Synchronization

/// What a finished handshake agreed on, as recorded with a delivery.
public struct TLSSessionInfo: Sendable, Equatable {
    /// "TLSv1.3", "TLSv1.2".
    public var version: String
    /// The IANA/OpenSSL name, "TLS_AES_256_GCM_SHA384".
    public var cipher: String
    /// The peer's certificate chained to a trusted CA and named the expected host.
    public var verified: Bool
    /// Why it did not verify, in OpenSSL's words; "" when it did.
    public var verifyError: String

    public init(version: String, cipher: String, verified: Bool, verifyError: String = "") {
        self.version = version
        self.cipher = cipher
        self.verified = verified
        self.verifyError = verifyError
    }

    /// "TLSv1.3 TLS_AES_256_GCM_SHA384": the `tls` field of a result.
    public var summary: String { version + " " + cipher }
}

/// One TLS session. Like `TCPConnection`, one task reads and writes at a time; `close` may
/// come from anywhere.
public final class TLSStream: ByteStream, @unchecked Sendable {
    private let ssl: OpaquePointer
    private let input: OpaquePointer   // ciphertext from the peer, for OpenSSL to read
    private let output: OpaquePointer  // ciphertext OpenSSL wrote, for the peer
    private let lower: any ByteStream
    /// Serialises OpenSSL calls with `deinit`; never held across an await.
    private let lock = Mutex(())
    private let context: TLSContext
    /// OpenSSL's reasons for the last failed call, ": ..." or "".
    private var lastError = ""
    public private(set) var info = TLSSessionInfo(version: "", cipher: "", verified: false)

    private init(context: TLSContext, over lower: any ByteStream) throws {
        guard let ssl = SSL_new(context.ctx) else { throw TLSError.openSSL("SSL_new") }
        guard let input = BIO_new(BIO_s_mem()), let output = BIO_new(BIO_s_mem()) else {
            SSL_free(ssl)
            throw TLSError.openSSL("BIO_new")
        }
        SSL_set_bio(ssl, input, output)   // the SSL object owns both BIOs from here
        self.ssl = ssl
        self.input = input
        self.output = output
        self.lower = lower
        self.context = context
    }

    deinit { SSL_free(ssl) }

    /// The client's handshake. `host` is sent as SNI (RFC 6066 §3) and is the name the
    /// certificate must carry to count as verified (RFC 6125).
    public static func connect(over lower: any ByteStream, context: TLSContext, host: String,
                               deadline: ContinuousClock.Instant?) async throws -> TLSStream {
        let stream = try TLSStream(context: context, over: lower)
        try stream.lock.withLock { _ in
            SSL_set_connect_state(stream.ssl)
            if !host.isEmpty {
                // SSL_set_tlsext_host_name is a macro over SSL_ctrl.
                let named = host.withCString {
                    SSL_ctrl(stream.ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME,
                             Int(TLSEXT_NAMETYPE_host_name), UnsafeMutableRawPointer(mutating: $0))
                }
                guard named == 1, SSL_set1_host(stream.ssl, host) == 1 else {
                    throw TLSError.openSSL("cannot use \(host) as the TLS server name")
                }
            }
        }
        try await stream.handshake(deadline: deadline)
        return stream
    }

    /// The server's side, made before its 220 to STARTTLS so that a failure here can still
    /// be answered 454; `accept` then makes the handshake.
    public static func server(over lower: any ByteStream, context: TLSContext) throws
        -> TLSStream
    {
        let stream = try TLSStream(context: context, over: lower)
        stream.lock.withLock { _ in SSL_set_accept_state(stream.ssl) }
        return stream
    }

    /// The server's handshake, after its 220.
    public func accept(deadline: ContinuousClock.Instant?) async throws {
        try await handshake(deadline: deadline)
    }

    private func handshake(deadline: ContinuousClock.Instant?) async throws {
        while true {
            let (rc, error) = call { SSL_do_handshake(ssl) }
            try await flush(deadline: deadline)
            if rc == 1 { break }
            switch error {
            case SSL_ERROR_WANT_READ:
                guard try await fill(deadline: deadline) else {
                    throw TLSError("the peer closed the connection during the TLS handshake")
                }
            case SSL_ERROR_WANT_WRITE:
                continue
            default:
                throw failure("TLS handshake failed", code: error)
            }
        }
        info = lock.withLock { _ in
            let version = String(cString: SSL_get_version(ssl))
            let cipher = SSL_get_current_cipher(ssl).map {
                String(cString: SSL_CIPHER_get_name($0))
            }
            let peer = SSL_get1_peer_certificate(ssl)
            defer { if let peer { X509_free(peer) } }
            let result = SSL_get_verify_result(ssl)
            let verified = peer != nil && result == X509_V_OK
            let why = peer == nil ? "no certificate"
                : verified ? "" : String(cString: X509_verify_cert_error_string(result))
            return TLSSessionInfo(version: version, cipher: cipher ?? "", verified: verified,
                                  verifyError: why)
        }
    }

    public func read(max: Int, deadline: ContinuousClock.Instant?) async throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: max)
        while true {
            let (n, error) = call {
                buffer.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
            }
            // TLS 1.3 may answer while reading (a key update): send whatever OpenSSL wrote.
            try await flush(deadline: deadline)
            if n > 0 {
                buffer.removeSubrange(Int(n)...)
                return buffer
            }
            switch error {
            case SSL_ERROR_ZERO_RETURN:
                return []   // close_notify: a clean end
            case SSL_ERROR_WANT_READ:
                // A peer that closes TCP without close_notify ends the stream too; SMTP's own
                // framing (QUIT, the final dot) says whether anything was cut short.
                guard try await fill(deadline: deadline) else { return [] }
            case SSL_ERROR_WANT_WRITE:
                continue
            default:
                throw failure("TLS read failed", code: error)
            }
        }
    }

    public func readIfReady(max: Int) throws -> [UInt8]? {
        // Asked before every message of a reused session, and mostly nothing has come: then
        // no buffer is made and OpenSSL is not called. Nothing means nothing in OpenSSL's
        // record buffer and no ciphertext left in the input BIO by an earlier read either.
        let held = lock.withLock { _ in
            SSL_has_pending(ssl) != 0 || BIO_ctrl_pending(input) > 0
        }
        if !held {
            guard let bytes = try lower.readIfReady(max: 16384) else { return nil }
            if bytes.isEmpty { return [] }
            feed(bytes)
        }
        var buffer = [UInt8](repeating: 0, count: max)
        while true {
            let (n, error) = call {
                buffer.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
            }
            // Anything OpenSSL wrote meanwhile (a key update) goes out before the next
            // record this stream writes: `write` flushes the output BIO in order.
            if n > 0 {
                buffer.removeSubrange(Int(n)...)
                return buffer
            }
            switch error {
            case SSL_ERROR_ZERO_RETURN:
                return []
            case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
                guard let bytes = try lower.readIfReady(max: 16384) else { return nil }
                if bytes.isEmpty { return [] }
                feed(bytes)
            default:
                throw failure("TLS read failed", code: error)
            }
        }
    }

    public func write(_ bytes: [UInt8], deadline: ContinuousClock.Instant?) async throws {
        var offset = 0
        while offset < bytes.count {
            let (n, error) = call {
                bytes.withUnsafeBytes {
                    SSL_write(ssl, $0.baseAddress! + offset, Int32($0.count - offset))
                }
            }
            if n > 0 { offset += Int(n) }
            try await flush(deadline: deadline)
            if n <= 0 {
                switch error {
                case SSL_ERROR_WANT_READ:
                    guard try await fill(deadline: deadline) else { throw IOError.closed }
                case SSL_ERROR_WANT_WRITE:
                    continue
                default:
                    throw failure("TLS write failed", code: error)
                }
            }
        }
    }

    /// Closes the connection underneath. No close_notify is sent: SMTP ends with QUIT, and
    /// a notify would need a write that `close` cannot wait for.
    public func close() { lower.close() }

    // MARK: Moving ciphertext

    /// Runs one OpenSSL call under the lock; returns its result and SSL_get_error's code.
    /// OpenSSL's error queue belongs to the thread, and a task may change threads at its
    /// next await, so the reasons for a failure are read here, at once.
    private func call(_ body: () -> Int32) -> (Int32, Int32) {
        lock.withLock { _ in
            ERR_clear_error()
            let rc = body()
            let code = rc > 0 ? SSL_ERROR_NONE : SSL_get_error(ssl, rc)
            if code == SSL_ERROR_SSL || code == SSL_ERROR_SYSCALL {
                lastError = TLSError.openSSL("").description
            }
            return (rc, code)
        }
    }

    /// Sends everything OpenSSL has written to the output BIO.
    private func flush(deadline: ContinuousClock.Instant?) async throws {
        while true {
            let pending: [UInt8] = lock.withLock { _ in
                let count = Int(BIO_ctrl_pending(output))
                guard count > 0 else { return [] }
                var bytes = [UInt8](repeating: 0, count: count)
                let n = bytes.withUnsafeMutableBytes {
                    BIO_read(output, $0.baseAddress, Int32(count))
                }
                return n > 0 ? Array(bytes.prefix(Int(n))) : []
            }
            if pending.isEmpty { return }
            try await lower.write(pending, deadline: deadline)
        }
    }

    /// Reads ciphertext from the peer into the input BIO; false at the end of the stream.
    private func fill(deadline: ContinuousClock.Instant?) async throws -> Bool {
        let bytes = try await lower.read(max: 16384, deadline: deadline)
        if bytes.isEmpty { return false }
        feed(bytes)
        return true
    }

    /// Hands ciphertext from the peer to OpenSSL's input BIO.
    private func feed(_ bytes: [UInt8]) {
        lock.withLock { _ in
            _ = bytes.withUnsafeBytes { BIO_write(input, $0.baseAddress, Int32($0.count)) }
        }
    }

    private func failure(_ what: String, code: Int32) -> TLSError {
        let reason = lock.withLock { _ in lastError }
        if reason.hasPrefix(": ") { return TLSError(what + reason) }
        if code == SSL_ERROR_SYSCALL { return TLSError(what + ": the connection broke") }
        return TLSError("\(what) (SSL error \(code))")
    }
}
