// Blocklist answers, an IP's standing over rounds, and a pool's active IPs: pure logic.

import Foundation
import Testing
import TernCore
import TernDNS
import TernMail
@testable import TernReputation

@Suite struct BlocklistTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path

    var zen: Blocklist {
        get throws {
            try BlocklistSet(file: Self.root + "/config/dnsbl.json").lists
                .first { $0.name == "spamhaus-zen" }!
        }
    }

    @Test func theDefaultSetReadsAndLeavesDisabledListsOut() throws {
        let set = try BlocklistSet(file: Self.root + "/config/dnsbl.json")
        let names = set.lists.map(\.name)
        #expect(names.contains("spamhaus-zen") && names.contains("barracuda")
                && names.contains("spamcop") && names.contains("uceprotect-l1")
                && names.contains("psbl") && names.contains("mailspike-bl"))
        #expect(!names.contains("sorbs") && !names.contains("uceprotect-l2"))
        let test = try BlocklistSet(file: Self.root + "/testworld/dnsbl.json")
        #expect(test.lists.map(\.name) == ["zen-test", "bl-test"])
        #expect(test.lists.allSatisfy { $0.zone.hasSuffix(".example") })
    }

    @Test func queryNamesReverseOctetsAndNibbles() throws {
        let zen = try self.zen
        #expect(zen.queryName("192.0.2.10") == "10.2.0.192.zen.spamhaus.org")
        #expect(zen.queryName("2001:db8::1") == "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0."
                + "8.b.d.0.1.0.0.2.zen.spamhaus.org")
        let spamcop = try BlocklistSet(file: Self.root + "/config/dnsbl.json").lists
            .first { $0.name == "spamcop" }!
        #expect(spamcop.queryName("2001:db8::1") == nil)
    }

    @Test(arguments: [
        (DNSAnswer<[String]>.nxDomain, "clean"),
        (.noData, "clean"),
        (.failure("SERVFAIL"), "unknown"),
        (.failure("timed out after 1s"), "unknown"),
        (.records(["127.0.0.2"]), "listed"),
        (.records(["127.0.0.4", "127.0.0.10"]), "listed"),
        (.records(["127.0.0.11"]), "listed"),
        (.records(["127.0.0.12"]), "error"),
        (.records(["127.255.255.254"]), "error"),
        (.records(["127.255.255.255"]), "error"),
        (.records(["127.0.0.2", "127.255.255.252"]), "error"),
        (.records(["10.0.0.1"]), "error"),
    ])
    func zenAnswersAreClassified(_ answer: DNSAnswer<[String]>, _ kind: String) throws {
        let result = try zen.classify(answer)
        switch result {
        case .clean: #expect(kind == "clean")
        case .unknown: #expect(kind == "unknown")
        case .listed: #expect(kind == "listed")
        case .error: #expect(kind == "error")
        }
    }

    @Test func anErrorAnswerSaysWhatItMeans() throws {
        guard case .error(let a, let meaning) = try zen.classify(.records(["127.255.255.254"]))
        else {
            Issue.record("not an error")
            return
        }
        #expect(a == "127.255.255.254")
        #expect(meaning.contains("public or open resolver"))
        guard case .listed(let code, let m) = try zen.classify(.records(["127.0.0.10"])) else {
            Issue.record("not listed")
            return
        }
        #expect(code == "127.0.0.10" && m.contains("PBL"))
    }

    @Test(arguments: [
        #"{"lists": [{"name": "a", "zone": "x y", "listed": {"127.0.0.2": "l"}}]}"#,
        #"{"lists": [{"name": "a", "zone": "a.example", "listed": {}}]}"#,
        #"{"lists": [{"name": "a", "zone": "a.example", "listed": {"127.0.0.9-127.0.0.2": "l"}}]}"#,
        #"{"lists": [{"name": "a", "zone": "a.example", "listed": {"127.0.0.2": "l"}},"#
            + #" {"name": "a", "zone": "b.example", "listed": {"127.0.0.2": "l"}}]}"#,
        #"{"lists": 3}"#,
    ])
    func badListFilesAreConfigurationErrors(_ json: String) {
        #expect(throws: ConfigError.self) { try BlocklistSet(json: Data(json.utf8)) }
    }

    /// A file of the wrong shape says where and what, not Swift's description of the error.
    @Test(arguments: [
        ("[]", "not a blocklist file: is not an object"),
        (#"{"lists": 3}"#, "not a blocklist file: lists: is not an array"),
        (#"{"lists": [{"name": "a", "listed": {}}]}"#,
         "not a blocklist file: lists[0].zone: is missing"),
        (#"{"lists": [{"name": "a", "zone": 7, "listed": {}}]}"#,
         "not a blocklist file: lists[0].zone: is not a string"),
        ("{", "not a blocklist file: is not valid JSON"),
    ])
    func aMisshapenFileSaysWhere(_ json: String, _ problem: String) {
        do {
            _ = try BlocklistSet(json: Data(json.utf8))
            Issue.record("accepted")
        } catch let e as ConfigError {
            #expect(e.problem == problem)
        } catch {
            Issue.record("not a ConfigError: \(error)")
        }
    }
}

@Suite struct IPStandingTests {
    let listed = BlocklistAnswer.listed(code: "127.0.0.2", meaning: "spam")

    @Test func listedAtOnceBackAfterTheCleanChecks() {
        var s = IPStanding()
        #expect(s.apply(["a": .clean, "b": .clean], nowMs: 1, cleanChecksNeeded: 2) == nil)
        #expect(s.usable && s.status == "active")
        #expect(s.apply(["a": listed, "b": .clean], nowMs: 2, cleanChecksNeeded: 2) == .listed)
        #expect(!s.usable && s.listedSinceMs == 2 && s.reason == "listed on a (127.0.0.2)")
        #expect(s.apply(["a": listed, "b": .clean], nowMs: 3, cleanChecksNeeded: 2) == nil)
        #expect(s.listings["a"]?.sinceMs == 2 && s.listings["a"]?.checkedMs == 3)
        // One clean round is not enough; a flap back to listed starts the count again.
        #expect(s.apply(["a": .clean, "b": .clean], nowMs: 4, cleanChecksNeeded: 2) == nil)
        #expect(s.cleanChecks == 1 && !s.usable)
        #expect(s.reason == "no longer listed; 1 clean round(s) counted towards its return")
        #expect(s.apply(["a": .clean, "b": listed], nowMs: 5, cleanChecksNeeded: 2) == nil)
        #expect(s.cleanChecks == 0)
        #expect(s.apply(["a": .clean, "b": .clean], nowMs: 6, cleanChecksNeeded: 2) == nil)
        #expect(s.apply(["a": .clean, "b": .clean], nowMs: 7, cleanChecksNeeded: 2) == .delisted)
        #expect(s.usable && s.listings.isEmpty)
    }

    @Test func unknownAndErrorAnswersChangeNothing() {
        var s = IPStanding()
        #expect(s.apply(["a": .unknown("timed out")], nowMs: 1, cleanChecksNeeded: 1) == nil)
        #expect(s.apply(["a": .error("127.255.255.254", "public resolver")], nowMs: 2,
                        cleanChecksNeeded: 1) == nil)
        #expect(s.usable)
        #expect(s.apply(["a": listed], nowMs: 3, cleanChecksNeeded: 1) == .listed)
        // The list that listed it did not answer: it stays listed, no clean round counted.
        #expect(s.apply(["a": .unknown("SERVFAIL")], nowMs: 4, cleanChecksNeeded: 1) == nil)
        #expect(s.apply(["a": .error("127.255.255.255", "rate limit")], nowMs: 5,
                        cleanChecksNeeded: 1) == nil)
        #expect(!s.usable && s.cleanChecks == 0)
        #expect(s.apply(["a": .clean], nowMs: 6, cleanChecksNeeded: 1) == .delisted)
    }

    @Test func aPoolNeverLosesItsLastIPSilently() {
        let pool = [SourceIP(address: "192.0.2.1", helo: "a.example"),
                    SourceIP(address: "192.0.2.2", helo: "b.example"),
                    SourceIP(address: "192.0.2.3", helo: "c.example")]
        var one = IPStanding(), two = IPStanding(), three = IPStanding()
        _ = one.apply(["x": listed, "y": listed], nowMs: 1, cleanChecksNeeded: 1)
        _ = two.apply(["x": listed], nowMs: 1, cleanChecksNeeded: 1)
        three.identity = "no PTR record for 192.0.2.3"
        var standings = ["192.0.2.1": one, "192.0.2.2": two]
        let some = PoolSelection.active(pool, standings: standings, behaviour: .hold)
        #expect(some.ips.map(\.address) == ["192.0.2.3"] && !some.exhausted)
        standings["192.0.2.3"] = three
        let held = PoolSelection.active(pool, standings: standings, behaviour: .hold)
        #expect(held.ips.isEmpty && held.exhausted)
        let least = PoolSelection.active(pool, standings: standings, behaviour: .leastListed)
        #expect(least.ips.map(\.address) == ["192.0.2.2"] && least.exhausted)
        // The kernel-chosen address cannot be checked and is always usable.
        let wildcard = PoolSelection.active([SourceIP(address: "", helo: "h.example")],
                                            standings: [:], behaviour: .hold)
        #expect(wildcard.ips.count == 1 && !wildcard.exhausted)
    }

    @Test func publishedActiveSetsRoundTrip() throws {
        let pool = [SourceIP(address: "192.0.2.1", helo: "a.example"),
                    SourceIP(address: "", helo: "b.example")]
        #expect(ActiveIPs.encode(pool) == "192.0.2.1,*")
        #expect(ActiveIPs.usable(pool, published: nil) == pool)
        #expect(ActiveIPs.usable(pool, published: "*") == [pool[1]])
        #expect(ActiveIPs.usable(pool, published: "") == [])
        #expect(ActiveIPs.usable(pool, published: "192.0.2.9") == [])
        let pools = try Pools("a=192.0.2.1/a.example;b=192.0.2.2/b.example")
        #expect(try AllListedBehaviour.parse("least-listed", pools: pools)
                == ["a": .leastListed, "b": .leastListed])
        #expect(try AllListedBehaviour.parse("b=least-listed", pools: pools)
                == ["a": .hold, "b": .leastListed])
        #expect(throws: ConfigError.self) { try AllListedBehaviour.parse("c=hold", pools: pools) }
        #expect(throws: ConfigError.self) { try AllListedBehaviour.parse("a=drop", pools: pools) }
    }
}
