// Two schedulers against one Redis: one leads and the other stands by, so no message is
// released twice; when the leader stops, the other takes over.

import Foundation
import Testing
import TernCore
import TernMail
import TernTestSupport
@testable import TernScheduler

extension SchedulerDaemonTests {
    @Test func twoSchedulersNeverBothLeadAndTheStandbyTakesOver() async throws {
        let h = try await Harness(env: ["TERN_SCHEDULER_LEASE": "3s"])
        try await h.waitFor("the first to lead") {
            try await h.redis.run("GET", h.keys.schedulerLeader).string == "scheduler-t"
        }
        let values = ["TERN_REDIS_URL": h.server.url, "TERN_INSTANCE": "t2",
                      "TERN_POOLS": "default=127.0.0.2/out1.example,127.0.0.3/out2.example",
                      "TERN_RETRY_DELAYS": "1s", "TERN_SCHEDULER_LEASE": "3s"]
        let environment = Environment(values)
        let second = try SchedulerDaemon(
            settings: try SchedulerSettings(environment,
                                            common: CommonSettings(environment, role: "scheduler")),
            logger: Logger(label: "second", sink: MemoryLogSink()))
        let secondShutdown = Shutdown()
        let secondTask = Task { try await second.run(shutdown: secondShutdown) { _ in } }

        var ids: [String] = []
        for n in 0..<20 { ids.append(try await h.submit(to: "r\(n)@inbox.example")) }
        var released: [String] = []
        for _ in 0..<20 { released.append(try await h.nextReady()["id"] ?? "") }
        #expect(released.sorted() == ids.sorted())
        // Nothing was released twice: the stream holds exactly one entry per message.
        #expect(try await h.redis.run("XLEN", h.keys.stream(.ready)).int == 20)
        #expect(try await h.redis.run("GET", h.keys.schedulerLeader).string == "scheduler-t")

        // The leader stops (and gives the lease back); the standby leads and schedules.
        h.shutdown.request()
        _ = try? await h.task.value
        try await h.waitFor("the standby to lead") {
            try await h.redis.run("GET", h.keys.schedulerLeader).string == "scheduler-t2"
        }
        let later = try await h.submit(to: "later@inbox.example")
        #expect(try await h.nextReady()["id"] == later)
        secondShutdown.request()
        _ = try? await secondTask.value
        #expect(try await h.redis.run("EXISTS", h.keys.schedulerLeader).int == 0)
        h.server.stop()
    }

    @Test func aLeaseIsRenewedOnlyByItsOwnerAndLapsesWithoutRenewal() async throws {
        let server = try TestRedis()
        defer { server.stop() }
        let redis = try RedisClient(url: server.url)
        let a = LeaderLease(redis: redis, key: "lease", instance: "x", ttl: .seconds(3))
        let b = LeaderLease(redis: redis, key: "lease", instance: "y", ttl: .seconds(3))
        #expect(try await a.tryAcquire())
        #expect(try await !b.tryAcquire())
        #expect(try await a.renew())
        #expect(try await !b.renew())
        await b.release()                       // not b's to release
        #expect(try await redis.run("GET", "lease").string == a.owner)
        try await redis.run("PEXPIRE", "lease", "1")
        try await Task.sleep(for: .milliseconds(20))
        #expect(try await !a.renew())           // lapsed: the old holder must stop
        #expect(try await b.tryAcquire())
        // A process restarted under b's name takes b's lease back at once.
        let restarted = LeaderLease(redis: redis, key: "lease", instance: "y", ttl: .seconds(3))
        #expect(try await restarted.tryAcquire())
        #expect(try await !a.tryAcquire())
    }
}
