// The classifier under libFuzzer. `scripts/fuzz-classify` builds this with
// `-sanitize=fuzzer,address -D FUZZING` (linked by lld: gold fails on libFuzzer's archive);
// libFuzzer's driver then calls `LLVMFuzzerTestOneInput` with mutated messages, and any
// crash, hang or sanitizer report is a bug. Built normally (as `swift build` does), it
// replays the files it is given through the classifier instead, to reproduce a crash under
// the debugger.

import Foundation
import TernMail

let classifier = BounceClassifier(
    verp: VERP(secret: Array(repeating: 7, count: 16), domain: "bounces.tern.example"))

func classifyOne(_ message: [UInt8]) {
    let records = classifier.classify(message, envelopeRecipients: [])
    // Every message gives at least one record, and every record serialises.
    precondition(!records.isEmpty, "no record for a message")
    for r in records { precondition(r.json.hasPrefix("{"), "a record without JSON") }
}

#if FUZZING
public typealias Argv = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>

@_silgen_name("LLVMFuzzerRunDriver")
func runDriver(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<Argv>,
               _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// What libFuzzer calls with each input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data else { return 0 }
    classifyOne(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

/// The process's entry point: SwiftPM links an executable's `main` to this name, and
/// libFuzzer's driver takes over from here.
@_cdecl("tern_fuzz_classify_main")
public func fuzzMain(_ argc: CInt, _ argv: Argv) -> CInt {
    var count = argc
    var vector = argv
    return runDriver(&count, &vector, fuzzOne)
}
#else
@main
enum Replay {
    static func main() {
        var failures = 0
        for path in CommandLine.arguments.dropFirst() {
            guard let data = FileManager.default.contents(atPath: path) else {
                FileHandle.standardError.write(Data("cannot read \(path)\n".utf8))
                failures += 1
                continue
            }
            classifyOne(Array(data))
        }
        exit(failures == 0 ? 0 : 1)
    }
}
#endif
