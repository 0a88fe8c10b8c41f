// Helpers for the DKIM tests: keys made with `openssl genpkey` (once per test run), their
// DNS records derived by the openssl command rather than by Tern, and dkimpy as the
// independent verifier, fed the records through its `dnsfunc` (no DNS, no network).

import Foundation
import TernCore
@testable import TernMail

/// Runs a program on its own thread (waiting for a process blocks) and returns its exit
/// status and standard output.
func runTool(_ arguments: [String], input: [UInt8] = []) async throws -> (Int32, [UInt8]) {
    try await withCheckedThrowingContinuation { continuation in
        Thread {
            do {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
                process.arguments = arguments
                let stdin = Pipe(), stdout = Pipe()
                process.standardInput = stdin
                process.standardOutput = stdout
                process.standardError = FileHandle.nullDevice  // openssl's progress dots
                try process.run()
                stdin.fileHandleForWriting.write(Data(input))
                try stdin.fileHandleForWriting.close()
                let output = stdout.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                continuation.resume(returning: (process.terminationStatus, Array(output)))
            } catch {
                continuation.resume(throwing: error)
            }
        }.start()
    }
}

/// A private key in PEM and the TXT record that publishes its public half.
struct TestKeyPair: Sendable {
    let pem: [UInt8]
    let record: String
}

struct ToolFailed: Error, CustomStringConvertible {
    let description: String
}

/// Keys are slow to make (RSA-2048 takes a good fraction of a second): one of each kind per
/// test run, shared by every test.
actor TestKeys {
    static let shared = TestKeys()
    private var made: [String: Task<TestKeyPair, any Error>] = [:]

    /// `kind` is "rsa" (2048 bits), "rsa1024", "rsa512" or "ed25519".
    func pair(_ kind: String) async throws -> TestKeyPair {
        if let pair = made[kind] { return try await pair.value }
        // Stored before the first wait, so tests asking at once share one key.
        let task = Task { try await TestKeys.generate(kind) }
        made[kind] = task
        return try await task.value
    }

    static func generate(_ kind: String) async throws -> TestKeyPair {
        let options: [String]
        switch kind {
        case "ed25519": options = ["-algorithm", "ED25519"]
        case "rsa1024": options = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"]
        case "rsa512": options = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:512"]
        default: options = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
        }
        let (status, pem) = try await runTool(["openssl", "genpkey"] + options)
        guard status == 0, !pem.isEmpty else { throw ToolFailed(description: "genpkey") }
        let (pubStatus, der) = try await runTool(["openssl", "pkey", "-pubout", "-outform",
                                                  "DER"], input: pem)
        guard pubStatus == 0, !der.isEmpty else { throw ToolFailed(description: "pkey") }
        // An Ed25519 SubjectPublicKeyInfo ends with the raw 32-octet key (RFC 8410 §4),
        // which is what RFC 8463 §4.2 publishes.
        let record = kind == "ed25519"
            ? "v=DKIM1; k=ed25519; p=" + Data(der.suffix(32)).base64EncodedString()
            : "v=DKIM1; k=rsa; p=" + Data(der).base64EncodedString()
        return TestKeyPair(pem: pem, record: record)
    }
}

/// A key table over test keys: (domain pattern, selector, algorithm, pair).
func keyTable(_ entries: [(String, String, DKIMKey.Algorithm, TestKeyPair)]) throws
    -> DKIMKeyTable
{
    var text = ""
    var files: [String: [UInt8]] = [:]
    for (n, entry) in entries.enumerated() {
        text += "\(entry.0) \(entry.1) \(entry.2.rawValue) key\(n).pem\n"
        files["key\(n).pem"] = entry.3.pem
    }
    return try DKIMKeyTable.parse(text, file: "keys") { path in
        files[path].map { .success(($0, path)) } ?? .failure(.init(message: "no \(path)"))
    }
}

/// dkimpy's verdict on every DKIM-Signature of `message`, top first, with the public keys
/// given as `records` (DNS name without the final dot -> TXT): "pass" or "fail" (dkimpy's
/// DKIMException too, such as a body hash mismatch); any other exception's text otherwise.
func dkimpyVerify(_ message: [UInt8], records: [String: String]) async throws -> [String] {
    let json = String(decoding: try JSONSerialization.data(withJSONObject: records), as: UTF8.self)
    let script = """
        import dkim, json, sys
        records = json.loads(r'''\(json)''')
        def dnsfunc(name, timeout=5):
            txt = records.get(name.decode().rstrip('.'))
            return txt.encode() if txt else None
        message = sys.stdin.buffer.read()
        d = dkim.DKIM(message)
        count = sum(1 for name, _ in d.headers if name.lower() == b'dkim-signature')
        verdicts = []
        for i in range(count):
            try:
                verdicts.append('pass' if dkim.DKIM(message).verify(idx=i, dnsfunc=dnsfunc)
                                else 'fail')
            except dkim.DKIMException as e:   # a body hash mismatch, say
                print(e, file=sys.stderr)
                verdicts.append('fail')
            except Exception as e:
                verdicts.append('error: %s' % e)
        print(json.dumps(verdicts))
        """
    let (status, output) = try await runTool(["python3", "-c", script], input: message)
    guard status == 0 else { throw ToolFailed(description: "dkimpy exited \(status)") }
    return try JSONDecoder().decode([String].self, from: Data(output))
}

/// The DKIM-Signature fields of a signed message, unfolded, top first.
func signatureFields(_ message: [UInt8]) -> [String] {
    let (fields, _) = DKIMSigner.headerFields(message)
    return fields.filter { $0.name == "dkim-signature" }.map {
        String(decoding: message[$0.range], as: UTF8.self)
            .replacingOccurrences(of: "\r\n", with: "")
    }
}

/// The value of tag `name` in an unfolded DKIM-Signature field, whitespace removed.
func tag(_ name: String, in field: String) -> String? {
    let value = field.drop { $0 != ":" }.dropFirst()
    for part in value.split(separator: ";") {
        let pair = part.split(separator: "=", maxSplits: 1)
        if pair.count == 2, pair[0].trimmingCharacters(in: .whitespaces) == name {
            return pair[1].filter { !$0.isWhitespace }
        }
    }
    return nil
}
