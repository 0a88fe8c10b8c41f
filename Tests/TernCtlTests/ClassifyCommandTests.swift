// ternctl's command table and `ternctl classify`, run in-process with captured output.

import Foundation
import Testing
import TernCtl

@Suite struct ClassifyCommandTests {
    @Test func helpListsClassify() {
        let io = CtlOutput(echo: false)
        #expect(TernCtl.main(["--help"], io: io) == 0)
        #expect(io.out.contains("classify"))
    }
}
