// The bounce receiver: an SMTP server that takes what comes back to the VERP return paths
// Tern signs (bounces, delay notices, auto-replies) and to the feedback-loop addresses an
// operator registered with mailbox providers (complaints), classifies each message
// (`BounceClassifier`, docs/bounces.md) and writes one entry per reported recipient to the
// `inbound` stream for the scheduler.
//
// Trust comes only from addresses: mail is taken only for a VERP address that carries a valid
// signature of its message id, or for a configured feedback address. A report to a feedback
// address names its message by a signed VERP address quoted inside it (the original's
// Return-Path) or by the original's Message-ID. The report's content (status, reply) is then
// believed as far as it goes, but cleaned and capped before it is stored. A message is
// acknowledged with 250 only after its entries are in Redis; if Redis fails, 451 makes the
// remote MTA try again later.
//
// Mail to postmaster (RFC 5321 §4.5.1) is taken too: recorded when it is a report naming a
// message by a signed address, otherwise counted and logged, never relayed. A feedback
// report's own DKIM signature is verified (key from TERN_DNS_RESOLVER, within
// TERN_BOUNCE_DKIM_TIMEOUT) and the verdict stored with its entries.
//
// Known limit: a report that names its message only by Message-ID is not signed; anyone who
// knows a message's id (its recipient) can send a complaint about it.
// Known limit: the DKIM verdict reaches the message's history and events, but nothing acts
// on it (a failing signature does not make a complaint count less).

import Foundation
import TernCore
import TernDNS
import TernMail
import TernSMTP

public struct BounceDaemon: Daemon {
    let settings: BounceSettings
    let logger: Logger
    let redis: RedisClient
    let keys: Keys
    let verp: VERP
    /// The domains of the feedback addresses, where postmaster is ours too.
    let postmasterDomains: Set<String>
    /// Bound at init so that a busy port is a start-up error and tests learn the port.
    public let listener: TCPListener
    /// The STARTTLS certificate, re-read by `reload` (SIGHUP); nil without one.
    public let tls: ReloadableTLSContext?
    let metrics: BounceMetrics

    /// A Tern message has one recipient, so a genuine report about it names one; the rest of
    /// a report that names more is not turned into entries.
    static let maxStatusesPerReport = 10
    let classifier: BounceClassifier
    /// Asks for the DKIM keys of feedback reports, through TERN_DNS_RESOLVER.
    let resolver: DNSResolver
    /// Longest report text stored in a field; diagnostics are one SMTP reply in practice.
    static let maxFieldLength = 1000

    public init(settings: BounceSettings, logger: Logger) throws {
        self.settings = settings
        self.logger = logger
        self.redis = try RedisClient(url: settings.common.redisURL)
        self.keys = Keys(prefix: settings.common.redisPrefix)
        self.verp = settings.verp
        self.metrics = BounceMetrics(redis: redis, keys: keys)
        postmasterDomains = Set(settings.feedbackAddresses.compactMap { address in
            address.split(separator: "@").last.map { String($0) }
        })
        tls = try settings.loadTLS()
        self.classifier = BounceClassifier(verp: settings.verp)
        resolver = try DNSResolver(forwarder: settings.dnsResolver, timeout: settings.dkimTimeout)
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
        ready("taking bounces for \(verp.domain) and \(settings.feedbackAddresses.count) "
              + "feedback address(es) on \(listener.address)")
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
        await resolver.close()
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
        /// A feedback-loop address from TERN_FBL_ADDRESSES.
        case feedback
        /// `postmaster`, bare or at a domain we take mail for (RFC 5321 §4.5.1).
        case postmaster
        /// Shaped like our VERP addresses, in our domain, but the signature does not verify.
        case forged
        /// Not one of our bounce addresses at all.
        case notOurs
    }

    func classify(_ recipient: String) -> Verdict {
        var bare = recipient.lowercased()
        if bare.hasPrefix("<") && bare.hasSuffix(">") { bare = String(bare.dropFirst().dropLast()) }
        if settings.feedbackAddresses.contains(bare) { return .feedback }
        if isPostmaster(bare) { return .postmaster }
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

    /// RFC 5321 §4.5.1: a server must take mail for "postmaster" without a domain and at
    /// every domain it is the destination of: the VERP domain and those of the feedback
    /// addresses. Case does not matter for the local part here.
    func isPostmaster(_ address: String) -> Bool {
        if address == "postmaster" { return true }
        guard address.hasPrefix("postmaster@") else { return false }
        var domain = address.dropFirst("postmaster@".count)
        if domain.hasSuffix(".") { domain = domain.dropLast() }
        return domain == verp.domain || postmasterDomains.contains(String(domain))
    }

    func decide(_ recipient: String, _ envelope: SMTPEnvelope) async -> RecipientDecision {
        let peer = envelope.peer?.description ?? "?"
        switch classify(recipient) {
        case .message(let id):
            logger.debug("bounce address accepted", ("message_id", id), ("peer", peer))
            return .accept
        case .feedback:
            logger.debug("feedback address accepted", ("rcpt", Logger.printable(recipient)),
                         ("peer", peer))
            return .accept
        case .postmaster:
            logger.debug("postmaster accepted", ("rcpt", Logger.printable(recipient)),
                         ("peer", peer))
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
        var feedback = false
        var postmaster = false
        for recipient in envelope.recipients {
            switch classify(recipient) {
            case .message(let id): if !ids.contains(id) { ids.append(id) }
            case .feedback: feedback = true
            case .postmaster: postmaster = true
            case .forged, .notOurs: break
            }
        }
        let peer = envelope.peer?.description ?? "?"
        if ids.isEmpty && !feedback && postmaster {
            return await receivePostmaster(envelope, message)
        }
        guard !ids.isEmpty || feedback else {
            // The policy accepted only our addresses; this is a bug, and 451 loses nothing.
            logger.error("message without a bounce or feedback address", ("peer", peer))
            return SMTPReply(451, "4.3.0", "internal error, try again later")
        }
        // Bounded CPU work (see BounceClassifier), so it runs here, on the session's task.
        let records = classifier.classify(message, envelopeRecipients: envelope.recipients,
                                          envelopeSender: envelope.mailFrom,
                                          toFeedbackAddress: feedback && ids.isEmpty)
        let from = Logger.printable(envelope.mailFrom)
        await countForgedFeedbackID(records, envelope: envelope)
        if records.allSatisfy({ $0.kind == .notAReport }) {
            // Hand-written answers and spam reach return paths too. Taken, so the sender
            // does not retry, and counted.
            logger.notice("message to a bounce address is not a report",
                          ("message_id", ids.joined(separator: ",")), ("peer", peer),
                          ("from", from), ("size", String(message.count)))
            await count("bounce.unparsed")
            return SMTPReply(250, "2.0.0", "message taken")
        }
        // A signed envelope address names the message; otherwise (a feedback address) the
        // report does, through a signed VERP address or the original's Message-ID.
        var entries: [(String, ReportRecord)] = []
        for record in records.prefix(Self.maxStatusesPerReport) where record.kind != .notAReport {
            if !ids.isEmpty {
                entries += ids.map { ($0, record) }
            } else if !record.messageID.isEmpty {
                entries.append((record.messageID, record))
            }
        }
        guard !entries.isEmpty else {
            logger.notice("report names no message of ours", ("peer", peer), ("from", from),
                          ("kind", records.first?.kind.rawValue ?? ""))
            await count("bounce.unmatched")
            return SMTPReply(250, "2.0.0", "report taken")
        }
        if !ids.isEmpty {
            entries = entries.map { id, r in
                var signed = r
                signed.idSource = "verp"
                return (id, signed)
            }
        }
        return await record(entries, envelope: envelope,
                            dkim: await verifyDKIM(message, records: records))
    }

    /// RFC 6376 verification of a feedback report's own signature: it says which provider
    /// sent the report. Only reports (ARF, JMRP) are checked; a DSN's signer tells nothing
    /// the VERP address does not. Runs before the final reply: a key lookup waits at most
    /// TERN_BOUNCE_DKIM_TIMEOUT, and the result goes into the record.
    func verifyDKIM(_ message: [UInt8], records: [ReportRecord]) async -> DKIMResult? {
        guard records.contains(where: { $0.format == "arf" || $0.format == "jmrp" }) else {
            return nil
        }
        let resolver = self.resolver
        return await DKIMVerifier().verify(message, now: Date()) { name in
            switch await resolver.txt(name) {
            case .records(let texts):
                // §3.6.2.2: several records make the result undefined; take a key's.
                return texts.first { $0.contains("p=") }.map { .record($0) } ?? .none
            case .noData, .nxDomain: return .none
            case .failure(let why): return .temporary(why)
            }
        }
    }

    /// Writes one inbound entry per (message id, record), and the count, in one transaction;
    /// 250 once Redis has them, 451 when it has not.
    func record(_ entries: [(String, ReportRecord)], envelope: SMTPEnvelope,
                dkim: DKIMResult? = nil) async -> SMTPReply
    {
        let peer = envelope.peer?.description ?? "?"
        let ids = entries.map(\.0)
        var commands: [[RedisArg]] = entries.map { id, r in
            xadd(keys.stream(.inbound), [
                (EntryField.id, id),
                (EntryField.kind, r.kind.rawValue),
                (EntryField.severity, r.severity.rawValue),
                (EntryField.reason, r.reason.rawValue),
                (EntryField.status, clean(r.status)),
                (EntryField.action, clean(r.action)),
                (EntryField.diagnostic, clean(r.remoteReply)),
                (EntryField.recipient, clean(r.recipient)),
                (EntryField.reporter, clean(r.reporter)),
                (EntryField.remoteMTA, clean(r.remoteMTA)),
                (EntryField.feedbackType, clean(r.feedbackType)),
                (EntryField.idSource, r.idSource),
                (EntryField.format, r.format),
                (EntryField.cfbl, r.cfbl),
                (EntryField.dkim, dkim?.verdict.rawValue ?? ""),
                (EntryField.dkimDomain, clean(dkim?.domain ?? "")),
            ])
        }
        commands.append(["HINCRBY", .text(keys.counters), "bounce.accepted",
                         .text(String(entries.count))])
        do {
            // One MULTI/EXEC: every entry of the report is recorded, or none and 451.
            _ = try await redis.transaction(commands)
        } catch {
            logger.error("could not record a report, answering 451: \(error)",
                         ("message_id", ids.joined(separator: ",")), ("peer", peer))
            return SMTPReply(451, "4.3.0", "cannot record the report now, try again later")
        }
        for (id, r) in entries {
            metrics.reports.inc(r.kind.rawValue)
            logger.info(r.kind.rawValue, ("message_id", id), ("severity", r.severity.rawValue),
                        ("reason", r.reason.rawValue), ("status", clean(r.status)),
                        ("rcpt", clean(r.recipient)), ("reporter", clean(r.reporter)),
                        ("peer", peer), ("tls", envelope.tls),
                        ("dkim", dkim?.verdict.rawValue ?? ""),
                        ("dkim_domain", dkim?.domain ?? ""), ("dkim_reason", dkim?.reason ?? ""))
        }
        return SMTPReply(250, "2.0.0", "report recorded")
    }

    /// Mail to postmaster only. A report in it that names a message by a signed VERP
    /// address or a verified CFBL-Feedback-ID is recorded like any other; a Message-ID alone
    /// is not trusted here, since anyone may write to postmaster. Everything else is counted
    /// and logged for the operator, never relayed: this daemon delivers nothing.
    func receivePostmaster(_ envelope: SMTPEnvelope, _ message: [UInt8]) async -> SMTPReply {
        let records = classifier.classify(message, envelopeRecipients: envelope.recipients,
                                          envelopeSender: envelope.mailFrom)
        await countForgedFeedbackID(records, envelope: envelope)
        let signed = records.filter {
            $0.kind != .notAReport && ($0.idSource == "verp" || $0.idSource == "cfbl")
        }
        if !signed.isEmpty {
            return await record(signed.map { ($0.messageID, $0) }, envelope: envelope,
                                dkim: await verifyDKIM(message, records: signed))
        }
        let root = MIMEEntity.parse(Array(message.prefix(64 * 1024)))
        let subject = MIMEText.decodeWords(root.value("Subject") ?? "")
        logger.notice("mail to postmaster", ("from", Logger.printable(envelope.mailFrom)),
                      ("subject", clean(String(subject.prefix(200)))),
                      ("kind", records.first?.kind.rawValue ?? ""),
                      ("peer", envelope.peer?.description ?? "?"),
                      ("size", String(message.count)))
        await count("bounce.postmaster")
        return SMTPReply(250, "2.0.0", "message taken for the postmaster")
    }

    /// A CFBL-Feedback-ID in our format whose tag does not verify (RFC 9477 §3.2): someone
    /// tried to name a message they did not receive. The classifier has already refused to
    /// use it; this makes it visible.
    func countForgedFeedbackID(_ records: [ReportRecord], envelope: SMTPEnvelope) async {
        guard records.contains(where: { $0.cfbl == "fail" }) else { return }
        logger.warning("complaint with a forged CFBL-Feedback-ID; not trusted",
                       ("from", Logger.printable(envelope.mailFrom)),
                       ("peer", envelope.peer?.description ?? "?"))
        await count("bounce.cfbl_forged")
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
