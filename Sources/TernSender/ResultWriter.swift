// Result writes of deliveries that finish together share one MULTI/EXEC: while one
// transaction is on its way to Redis, the next deliveries' writes queue, and the first of
// them to queue sends them all at once when it returns. Each delivery's commands (its
// `results` entry, the XACK and XDEL of its `ready` entry) stay together in one transaction,
// so a crash still leaves each attempt either fully reported or pending, never half.

import Synchronization
import TernCore

final class ResultWriter: Sendable {
    private struct Waiter {
        let commands: [[RedisArg]]
        let done: CheckedContinuation<Bool, Never>
    }

    private struct State {
        var queue: [Waiter] = []
        var writing = false
    }

    private let redis: RedisClient
    private let state = Mutex(State())

    init(redis: RedisClient) { self.redis = redis }

    /// Writes `commands` in a transaction shared with whatever else is waiting; false when
    /// that transaction failed (the caller then tries alone).
    func write(_ commands: [[RedisArg]]) async -> Bool {
        await withCheckedContinuation { done in
            let lead = state.withLock { s -> Bool in
                s.queue.append(Waiter(commands: commands, done: done))
                if s.writing { return false }
                s.writing = true
                return true
            }
            if lead { Task { await self.drain() } }
        }
    }

    private func drain() async {
        while true {
            let batch = state.withLock { s -> [Waiter] in
                let taken = s.queue
                s.queue = []
                if taken.isEmpty { s.writing = false }
                return taken
            }
            if batch.isEmpty { return }
            let ok = (try? await redis.transaction(batch.flatMap(\.commands))) != nil
            for waiter in batch { waiter.done.resume(returning: ok) }
        }
    }
}
