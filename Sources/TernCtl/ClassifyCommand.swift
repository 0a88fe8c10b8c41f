// `ternctl classify`: the bounce receiver's classifier, offline. Reads whole messages
// from files (or standard input) and prints one JSON line per recipient a report is about,
// exactly the records the receiver would write to `inbound` (docs/bounces.md).

import Foundation
import TernCore
import TernMail

enum ClassifyCommand {
    static let command = CtlCommand(
        name: "classify", summary: "classify bounces, complaints and auto-replies (JSON lines)",
        help: """
            usage: ternctl classify [--rcpt ADDRESS]... [--feedback]
                                    [--verp-domain D --verp-secret HEX] [FILE...]

            Reads each FILE (standard input when there is none, or for "-"), a whole message
            as received, and prints one JSON object per line for every recipient the message
            reports on: kind, severity, reason, status, remote reply, recipient, message id.
            With several files each line also has "file". The reasons are listed in
            docs/bounces.md. Needs no Redis and no daemon.

              --rcpt ADDRESS        the envelope recipient the message came to (a VERP
                                    return path ties it to a message); may repeat
              --feedback            the message came to a feedback-loop address, where a
                                    plain forward of a message is a complaint
              --verp-domain DOMAIN  with --verp-secret, verify VERP signatures (default:
                                    TERN_VERP_DOMAIN); without a key, ids are read from the
                                    address's shape and marked "verp-unverified"
              --verp-secret HEX     the HMAC key (default: TERN_VERP_SECRET)

            Exit status: 0 when every input was read, 66 when one could not be, 64 for bad
            usage.
            """,
        run: run)

    static func run(_ arguments: [String], _ io: CtlOutput) throws -> Int32 {
        let args = try ArgumentReader(arguments, valued: ["rcpt", "verp-domain", "verp-secret"],
                                      flags: ["feedback"])
        let env = ProcessInfo.processInfo.environment
        let domain = args.options["verp-domain"]?.last ?? env["TERN_VERP_DOMAIN"] ?? ""
        let secret = args.options["verp-secret"]?.last ?? env["TERN_VERP_SECRET"] ?? ""
        var verp: VERP?
        if !domain.isEmpty || !secret.isEmpty {
            guard !domain.isEmpty, let key = Crypto.bytes(hex: secret), key.count >= 16 else {
                throw UsageError("a VERP key needs both a domain and at least 32 hex digits")
            }
            verp = VERP(secret: key, domain: domain)
        }
        let classifier = BounceClassifier(verp: verp)
        let files = args.operands.isEmpty ? ["-"] : args.operands
        var status: Int32 = 0
        for file in files {
            let bytes: [UInt8]
            if file == "-" {
                bytes = Array(FileHandle.standardInput.readDataToEndOfFile())
            } else if let data = FileManager.default.contents(atPath: file) {
                bytes = Array(data)
            } else {
                io.error("classify: cannot read \(file)")
                status = 66
                continue
            }
            let records = classifier.classify(
                bytes, envelopeRecipients: args.options["rcpt"] ?? [],
                toFeedbackAddress: args.flags.contains("feedback"))
            for record in records {
                io.line(files.count > 1 ? withFile(record.json, file) : record.json)
            }
        }
        return status
    }

    /// The record's JSON with a "file" key added in front.
    static func withFile(_ json: String, _ file: String) -> String {
        let name = String(decoding: (try? JSONSerialization.data(
            withJSONObject: [file], options: [.withoutEscapingSlashes])) ?? Data("[\"\"]".utf8),
            as: UTF8.self).dropFirst().dropLast()
        return "{\"file\":" + name + "," + json.dropFirst()
    }
}
