// swift-tools-version:6.0
//
// Tern: five daemons over shared libraries. Layers, lowest first:
//   C modules (Debian libraries) -> TernCore (I/O, Redis, runtime) -> TernMail (mail concepts,
//   stream contracts, pools) -> TernSMTP (protocol), TernDNS (libunbound) -> one library per
//   daemon -> thin executables.
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

func system(_ name: String, _ apt: String) -> Target {
    .systemLibrary(name: name, path: "Sources/\(name)", providers: [.apt([apt])])
}

func daemon(_ name: String, _ folder: String, _ library: String) -> Target {
    .executableTarget(
        name: name, dependencies: [.target(name: library), "TernCore", "TernMail"],
        path: "Sources/\(folder)", swiftSettings: strict)
}

let package = Package(
    name: "Tern",
    products: [
        .executable(name: "tern-api", targets: ["tern-api"]),
        .executable(name: "tern-scheduler", targets: ["tern-scheduler"]),
        .executable(name: "tern-sender", targets: ["tern-sender"]),
        .executable(name: "tern-bounce-receiver", targets: ["tern-bounce-receiver"]),
        .executable(name: "tern-reputation", targets: ["tern-reputation"]),
        .executable(name: "ternctl", targets: ["ternctl"]),
    ],
    targets: [
        system("CHiredis", "libhiredis-dev"),
        system("COpenSSL", "libssl-dev"),
        system("CSystemd", "libsystemd-dev"),
        system("CUnbound", "libunbound-dev"),
        .systemLibrary(name: "CLinux", path: "Sources/CLinux"),

        .target(
            name: "TernCore", dependencies: ["CHiredis", "COpenSSL", "CSystemd", "CLinux"],
            swiftSettings: strict),
        .target(name: "TernMail", dependencies: ["TernCore"], swiftSettings: strict),
        .target(name: "TernSMTP", dependencies: ["TernCore", "TernMail"], swiftSettings: strict),
        .target(
            name: "TernDNS", dependencies: ["TernCore", "TernMail", "CUnbound"],
            swiftSettings: strict),

        .target(name: "TernAPI", dependencies: ["TernCore", "TernMail", "TernDNS"],
                swiftSettings: strict),
        .target(
            name: "TernScheduler", dependencies: ["TernCore", "TernMail"],
            swiftSettings: strict),
        .target(
            name: "TernSender", dependencies: ["TernCore", "TernMail", "TernSMTP", "TernDNS"],
            swiftSettings: strict),
        .target(
            name: "TernBounce", dependencies: ["TernCore", "TernMail", "TernSMTP", "TernDNS"],
            swiftSettings: strict),
        .target(
            name: "TernReputation", dependencies: ["TernCore", "TernMail", "TernDNS"],
            swiftSettings: strict),

        // ternctl checks configuration with the daemons' own settings parsers.
        .target(
            name: "TernCtl",
            dependencies: ["TernCore", "TernMail", "TernAPI", "TernScheduler", "TernSender",
                           "TernBounce", "TernReputation"],
            swiftSettings: strict),
        .executableTarget(
            name: "ternctl", dependencies: ["TernCtl"], path: "Sources/ternctl",
            swiftSettings: strict),
        // The classifier's libFuzzer target; scripts/fuzz-classify builds it with
        // -sanitize=fuzzer. A plain build replays files through the classifier instead.
        .executableTarget(
            name: "tern-fuzz-classify", dependencies: ["TernMail"], path: "Sources/fuzz-classify",
            swiftSettings: strict),

        daemon("tern-api", "api", "TernAPI"),
        daemon("tern-scheduler", "scheduler", "TernScheduler"),
        daemon("tern-sender", "sender", "TernSender"),
        daemon("tern-bounce-receiver", "bounce-receiver", "TernBounce"),
        daemon("tern-reputation", "reputation", "TernReputation"),

        // Figures, not tests: bench/dkim builds and runs it.
        .executableTarget(
            name: "tern-bench-dkim", dependencies: ["TernCore", "TernMail"],
            path: "bench/DKIMBench", swiftSettings: strict),

        .target(
            name: "TernTestSupport", dependencies: ["TernCore"], path: "Tests/TernTestSupport",
            swiftSettings: strict),
        .testTarget(
            name: "TernCoreTests", dependencies: ["TernCore", "TernTestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "TernMailTests", dependencies: ["TernMail", "TernCore", "TernTestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "TernCtlTests", dependencies: ["TernCtl", "TernMail", "TernCore"],
            swiftSettings: strict),
        .testTarget(
            name: "TernSMTPTests",
            dependencies: ["TernSMTP", "TernMail", "TernCore", "TernTestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "TernSchedulerTests",
            dependencies: ["TernScheduler", "TernCore", "TernMail", "TernTestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "TernDaemonTests",
            dependencies: ["TernAPI", "TernScheduler", "TernSender", "TernBounce", "TernCore",
                           "TernMail", "TernDNS", "TernTestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "TernReputationTests",
            dependencies: ["TernReputation", "TernScheduler", "TernCore", "TernMail", "TernDNS",
                           "TernTestSupport"],
            swiftSettings: strict),
    ]
)
