// One consumer of a Redis stream through its consumer group: the loop every daemon runs on
// the streams it reads.
//
// It reads this consumer's own pending entries first (what it held when it last died), then
// new ones; from time to time it takes over entries another consumer of the group left idle
// too long. An entry whose handling fails is tried again; one that fails five times is a bug
// in whoever wrote it, so it is logged whole and dropped rather than stop the stream.
//
// A batch may be applied side by side (`sideBySide` above 1): entries with the same
// `orderKey` (the same message, say) still go one after the other, in stream order. Or it
// may be applied whole (`applyBatch`): one call, typically a few round trips and one
// transaction for all its entries; when that fails, each entry is applied alone, so one bad
// entry is still found and dropped on its own.

import Foundation

public struct StreamConsumer: Sendable {
    public let redis: RedisClient
    /// The stream's key.
    public let stream: String
    public let group: String
    public let consumer: String
    public let logger: Logger
    /// Entries idle this long on another consumer are taken over; nil takes over none.
    public var claimIdle: Duration?
    /// After each batch, trim the stream below what every group has acknowledged (for
    /// streams that several groups read, so no entry is deleted before all have seen it).
    public var trimAcknowledged = false
    /// Trims at most this often while entries keep coming (each trim is three or four round
    /// trips), and at once when the stream falls quiet.
    public var trimInterval: Duration = .milliseconds(250)
    public var batch = 100
    /// How many entries of a batch are applied at once; 1 applies them in stream order.
    public var sideBySide = 1
    /// Entries with the same key are applied one after the other even side by side.
    public var orderKey: @Sendable (StreamEntry) -> String = { $0.id }
    /// Applies and acknowledges a whole batch in one go, all of it or nothing; when it
    /// throws, the batch is applied entry by entry through `apply`.
    public var applyBatch: (@Sendable ([StreamEntry]) async throws -> Void)?

    public init(redis: RedisClient, stream: String, group: String, consumer: String,
                logger: Logger) {
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.logger = logger
    }

    /// Runs until shutdown. `apply` handles and acknowledges one entry (in one transaction);
    /// `drop` acknowledges a poisoned one.
    public func run(shutdown: Shutdown,
                    apply: @escaping @Sendable (StreamEntry) async throws -> Void,
                    drop: @Sendable (StreamEntry) async throws -> Void) async {
        var failures: [String: Int] = [:]
        var lastClaim = ContinuousClock.now
        var pendingFirst = true
        // True from the start: what an earlier run acknowledged after its last trim (the
        // batch applied as shutdown came) goes now, not only once new entries arrive.
        var untrimmed = true
        var lastTrim = ContinuousClock.now
        while !shutdown.isRequested && !Task.isCancelled {
            do {
                var entries = try await redis.readGroup(
                    stream: stream, group: group, consumer: consumer, count: batch,
                    block: pendingFirst ? nil : .seconds(1), pending: pendingFirst)
                if pendingFirst && entries.isEmpty {
                    pendingFirst = false
                    continue
                }
                if let claimIdle, ContinuousClock.now - lastClaim > claimIdle / 2 {
                    lastClaim = .now
                    entries += try await redis.claimStale(
                        stream: stream, group: group, consumer: consumer, minIdle: claimIdle,
                        count: batch)
                }
                var results: [(StreamEntry, (any Error)?)]? = nil
                if let applyBatch, entries.count > 1 {
                    do {
                        try await applyBatch(entries)
                        results = entries.map { ($0, nil) }
                    } catch is CancellationError {
                        return
                    } catch {
                        logger.warning("applying a batch of \(stream) failed, applying its "
                                       + "entries one by one: \(error)",
                                       ("entries", String(entries.count)))
                    }
                }
                if results == nil { results = await applyAll(entries, apply) }
                for (entry, error) in results ?? [] {
                    if let error {
                        let count = failures[entry.id, default: 0] + 1
                        failures[entry.id] = count
                        pendingFirst = true
                        guard count >= 5 else {
                            logger.warning("handling a \(stream) entry failed, will retry: "
                                           + "\(error)", ("entry", entry.id))
                            continue
                        }
                        logger.critical("dropping a \(stream) entry after \(count) failures: "
                                        + "\(error)", ("entry", entry.id),
                                        ("fields", "\(entry.fields)"))
                        try await drop(entry)
                    }
                    failures[entry.id] = nil
                }
                if trimAcknowledged {
                    untrimmed = untrimmed || !entries.isEmpty
                    if untrimmed && (entries.isEmpty || .now - lastTrim >= trimInterval) {
                        try await redis.trimAcknowledged(stream: stream)
                        untrimmed = false
                        lastTrim = .now
                    }
                }
            } catch is CancellationError {
                return
            } catch IOError.cancelled {
                return
            } catch {
                logger.error("reading \(stream) failed: \(error)")
                pendingFirst = true
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Applies a batch: entries of one `orderKey` in stream order, different keys up to
    /// `sideBySide` at once. Returns each entry with its error, if it failed.
    func applyAll(_ entries: [StreamEntry],
                  _ apply: @escaping @Sendable (StreamEntry) async throws -> Void)
        async -> [(StreamEntry, (any Error)?)]
    {
        var byKey: [String: [StreamEntry]] = [:]
        var order: [String] = []
        for entry in entries {
            let key = sideBySide > 1 ? orderKey(entry) : ""
            if byKey[key] == nil { order.append(key) }
            byKey[key, default: []].append(entry)
        }
        return await withTaskGroup(of: [(StreamEntry, (any Error)?)].self) { group in
            var out: [(StreamEntry, (any Error)?)] = []
            var next = order.makeIterator()
            func start() -> Bool {
                guard let key = next.next(), let list = byKey[key] else { return false }
                group.addTask {
                    var done: [(StreamEntry, (any Error)?)] = []
                    for entry in list {
                        do {
                            try await apply(entry)
                            done.append((entry, nil))
                        } catch {
                            done.append((entry, error))
                        }
                    }
                    return done
                }
                return true
            }
            for _ in 0..<max(1, sideBySide) where start() {}
            while let done = await group.next() {
                out += done
                _ = start()
            }
            return out
        }
    }
}
