// Throwaway certificates for TLS tests, made at test time by the `openssl` command: a CA of
// our own and leaf certificates it signs for the names a test needs. Nothing is trusted
// outside the test: clients are given the CA file explicitly.

import Foundation
import TernCore

public struct TestCertificates: Sendable {
    public let dir: String
    /// The CA certificate (PEM), for a client's CA file.
    public let caFile: String
    let caKey: String

    /// A fresh CA in a temporary directory.
    public static func make() async throws -> TestCertificates {
        let dir = NSTemporaryDirectory() + "tern-certs-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let ca = TestCertificates(dir: dir, caFile: dir + "/ca.crt", caKey: dir + "/ca.key")
        try await openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt",
                           "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                           "-subj", "/CN=Tern Test CA", "-keyout", ca.caKey, "-out", ca.caFile,
                           "-addext", "basicConstraints=critical,CA:TRUE",
                           "-addext", "keyUsage=critical,keyCertSign,cRLSign"], in: dir)
        return ca
    }

    /// A certificate for `name` signed by this CA; returns the certificate and key files
    /// (`<stem>.crt`, `<stem>.key`).
    public func leaf(_ name: String, stem: String? = nil) async throws
        -> (certificate: String, key: String)
    {
        let base = dir + "/" + (stem ?? name)
        let ext = base + ".ext"
        try ("subjectAltName=DNS:\(name)\nbasicConstraints=CA:FALSE\n"
             + "extendedKeyUsage=serverAuth\n").write(toFile: ext, atomically: true,
                                                       encoding: .utf8)
        try await Self.openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                "-nodes", "-subj", "/CN=\(name)", "-keyout", base + ".key",
                                "-out", base + ".csr"], in: dir)
        try await Self.openssl(["x509", "-req", "-in", base + ".csr", "-CA", caFile,
                                "-CAkey", caKey, "-CAcreateserial", "-days", "2",
                                "-extfile", ext, "-out", base + ".crt"], in: dir)
        return (base + ".crt", base + ".key")
    }

    public func remove() { try? FileManager.default.removeItem(atPath: dir) }

    /// Runs openssl to completion; its output goes to a log that a failure quotes.
    static func openssl(_ args: [String], in dir: String) async throws {
        let log = dir + "/openssl.log"
        let pid = try spawn("/usr/bin/openssl", args, log: log)
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 {
            try await Task.sleep(for: .milliseconds(10))
        }
        guard status == 0 else {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw ConfigError("openssl", "\(args.first ?? "") failed (\(status)): \(text)")
        }
    }
}
