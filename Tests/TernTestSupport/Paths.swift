// Where the tests find the repository (the test world, fixtures, config files) and the
// python3 that has the test world's packages.

import Foundation

/// The repository's root folder, from this file's place in it.
public let repositoryRoot: String =
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

/// python3 as found on PATH (the one scripts/install-deps gave aiosmtpd and dnslib).
public let python3: String = {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin"
    for dir in path.split(separator: ":") {
        let candidate = String(dir) + "/python3"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return "/usr/bin/python3"
}()
