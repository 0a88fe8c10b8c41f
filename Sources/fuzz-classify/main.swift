// The classifier under libFuzzer. `scripts/fuzz-classify` builds this with
// `-sanitize=fuzzer -D FUZZING`; libFuzzer then calls `classifyOne` with mutated messages
// and any crash, hang or sanitizer report is a bug. Built normally (as `swift build` does),
// it replays the files it is given through the classifier, to reproduce a crash.

import Foundation
import TernMail

let classifier = BounceClassifier(
    verp: VERP(secret: Array(repeating: 7, count: 16), domain: "bounces.tern.example"))

func classifyOne(_ message: [UInt8]) -> CInt {
    let records = classifier.classify(message, envelopeRecipients: [])
    // Every record must serialise; an empty result is a bug too.
    precondition(!records.isEmpty, "no record for a message")
    for r in records { precondition(!r.json.isEmpty, "a record without JSON") }
    return 0
}

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
func runDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(runDriver(&argc, &argv) { data, size in
    guard let data else { return 0 }
    return classifyOne(Array(UnsafeBufferPointer(start: data, count: size)))
})
#else
var failures = 0
for path in CommandLine.arguments.dropFirst() {
    guard let data = FileManager.default.contents(atPath: path) else {
        FileHandle.standardError.write(Data("cannot read \(path)\n".utf8))
        failures += 1
        continue
    }
    _ = classifyOne(Array(data))
}
exit(failures == 0 ? 0 : 1)
#endif
