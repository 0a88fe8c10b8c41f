// The bounce receiver: an SMTP server that takes delivery status notifications addressed to
// the VERP return paths Tern signs, and turns each failed recipient into an entry on the
// `inbound` stream for the scheduler.
//
// Trust comes only from the RCPT address: a bounce is taken for a message only when the
// address carries a valid signature of its id, so nobody can bounce a message they never
// received. The report's content (status, diagnostic) is then believed as far as it goes, but
// cleaned and capped before it is stored. A bounce is acknowledged with 250 only after its
// entries are in Redis; if Redis fails, 451 makes the remote MTA try again later.

import TernCore
import TernMail
import TernSMTP

public struct BounceDaemon: Daemon {
    let settings: BounceSettings
    let logger: Logger
    let redis: RedisClient
    let keys: Keys
    let verp: VERP
    /// Bound at init so that a busy port is a start-up error and tests learn the port.
    public let listener: TCPListener
    /// The STARTTLS certificate, re-read by `reload` (SIGHUP); nil without one.
    public let tls: ReloadableTLSContext?
    let metrics: BounceMetrics

    /// A Tern message has one recipient, so a genuine report about it names one; the rest of
    /// a report that names more is not turned into entries.
    static let maxStatusesPerReport = 10
    /// Longest report text stored in a field; diagnostics are one SMTP reply in practice.
    static let maxFieldLength = 1000

    public init(settings: BounceSettings, logger: Logger) throws {
        self.settings = settings
        self.logger = logger
        self.redis = try RedisClient(url: settings.common.redisURL)
        self.keys = Keys(prefix: settings.common.redisPrefix)
        self.verp = settings.verp
        self.metrics = BounceMetrics(redis: redis, keys: keys)
        tls = try settings.loadTLS()
        if let fd = Systemd.listenDescriptor() {
            listener = try TCPListener(adopting: fd)
        } else {
            listener = try TCPListener(address: settings.listen)
        }
    }

    /// Where the receiver listens.
    public var address: SocketAddress { listener.address }

    public func run(shutdown: Shutdown, ready: @escaping @Sendable (String) -> Void) async throws {
        // The scheduler creates the group too; doing it here as well means no bounce written
        // before the scheduler's first start is skipped, and Redis is checked before listening.
        try await redis.ensureGroup(stream: keys.stream(.inbound), group: StreamName.inbound.group)
        let server = SMTPServer(
            listener: listener, config: settings.server, logger: logger, tls: tls,
            policy: { recipient, envelope in await decide(recipient, envelope) },
            handler: { envelope, message in await receive(envelope, message) })
        logger.info("contract version \(Contract.version)")
        ready("taking bounces for \(verp.domain) on \(listener.address)")
        Systemd.startWatchdog { await redis.ping() }
        metrics.registry.addCollector { [metrics] in
            metrics.sessions.set(Double(server.sessionCount))
        }
        let endpoint = MetricsEndpoint(registry: metrics.registry, redis: redis,
                                       streams: [BounceMetrics.stream(keys)])
        async let served: Void = endpoint.serve(listen: settings.metricsListen,
                                                shutdown: shutdown, logger: logger)
        await server.run(shutdown: shutdown)
        await served
    }

    /// SIGHUP: the certificate and key are read again; new sessions get them, open ones
    /// keep theirs. A file that cannot be read leaves the old certificate in use.
    public func reload() async {
        guard let tls else {
            logger.info("nothing to reload: no STARTTLS certificate configured")
            return
        }
        do {
            try tls.reload()
            logger.notice("STARTTLS certificate reloaded", ("cert", tls.certificateFile))
        } catch {
            logger.error("STARTTLS certificate not reloaded, the old one stays: \(error)",
                         ("cert", tls.certificateFile))
        }
    }

    // MARK: - Recipients

    enum Verdict: Equatable {
        /// A VERP address we signed, for this message id.
        case message(String)
        /// Shaped like our VERP addresses, in our domain, but the signature does not verify.
        case forged
        /// Not one of our bounce addresses at all.
        case notOurs
    }

    func classify(_ recipient: String) -> Verdict {
        switch verp.decode(recipient) {
        case .success(let id): return .message(id)
        case .failure(.badSignature): return .forged
        case .failure(.wrongDomain): return .notOurs
        case .failure(.notVERP):
            // A signature changed into a character outside its alphabet, or cut short, no
            // longer has VERP's shape; in our domain with our prefix it is still a forgery.
            let address = recipient.lowercased()
            guard let at = address.lastIndex(of: "@") else { return .notOurs }
            var domain = address[address.index(after: at)...]
            if domain.hasSuffix(".") { domain = domain.dropLast() }
            return domain == verp.domain && address.hasPrefix(VERP.prefix) ? .forged : .notOurs
        }
    }

    func decide(_ recipient: String, _ envelope: SMTPEnvelope) async -> RecipientDecision {
        let peer = envelope.peer?.description ?? "?"
        switch classify(recipient) {
        case .message(let id):
            logger.debug("bounce address accepted", ("message_id", id), ("peer", peer))
            return .accept
        case .forged:
            logger.warning("forged bounce address refused",
                           ("rcpt", Logger.printable(recipient)), ("peer", peer))
            await count("bounce.forged")
            return .refuse(SMTPReply(550, "5.7.1", "no such bounce address"))
        case .notOurs:
            logger.debug("recipient refused: not a bounce address",
                         ("rcpt", Logger.printable(recipient)), ("peer", peer))
            await count("bounce.refused")
            return .refuse(SMTPReply(550, "5.7.1", "this server takes only bounces"))
        }
    }

    // MARK: - Messages

    func receive(_ envelope: SMTPEnvelope, _ message: [UInt8]) async -> SMTPReply {
        var ids: [String] = []
        for recipient in envelope.recipients {
            if case .message(let id) = classify(recipient), !ids.contains(id) { ids.append(id) }
        }
        let peer = envelope.peer?.description ?? "?"
        guard !ids.isEmpty else {
            // The policy accepted only our addresses; this is a bug, and 451 loses nothing.
            logger.error("message without a bounce address", ("peer", peer))
            return SMTPReply(451, "4.3.0", "internal error, try again later")
        }
        let report: DeliveryStatusReport
        do {
            report = try DeliveryStatusReport.parse(message)
        } catch {
            // Auto-replies and hand-written answers reach return paths too. Taken, so the
            // sender does not retry, and counted until classification of these comes.
            logger.notice("message to a bounce address is not a delivery status report: \(error)",
                          ("message_id", ids.joined(separator: ",")), ("peer", peer),
                          ("from", Logger.printable(envelope.mailFrom)),
                          ("size", String(message.count)))
            await count("bounce.unparsed")
            return SMTPReply(250, "2.0.0", "message taken")
        }
        let failed = report.recipients.filter {
            $0.action == "failed" || $0.enhanced?.statusClass == 5
        }.prefix(Self.maxStatusesPerReport)
        guard !failed.isEmpty else {
            // Delayed, delivered, relayed or expanded (RFC 3464 §2.3.3): not a bounce.
            logger.info("report without a failed recipient",
                        ("message_id", ids.joined(separator: ",")), ("peer", peer),
                        ("actions", report.recipients.map(\.action).joined(separator: ",")))
            await count("bounce.nonfatal")
            return SMTPReply(250, "2.0.0", "report taken")
        }
        let reporter = clean(report.reportingMTA ?? "")
        var commands: [[RedisArg]] = []
        for id in ids {
            for status in failed {
                commands.append(xadd(keys.stream(.inbound), [
                    (EntryField.id, id),
                    (EntryField.kind, "bounce"),
                    (EntryField.status, clean(status.status)),
                    (EntryField.action, clean(status.action)),
                    (EntryField.diagnostic, clean(status.diagnostic ?? "")),
                    (EntryField.recipient, clean(status.recipient)),
                    (EntryField.reporter, reporter),
                ]))
            }
        }
        commands.append(["HINCRBY", .text(keys.counters), "bounce.accepted",
                         .text(String(commands.count))])
        do {
            // One MULTI/EXEC: every entry of the report is recorded, or none and 451.
            _ = try await redis.transaction(commands)
        } catch {
            logger.error("could not record a bounce, answering 451: \(error)",
                         ("message_id", ids.joined(separator: ",")), ("peer", peer))
            return SMTPReply(451, "4.3.0", "cannot record the bounce now, try again later")
        }
        metrics.reports.inc("bounce", by: Double(ids.count * failed.count))
        for id in ids {
            for status in failed {
                logger.info("bounce", ("message_id", id), ("status", clean(status.status)),
                            ("rcpt", clean(status.recipient)), ("reporter", reporter),
                            ("peer", peer), ("tls", envelope.tls))
            }
        }
        return SMTPReply(250, "2.0.0", "bounce recorded")
    }

    // MARK: - Helpers

    /// Report text made fit for a stream field: controls become spaces, length is capped.
    func clean(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        for u in text.unicodeScalars.prefix(Self.maxFieldLength) {
            out.append(u.value < 0x20 || u.value == 0x7F ? " " : u)
        }
        return String(out)
    }

    /// Adds one to an operator counter; a failure is logged, never passed to the peer.
    func count(_ name: String) async {
        metrics.reports.inc(String(name.dropFirst("bounce.".count)))
        do {
            try await redis.run("HINCRBY", keys.counters, name, "1")
        } catch {
            logger.error("could not count \(name): \(error)")
        }
    }
}
