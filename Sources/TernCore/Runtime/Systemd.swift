// Talking to systemd: readiness, stopping, the watchdog, and socket activation.
// Outside systemd every call is a no-op, so the daemons run the same by hand.

import CSystemd
import Foundation

public enum Systemd {
    public static func ready(status: String) { notify("READY=1\nSTATUS=\(status)") }
    public static func stopping() { notify("STOPPING=1") }
    public static func status(_ s: String) { notify("STATUS=\(s)") }

    static func notify(_ state: String) { _ = sd_notify(0, state) }

    /// Pings the watchdog at half its interval while the process runs, if one is set.
    /// `healthy` is asked before each ping: a stuck daemon stops pinging and is restarted.
    public static func startWatchdog(healthy: @escaping @Sendable () async -> Bool) {
        var usec: UInt64 = 0
        guard sd_watchdog_enabled(0, &usec) > 0, usec > 0 else { return }
        let interval = Duration.microseconds(Int64(usec / 2))
        Task.detached {
            while !Task.isCancelled {
                if await healthy() { notify("WATCHDOG=1") }
                try? await Task.sleep(for: interval)
            }
        }
    }

    /// Listening sockets passed by a socket unit (`sd_listen_fds`), first one only.
    public static func listenDescriptor() -> Int32? {
        let n = sd_listen_fds(1)
        return n >= 1 ? SD_LISTEN_FDS_START : nil
    }
}
