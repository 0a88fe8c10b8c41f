// DNSResolver over libunbound against the test world's DNS server, and against a "server"
// that never answers, which must come back as a failure rather than hang.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernDNS

@Suite(.serialized) struct SenderResolverTests {
    @Test func answersFromTheWorld() async throws {
        let world = try await SenderTestWorld.start()
        defer { world.stop() }
        let resolver = try DNSResolver(forwarder: SocketAddress(host: "127.0.0.1",
                                                               port: world.dnsPort)!,
                                      timeout: .seconds(10))
        guard case .records(let two) = await resolver.mx("twomx.example") else {
            Issue.record("no MX for twomx.example")
            return
        }
        #expect(Set(two) == [MXRecord(preference: 10, host: "mx1.twomx.example"),
                             MXRecord(preference: 20, host: "mx2.twomx.example")])
        guard case .records(let null) = await resolver.mx("nullmx.example") else {
            Issue.record("no MX for nullmx.example")
            return
        }
        #expect(MXOrdering.plan(for: "nullmx.example", records: null) == .nullMX)
        if case .noData = await resolver.mx("nomx.example") {} else {
            Issue.record("nomx.example should have no MX")
        }
        if case .nxDomain = await resolver.mx("nosuchdomain.example") {} else {
            Issue.record("nosuchdomain.example should not exist")
        }
        if case .failure(let why) = await resolver.mx("servfail.example") {
            #expect(why == "SERVFAIL")
        } else {
            Issue.record("servfail.example should fail")
        }
        guard case .records(let v4) = await resolver.addresses("mx1.inbox.example", ipv6: false)
        else {
            Issue.record("no A for mx1.inbox.example")
            return
        }
        #expect(v4 == ["127.0.0.11"])
        guard case .records(let v6) = await resolver.addresses("mx.dual.example", ipv6: true)
        else {
            Issue.record("no AAAA for mx.dual.example")
            return
        }
        #expect(v6 == ["::1"])
        if case .noData = await resolver.addresses("mx1.inbox.example", ipv6: true) {} else {
            Issue.record("mx1.inbox.example has no AAAA")
        }
        // Many at once: each task gets its own answer back.
        let hosts = (0..<50).map { $0 % 2 == 0 ? "mx1.inbox.example" : "mx2.twomx.example" }
        let answers = await withTaskGroup(of: (String, [String]).self) { group in
            for host in hosts {
                group.addTask {
                    if case .records(let a) = await resolver.addresses(host, ipv6: false) {
                        return (host, a)
                    }
                    return (host, [])
                }
            }
            var all: [(String, [String])] = []
            for await pair in group { all.append(pair) }
            return all
        }
        #expect(answers.count == 50)
        for (host, a) in answers {
            #expect(a == [host == "mx1.inbox.example" ? "127.0.0.11" : "127.0.0.15"])
        }
        await resolver.close()
        if case .failure = await resolver.mx("inbox.example") {} else {
            Issue.record("a closed resolver should refuse")
        }
    }

    @Test func answersAreKeptForTheirTTL() async throws {
        // A zone whose records live two seconds, served by a DNS server that notes every
        // query it is asked: a busy domain must cost one lookup per TTL, not one per message.
        let dir = NSTemporaryDirectory() + "tern-ttl-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let script = """
            import sys, time
            sys.path.insert(0, sys.argv[1])
            from dnszone import DnsService, Zone
            asked = open(sys.argv[2] + "/asked", "a", buffering=1)
            zone = Zone({"ttl.example": {"MX": [[10, "mx.ttl.example"]]},
                         "mx.ttl.example": {"A": ["127.0.0.31"]}}, ttl=2)
            dns = DnsService(zone, "127.0.0.1", 0, log=lambda line: asked.write(line + "\\n"))
            dns.start()
            open(sys.argv[2] + "/port", "w").write(str(dns.port))
            time.sleep(600)
            """
        try script.write(toFile: dir + "/dns.py", atomically: true, encoding: .utf8)
        let pid = try spawn(python3, [dir + "/dns.py", repositoryRoot + "/testworld", dir],
                            log: dir + "/dns.log")
        defer { stopProcess(pid) }
        var port: UInt16?
        for _ in 0..<200 where port == nil {
            port = (try? String(contentsOfFile: dir + "/port", encoding: .utf8)).flatMap {
                UInt16($0)
            }
            if port == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        let forwarder = try #require(port.flatMap { SocketAddress(host: "127.0.0.1", port: $0) })
        let resolver = try DNSResolver(forwarder: forwarder, timeout: .seconds(10))
        func asked(_ question: String) -> Int {
            let log = (try? String(contentsOfFile: dir + "/asked", encoding: .utf8)) ?? ""
            return log.split(separator: "\n").filter { $0.contains(" " + question + " ") }.count
        }
        let mx = [MXRecord(preference: 10, host: "mx.ttl.example")]
        for _ in 0..<6 {
            guard case .records(let found) = await resolver.mx("ttl.example") else {
                Issue.record("no MX for ttl.example")
                return
            }
            #expect(found == mx)
            guard case .records(let a) = await resolver.addresses("mx.ttl.example", ipv6: false)
            else {
                Issue.record("no A for mx.ttl.example")
                return
            }
            #expect(a == ["127.0.0.31"])
        }
        // Six lookups of each, one query each (two if libunbound resent one that a loaded
        // machine answered late); without the cache there would be six.
        let mxAsked = asked("ttl.example. MX")
        #expect(mxAsked == 1 || mxAsked == 2)
        #expect([1, 2].contains(asked("mx.ttl.example. A")))
        // Past the TTL the next lookup asks again. libunbound keeps its own copy by whole
        // seconds, so up to a second longer than the TTL.
        try await Task.sleep(for: .milliseconds(3600))
        guard case .records(let again) = await resolver.mx("ttl.example") else {
            Issue.record("no MX for ttl.example after its TTL")
            return
        }
        #expect(again == mx)
        #expect(asked("ttl.example. MX") > mxAsked)
        await resolver.close()
    }

    @Test func aSilentServerTimesOut() async throws {
        // A UDP socket that is bound but never read: queries vanish into it.
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr)
        _ = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        let port = UInt16(bigEndian: sa.sin_port)
        let resolver = try DNSResolver(forwarder: SocketAddress(host: "127.0.0.1", port: port)!,
                                      timeout: .milliseconds(300))
        if case .failure(let why) = await resolver.mx("inbox.example") {
            #expect(why.contains("timed out"))
        } else {
            Issue.record("a silent server should fail the lookup")
        }
        await resolver.close()
    }

    @Test func aLookupFromACancelledTaskAnswersAtOnce() async throws {
        // Nothing listens on port 9 of loopback, and nothing is asked: the task is cancelled
        // before its lookup starts, which must answer rather than wait forever.
        let resolver = try DNSResolver(forwarder: SocketAddress(host: "127.0.0.1", port: 9)!,
                                       timeout: .seconds(60))
        let task = Task { () -> String in
            while !Task.isCancelled { await Task.yield() }
            if case .failure(let why) = await resolver.mx("inbox.example") { return why }
            return "answered"
        }
        task.cancel()
        #expect(await task.value == "cancelled")
        await resolver.close()
    }

    @Test func namesFromTheWireAreChecked() {
        #expect(DNSResolver.mxRecord([0, 10, 3] + Array("mx1".utf8) + [7] + Array("example".utf8)
                                    + [0]) == MXRecord(preference: 10, host: "mx1.example"))
        #expect(DNSResolver.mxRecord([0, 0, 0]) == MXRecord(preference: 0, host: "."))
        // A label with a space, a compression pointer, a truncated name.
        #expect(DNSResolver.mxRecord([0, 10, 3, 0x61, 0x20, 0x62, 0]) == nil)
        #expect(DNSResolver.mxRecord([0, 10, 0xC0, 0x0C]) == nil)
        #expect(DNSResolver.mxRecord([0, 10, 5, 0x61]) == nil)
        #expect(DNSResolver.addressText([127, 0, 0, 1], ipv6: false) == "127.0.0.1")
        #expect(DNSResolver.addressText([127, 0, 0], ipv6: false) == nil)
        #expect(DNSResolver.isPlausibleName("inbox.example."))
        #expect(!DNSResolver.isPlausibleName("in box.example"))
        #expect(!DNSResolver.isPlausibleName("a..example"))
    }
}
