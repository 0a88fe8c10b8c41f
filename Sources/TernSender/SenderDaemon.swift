// The sender: takes attempts from `ready`, delivers each message over SMTP, and reports the
// outcome to `results` in the same MULTI/EXEC that acknowledges the `ready` entry.
//
// Up to TERN_SENDER_CONCURRENCY deliveries run at once, each in a child task; the read loop
// asks Redis for no more entries than there are free slots, so an entry is never read
// before it can start. At start the consumer first re-reads its own pending entries (work
// that a crash interrupted), and from time to time it takes over entries a dead sender left
// pending (XAUTOCLAIM). Its own entries in flight are touched regularly (XCLAIM JUSTID) so
// that another sender never mistakes a slow delivery for an abandoned one.
//
// On shutdown reading stops, deliveries in flight get a grace period, and whatever is still
// unacknowledged then stays pending for the next start or another sender's claim. Delivery is
// therefore at least once: a crash between the remote's 250 and the EXEC sends it again.

import Synchronization
import TernCore
import TernMail
import TernSMTP
import TernDNS

public struct SenderDaemon: Daemon {
    let settings: SenderSettings
    let logger: Logger
    let redis: RedisClient
    let keys: Keys
    let metrics: SenderMetrics

    public init(settings: SenderSettings, logger: Logger) throws {
        self.settings = settings
        self.logger = logger
        self.redis = try RedisClient(url: settings.common.redisURL)
        self.keys = Keys(prefix: settings.common.redisPrefix)
        self.metrics = SenderMetrics(redis: redis, keys: keys)
    }

    public func run(shutdown: Shutdown, ready: @escaping @Sendable (String) -> Void) async throws {
        let stream = keys.stream(.ready)
        try await redis.ensureGroup(stream: stream, group: StreamName.ready.group)
        let resolver = try DNSResolver(forwarder: settings.dnsResolver,
                                      timeout: settings.dnsTimeout, metrics: metrics.dns)
        let leases = GroupLeases(redis: redis, keys: keys, limit: settings.groupMaxConnections,
                                 instance: settings.common.instance)
        let freed = try await leases.reclaimEarlierRuns()
        if freed > 0 {
            logger.notice("freed the connection leases of this instance's earlier run",
                          ("count", String(freed)))
        }
        let pool = SessionPool(leases: leases, maxMessages: settings.maxMessagesPerConnection,
                               idleTimeout: settings.connectionIdle,
                               maxIdle: settings.concurrency, logger: logger)
        let delivery = MXDelivery(resolver: resolver, port: settings.smtpPort,
                                  timeouts: settings.timeouts, pool: pool,
                                  groupWait: settings.groupConnectionWait, logger: logger,
                                  tls: try settings.clientTLS(), providers: settings.providers,
                                  maxConnections: settings.groupMaxConnections)
        let slots = Slots(limit: settings.concurrency)
        let writer = ResultWriter(redis: redis)
        logger.info("contract v\(Contract.version)", ("dns", settings.dnsResolver.description),
                    ("smtp_port", String(settings.smtpPort)))
        ready("delivering up to \(settings.concurrency) messages at once")

        let stopWaiting = Task {
            await shutdown.wait()
            slots.stop()
        }
        let heartbeat = Task { await keepFresh(slots) }
        let endpoint = MetricsEndpoint(registry: metrics.registry, redis: redis,
                                       streams: [SenderMetrics.stream(keys)])
        let metricsServer = Task {
            await endpoint.serve(listen: settings.metricsListen, shutdown: shutdown,
                                 logger: logger)
        }
        let upkeep = Task { await pool.maintain() }
        let renewal = Task { await leases.keepRenewed(logger: logger) }
        await withDiscardingTaskGroup { group in
            await readLoop(shutdown: shutdown, slots: slots) { entry, record in
                group.addTask {
                    metrics.started.inc()
                    metrics.inFlight.add(1)
                    await handle(entry, record: record, delivery: delivery, writer: writer)
                    metrics.inFlight.add(-1)
                    slots.finish(entry.id)
                }
            }
            if await slots.drain(within: settings.grace) == false {
                logger.warning("grace period over; deliveries still running stay pending",
                               ("in_flight", String(slots.count)))
                group.cancelAll()
            }
        }
        heartbeat.cancel()
        stopWaiting.cancel()
        upkeep.cancel()
        await pool.close()
        renewal.cancel()
        await metricsServer.value
        await resolver.close()
    }

    // MARK: Reading `ready`

    /// How often, at most, the read loop trims acknowledged `ready` entries.
    static let trimInterval = Duration.milliseconds(250)

    /// Reads entries while there is room, until shutdown. `start` launches one delivery,
    /// with its message record when the read ahead got it.
    func readLoop(shutdown: Shutdown, slots: Slots,
                  start: (StreamEntry, RedisValue?) -> Void) async {
        let stream = keys.stream(.ready)
        let group = StreamName.ready.group
        let consumer = settings.common.instance
        var pendingFirst = true
        var lastClaim = ContinuousClock.now - settings.claimIdle
        // Acknowledged entries are trimmed every so often rather than deleted one by one
        // (XDEL costs Redis about 14 µs an entry, XTRIM MINID about half a µs); the trim
        // keeps whatever any sender still holds or has not been given.
        var lastTrim = ContinuousClock.now
        // True from the start: entries an earlier run acknowledged after its last trim
        // (deliveries that finished in the shutdown grace) go without waiting for new ones.
        var untrimmed = true
        while !shutdown.isRequested {
            await slots.waitForRoom()
            if shutdown.isRequested { break }
            let room = slots.room
            do {
                if untrimmed, ContinuousClock.now - lastTrim >= Self.trimInterval {
                    // Deliveries still running will acknowledge after this trim's floor.
                    let busy = slots.count > 0
                    try await redis.trimAcknowledged(stream: stream)
                    lastTrim = .now
                    untrimmed = busy
                }
                var entries: [StreamEntry]
                if pendingFirst {
                    // Id "0" lists this consumer's pending entries from the first; those we
                    // already run come back too, so ask for enough to see past them.
                    let all = try await redis.readGroup(
                        stream: stream, group: group, consumer: consumer,
                        count: slots.count + room, block: nil, pending: true)
                    entries = all.filter { !slots.isRunning($0.id) }
                    if entries.isEmpty {
                        pendingFirst = false
                        continue
                    }
                } else {
                    entries = try await redis.readGroup(
                        stream: stream, group: group, consumer: consumer, count: room,
                        block: .seconds(1))
                }
                let left = room - entries.count
                if left > 0, ContinuousClock.now - lastClaim > settings.claimIdle / 2 {
                    lastClaim = .now
                    let claimed = try await redis.claimStale(
                        stream: stream, group: group, consumer: consumer,
                        minIdle: settings.claimIdle, count: left)
                    if !claimed.isEmpty {
                        logger.notice("took over abandoned attempts",
                                      ("count", String(claimed.count)))
                    }
                    entries += claimed
                }
                let fresh = entries.filter { slots.begin($0.id) }
                untrimmed = untrimmed || !fresh.isEmpty
                for (entry, record) in zip(fresh, await records(of: fresh)) {
                    start(entry, record)
                }
            } catch {
                if shutdown.isRequested { break }
                logger.error("reading ready failed: \(error)")
                pendingFirst = true
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Resets the idle time of the entries this process is delivering, so that they never
    /// reach TERN_SENDER_CLAIM_IDLE while their delivery runs.
    func keepFresh(_ slots: Slots) async {
        let stream = keys.stream(.ready)
        while !Task.isCancelled {
            try? await Task.sleep(for: settings.claimIdle / 3)
            let ids = slots.running
            guard !ids.isEmpty, !Task.isCancelled else { continue }
            do {
                try await redis.run(["XCLAIM", stream, StreamName.ready.group,
                                     settings.common.instance, "0"] + ids + ["JUSTID"])
            } catch {
                logger.warning("refreshing attempts in flight failed: \(error)")
            }
        }
    }

    // MARK: One attempt

    static let recordFields = [MessageField.from, MessageField.recipient, MessageField.domain,
                               MessageField.body, MessageField.state]

    /// The message records of the entries just read, in one round trip rather than one per
    /// delivery; nil for each when that fails (each delivery then reads its own).
    func records(of entries: [StreamEntry]) async -> [RedisValue?] {
        let fields = Self.recordFields.map { RedisArg.text($0) }
        let replies = try? await redis.pipeline(entries.map { entry in
            ["HMGET", .text(keys.message(entry[EntryField.id] ?? ""))] + fields
        })
        guard let replies, replies.count == entries.count else {
            return entries.map { _ in nil }
        }
        return replies.map { if case .error = $0 { nil } else { $0 } }
    }

    func handle(_ entry: StreamEntry, record: RedisValue? = nil, delivery: MXDelivery,
                writer: ResultWriter? = nil) async {
        let started = ContinuousClock.now
        guard let id = entry[EntryField.id], !id.isEmpty else {
            logger.critical("ready entry without a message id", ("entry", entry.id),
                            ("fields", "\(entry.fields)"))
            await commit(entry, result: nil, log: logger)
            return
        }
        let log = logger.with(("message_id", id))
        let fields = Self.recordFields
        let values: [RedisValue]
        do {
            if let record {
                values = record.array ?? []
            } else {
                values = try await redis.run(["HMGET", keys.message(id)] + fields).array ?? []
            }
        } catch {
            // Left pending: the next start (or a claim) tries again.
            log.error("reading the message record failed: \(error)")
            return
        }
        guard values.count == fields.count, let state = values[4].string else {
            log.notice("no message record: nothing to send", ("entry", entry.id))
            await commit(entry, result: nil, log: log)
            return
        }
        if let s = MessageState(rawValue: state), s.isFinal {
            log.notice("message already \(state): nothing to send")
            await commit(entry, result: nil, log: log)
            return
        }
        let ip = entry[EntryField.sourceIP] ?? ""
        let helo = (entry[EntryField.helo] ?? "").isEmpty
            ? settings.hostname : entry[EntryField.helo]!
        let domain = values[2].string ?? ""
        let result: DeliveryResult
        if let from = values[0].string, let rcpt = values[1].string, let body = values[3].bytes,
           !domain.isEmpty, !rcpt.isEmpty, !from.isEmpty
        {
            let source: SocketAddress? = ip.isEmpty ? nil : SocketAddress(host: ip, port: 0)
            if !ip.isEmpty && source == nil {
                log.error("ready entry with a source IP that is not an address", ("ip", ip))
                result = DeliveryResult(outcome: .deferred, stage: .connect,
                                        detail: "bad source IP \(Logger.printable(ip))")
            } else {
                let message = OutboundMessage(returnPath: settings.verp.address(for: id),
                                              recipient: rcpt, content: body)
                result = await delivery.deliver(message, domain: domain, source: source,
                                                helo: helo)
            }
        } else {
            log.critical("message record incomplete", ("entry", entry.id))
            result = DeliveryResult(outcome: .failed, stage: .connect,
                                    detail: "message record incomplete: cannot send")
        }
        if Task.isCancelled {
            // Shutdown ran out of grace: the outcome is unknown, so it is not reported.
            log.notice("attempt abandoned at shutdown; it stays pending")
            return
        }
        let ms = (ContinuousClock.now - started).milliseconds
        log.info("attempt \(result.outcome.rawValue)", ("domain", domain),
                 ("mx", result.mxHost), ("addr", result.address), ("ip", ip),
                 ("code", String(result.code)), ("outcome", result.outcome.rawValue),
                 ("stage", result.stage.rawValue), ("ms", String(ms)),
                 ("tls", result.tlsSummary),
                 ("reply", Logger.printable(result.text)))
        let entryFields: [(String, String)] = [
            (EntryField.id, id), (EntryField.attempt, entry[EntryField.attempt] ?? "0"),
            (EntryField.outcome, result.outcome.rawValue), (EntryField.code, String(result.code)),
            (EntryField.enhanced, result.enhanced), (EntryField.reply, result.text),
            (EntryField.stage, result.stage.rawValue), (EntryField.mxHost, result.mxHost),
            (EntryField.mxAddress, result.address), (EntryField.sourceIP, ip),
            (EntryField.tls, result.tlsSummary), (EntryField.elapsedMs, String(ms)),
            (EntryField.tlsVersion, result.tls?.version ?? ""),
            (EntryField.tlsCipher, result.tls?.cipher ?? ""),
            (EntryField.tlsVerified, result.tls.map { $0.verified ? "yes" : "no" } ?? ""),
            (EntryField.connectMs, String(result.timings.connectMs)),
            (EntryField.greetingMs, String(result.timings.greetingMs)),
            (EntryField.tlsMs, String(result.timings.tlsMs)),
            (EntryField.dataMs, String(result.timings.dataMs)),
            (EntryField.reused, result.timings.reused ? "yes" : "no"),
        ]
        await commit(entry, result: entryFields, log: log, writer: writer)
    }

    /// In one MULTI/EXEC: the result (when there is one), then the acknowledgement of the
    /// `ready` entry (the read loop trims acknowledged entries now and then). Retried a few
    /// times, since a result lost after the remote accepted would mean sending the message
    /// again.
    /// With a `writer`, the transaction is first shared with other deliveries' results.
    func commit(_ entry: StreamEntry, result: [(String, String)]?, extra: [[RedisArg]] = [],
                log: Logger, writer: ResultWriter? = nil) async {
        let stream = keys.stream(.ready)
        var commands: [[RedisArg]] = extra
        if let result { commands.append(xadd(keys.stream(.results), result)) }
        commands.append(["XACK", .text(stream), .text(StreamName.ready.group), .text(entry.id)])
        if let writer, await writer.write(commands) { return }
        for attempt in 1...5 {
            do {
                _ = try await redis.transaction(commands)
                return
            } catch {
                log.error("writing the result failed (try \(attempt) of 5): \(error)")
                try? await Task.sleep(for: .seconds(attempt))
            }
        }
        log.critical("result not written; the entry stays pending and will be sent again",
                     ("entry", entry.id))
    }
}

/// The delivery slots: which `ready` entries are running, and room for more.
final class Slots: Sendable {
    private struct State {
        var running: Set<String> = []
        var waiter: CheckedContinuation<Void, Never>?
        var stopped = false
    }

    let limit: Int
    private let state = Mutex(State())

    init(limit: Int) { self.limit = limit }

    var count: Int { state.withLock { $0.running.count } }
    var room: Int { limit - count }
    var running: [String] { state.withLock { Array($0.running) } }
    func isRunning(_ id: String) -> Bool { state.withLock { $0.running.contains(id) } }

    /// Claims a slot for entry `id`; false when it already runs here.
    func begin(_ id: String) -> Bool { state.withLock { $0.running.insert(id).inserted } }

    func finish(_ id: String) {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.running.remove(id)
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
    }

    /// Returns when a slot is free, or at once after `stop`. One caller at a time.
    func waitForRoom() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.stopped || s.running.count < limit { return true }
                s.waiter = c
                return false
            }
            if now { c.resume() }
        }
    }

    /// Shutdown: no more waiting for room.
    func stop() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.stopped = true
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
    }

    /// Waits until nothing runs, up to `grace`; false if deliveries are still running.
    func drain(within grace: Duration) async -> Bool {
        let deadline = ContinuousClock.now + grace
        while count > 0 {
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return true
    }
}
