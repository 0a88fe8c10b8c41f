// Shutdown's reload requests (what SIGHUP becomes): a request made before anyone reads is
// kept for the reader, and later ones arrive too; none of them is a shutdown.

import Testing
import TernCore

@Suite struct ShutdownTests {
    @Test func reloadRequestsReachTheReader() async {
        let shutdown = Shutdown()
        shutdown.requestReload()
        var seen = 0
        for await _ in shutdown.reloadRequests {
            seen += 1
            if seen == 2 { break }
            shutdown.requestReload()
        }
        #expect(seen == 2)
        #expect(!shutdown.isRequested)
    }
}
