// tern-bench-dkim: what DKIM signing costs the API per message. Prints figures; asserts
// nothing (bench/dkim builds it in release mode, makes the keys and runs it).
//
//     tern-bench-dkim RSA_PEM ED25519_PEM [MESSAGES]

import Foundation
import TernCore
import TernMail

func load(_ path: String) -> SigningKey {
    guard let pem = FileManager.default.contents(atPath: path),
          let key = try? SigningKey(pem: Array(pem))
    else {
        FileHandle.standardError.write(Data("cannot load \(path)\n".utf8))
        exit(64)
    }
    return key
}

let arguments = CommandLine.arguments
guard arguments.count >= 3 else {
    FileHandle.standardError.write(Data("usage: tern-bench-dkim RSA_PEM ED25519_PEM [N]\n".utf8))
    exit(64)
}
let rsa = load(arguments[1]), ed = load(arguments[2])
let count = arguments.count > 3 ? Int(arguments[3]) ?? 2000 : 2000

// A typical newsletter: text and HTML parts, about 6 KB in all.
let paragraph = "Grüße from Tern: this week's news, with a few links and some more text "
    + "to make a line of ordinary length.\n"
let json: [String: Any] = [
    "from": "news@example.com", "to": "reader@example.net", "subject": "This week at Example",
    "text": String(repeating: paragraph, count: 20),
    "html": "<p>" + String(repeating: paragraph, count: 20) + "</p>",
    "headers": ["List-Unsubscribe": "<https://example.com/u/1>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"],
]
let request = try SendRequest.decode(Array(try JSONSerialization.data(withJSONObject: json)))
let message = MessageBuilder.build(request, id: "01kbx4f1vqd7k8n3p2w9c6t5ya", now: Date(),
                                   hostname: "mta.example.com")

func signer(_ keys: [(String, DKIMKey.Algorithm, SigningKey)]) -> DKIMSigner {
    DKIMSigner(keys: DKIMKeyTable(keys.map {
        DKIMKey(domain: "example.com", selector: $0.0, algorithm: $0.1, key: $0.2)
    }))
}

/// CPU time of this thread, in seconds: unlike wall time, it stays honest on a machine busy
/// with other work.
func threadCPUSeconds() -> Double {
    var spec = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &spec)
    return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
}

func measure(_ name: String, _ work: () -> Int) {
    var sink = 0
    for _ in 0..<min(count / 10, 200) { sink &+= work() }       // warm up
    let clock = ContinuousClock()
    let cpuStart = threadCPUSeconds()
    let elapsed = clock.measure { for _ in 0..<count { sink &+= work() } }
    let cpu = (threadCPUSeconds() - cpuStart) / Double(count) * 1e6
    let wall = (Double(elapsed.components.seconds)
        + Double(elapsed.components.attoseconds) / 1e18) / Double(count) * 1e6
    let line = name.padding(toLength: 40, withPad: " ", startingAt: 0)
        + String(format: "%8.1f µs CPU %8.1f µs wall %8.0f messages/s per core", cpu, wall,
                 1e6 / cpu)
    print(line + (sink == 42 ? " " : ""))
}

let now = Date()
print("message: \(message.count) octets; \(count) signings per line, one thread")
measure("relaxed body + SHA-256 (no signature)") {
    Crypto.sha256(DKIMCanonicalization.relaxedBody(message[...])).count
}
measure("OpenSSL RSA-2048 signature alone") { rsa.sign(message).count }
measure("OpenSSL Ed25519 signature alone") { ed.sign(Crypto.sha256(message)).count }
let rsaOnly = signer([("r1", .rsaSHA256, rsa)])
measure("DKIMSigner, RSA-SHA256") { rsaOnly.sign(message, at: now).message.count }
let edOnly = signer([("e1", .ed25519SHA256, ed)])
measure("DKIMSigner, Ed25519-SHA256") { edOnly.sign(message, at: now).message.count }
let both = signer([("r1", .rsaSHA256, rsa), ("e1", .ed25519SHA256, ed)])
measure("DKIMSigner, both (two signatures)") { both.sign(message, at: now).message.count }
