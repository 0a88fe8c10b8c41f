// The reputation monitor's reading of `results` and `inbound`: each entry becomes a
// statistics sample, counted and acknowledged in one transaction, so a crash neither loses
// nor double-counts an outcome. The monitor has its own consumer group on both streams; the
// scheduler's group is untouched and the streams are trimmed below what both acknowledged.
// Entries a dead reputation process left pending are taken over after a minute.

import Foundation
import TernCore
import TernMail

extension ReputationDaemon {
    func consume(_ stream: StreamName, shutdown: Shutdown) async {
        let name = keys.stream(stream), group = StreamName.reputationGroup
        var consumer = StreamConsumer(redis: redis, stream: name, group: group,
                                      consumer: settings.common.instance, logger: logger)
        consumer.claimIdle = .seconds(60)
        consumer.trimAcknowledged = true
        await consumer.run(shutdown: shutdown, apply: { entry in
            let ack: [RedisArg] = ["XACK", .text(name), .text(group), .text(entry.id)]
            let cmds = try await sample(stream, entry).map { $0.commands(keys) }
            _ = try await redis.transaction((cmds ?? []) + [ack])
        }, drop: { entry in
            _ = try await redis.transaction([["XACK", .text(name), .text(group),
                                              .text(entry.id)]])
        })
    }

    /// What an entry counts as; nil for one that counts as nothing (logged).
    func sample(_ stream: StreamName, _ e: StreamEntry) async throws -> StatsSample? {
        let at = Int64(StreamID(e.id)?.ms ?? UInt64(nowMs()))
        if stream == .results {
            guard let outcome = e[EntryField.outcome].flatMap(AttemptOutcome.init(rawValue:))
            else {
                logger.critical("malformed results entry", ("entry", e.id))
                return nil
            }
            let field = switch outcome {
            case .delivered: StatsField.delivered
            // An ambiguous attempt says nothing about the IP's standing either way; it counts
            // with the deferrals, as nothing was confirmed.
            case .deferred, .ambiguous: StatsField.deferred
            case .failed: StatsField.bounced
            }
            let domain = try await recipientDomain(e[EntryField.id] ?? "")
            let provider = settings.providers.statsName(domain: domain,
                                                        mx: e[EntryField.mxHost] ?? "")
            let code = Int(e[EntryField.code] ?? "") ?? 0
            // An attempt that ended in DNS (no such domain, a null MX, a failed lookup) never
            // left its IP: it says something of the list, not of the IP's standing.
            let ip = e[EntryField.stage] == "dns" ? "" : e[EntryField.sourceIP] ?? ""
            return StatsSample(atMs: at, ip: ip, provider: provider,
                               field: field,
                               reply: StatsSample.replyText(code: code,
                                                            enhanced: e[EntryField.enhanced] ?? "",
                                                            reply: e[EntryField.reply] ?? ""))
        }
        // inbound: the IP and MX host are those of the message's last attempt.
        let id = e[EntryField.id] ?? ""
        let last = try await redis.run("LINDEX", keys.attempts(id), "-1").string
        let attempt = last.flatMap {
            try? JSONDecoder().decode(AttemptRecord.self, from: Data($0.utf8))
        }
        let rcptDomain = (e[EntryField.recipient] ?? "").split(separator: "@").last
            .map(String.init) ?? ""
        let provider = settings.providers.statsName(domain: rcptDomain, mx: attempt?.mx ?? "")
        let field = e[EntryField.kind] == "complaint" ? StatsField.complained
            : e[EntryField.action] == "delayed" ? StatsField.deferred : StatsField.bounced
        return StatsSample(atMs: at, ip: attempt?.ip ?? "", provider: provider, field: field,
                           reply: StatsSample.replyText(code: 0,
                                                        enhanced: e[EntryField.status] ?? "",
                                                        reply: e[EntryField.diagnostic] ?? ""))
    }

    func recipientDomain(_ id: String) async throws -> String {
        try await redis.run("HGET", keys.message(id), MessageField.domain).string ?? ""
    }
}
