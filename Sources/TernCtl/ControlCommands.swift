// `ternctl pause`, `resume`, `cancel` and `suppressions`: the operators' changes, made in
// Redis by the same code the API uses (`ControlStore`, Contract/Control.swift).

import Foundation
import TernCore
import TernMail

enum PauseCommands {
    static let kinds = """
          KIND NAME is one of:
            group POOL:DOMAIN   one group, e.g. group default:gmail.com
            provider NAME       every group of a provider profile (ternctl providers list;
                                "default" is every domain of no profile)
            pool NAME           every group of a pool of TERN_POOLS
            org NAME            every message of an organisation
        """

    static let pause = CtlCommand(
        name: "pause", summary: "pause a group, provider, pool or organisation",
        help: """
            usage: ternctl pause [--reason TEXT] [--env-file FILE] [--json] KIND NAME
                   ternctl pause --list [--env-file FILE] [--json]

            Stops the scheduler from releasing the messages KIND NAME covers. They wait in
            their queues and are not failed, unless their deadline (TERN_MAX_AGE) passes
            while paused: then they expire, with the pause named in their history;
            `ternctl resume` releases the others.
            The pause is kept in Redis (the `pauses` hash), so it holds across restarts of
            every daemon, and the scheduler's release step reads it, so nothing it covers is
            released once this command returns. Messages already handed to a
            sender are not called back.

            A held message's history gets a "held" entry naming the pause and its reason;
            the scheduler's tern_pauses_active gauge counts pauses by kind. Pausing what is
            already paused replaces the reason.

            \(kinds)

              --reason TEXT    why, shown in the held messages' history and in --list: at
                               most 500 characters, no control characters
              --list           print the active pauses, with who set each (`by`: ternctl,
                               or the API key's scope and id, as ops:KEYID or org:ORG:KEYID)

            NAME must be a pool of TERN_POOLS, a provider profile, or POOL:DOMAIN; provider
            names and domains are lowercased, a domain's trailing dot dropped and an
            internationalised one written in A-labels, as the scheduler names groups.

            Exit status: 0, 64 bad usage (an unknown pool or provider, a bad reason),
            69 Redis does not answer, 78 a setting is wrong.

            \(CtlContext.optionsHelp)
            """,
        run: { try await run($0, $1, resume: false) })

    static let resume = CtlCommand(
        name: "resume", summary: "lift a pause",
        help: """
            usage: ternctl resume [--env-file FILE] [--json] KIND NAME

            Lifts the pause of KIND NAME (see `ternctl pause --help`). The groups it held
            are released at the scheduler's next look (within a second); an organisation's
            held messages are made due at once, in the same step as the resume.

            \(kinds)

            Exit status: 0, 1 when KIND NAME was not paused, 64 bad usage, 69 Redis does not
            answer, 78 a setting is wrong.

            \(CtlContext.optionsHelp)
            """,
        run: { try await run($0, $1, resume: true) })

    static func run(_ arguments: [String], _ io: CtlOutput, resume: Bool) async throws -> Int32 {
        let args = try ArgumentReader(arguments, valued: CtlContext.valued.union(["reason"]),
                                      flags: CtlContext.flags.union(["list"]))
        let ctx = try CtlContext(args)
        if args.flags.contains("list") {
            guard !resume, args.operands.isEmpty else { throw UsageError("--list alone") }
            let pauses = try await ControlStore(redis: try await ctx.redis(), keys: ctx.keys)
                .pauses()
            if ctx.json {
                ctx.print(json: ["pauses": pauses.map(\.object)], io)
            } else if pauses.isEmpty {
                io.line("nothing is paused")
            } else {
                for line in table(["kind", "name", "since", "by", "reason"], pauses.map {
                    [$0.kind.rawValue, $0.name, timestamp(ms: $0.sinceMs), $0.by, $0.reason]
                }) { io.line(line) }
            }
            return 0
        }
        guard args.operands.count == 2 else { throw UsageError("give KIND NAME") }
        guard let kind = PauseKind(rawValue: args.operands[0]) else {
            throw UsageError("KIND is group, provider, pool or org")
        }
        let names = PauseNames(
            pools: try Pools(ctx.env),
            providers: try ProviderCatalog.load(overrides: ctx.env.values["TERN_PROVIDERS_FILE"]))
        let name: String
        switch names.canonical(kind, args.operands[1]) {
        case .success(let canonical): name = canonical
        case .failure(let problem): throw UsageError("NAME \(problem.message)")
        }
        let reason = args.options["reason"]?.last ?? ""
        if let problem = Pause.reasonProblem(reason) { throw UsageError("--reason \(problem)") }
        let store = ControlStore(redis: try await ctx.redis(), keys: ctx.keys)
        if resume {
            let lifted = try await store.resume(kind, name)
            if ctx.json {
                ctx.print(json: ["kind": kind.rawValue, "name": name, "resumed": lifted], io)
            } else {
                io.text(lifted ? "resumed \(kind.rawValue) \(name)"
                        : "\(kind.rawValue) \(name) was not paused")
            }
            return lifted ? 0 : 1
        }
        let pause = Pause(kind: kind, name: name, reason: reason, by: "ternctl",
                          sinceMs: nowMs())
        let created = try await store.pause(pause)
        if ctx.json {
            var doc = pause.object
            doc["created"] = created
            ctx.print(json: doc, io)
        } else {
            io.line((created ? "paused " : "still paused, reason updated: ")
                    + "\(kind.rawValue) \(name)")
        }
        return 0
    }
}

enum CancelCommand {
    static let command = CtlCommand(
        name: "cancel", summary: "cancel a message not yet sent",
        help: """
            usage: ternctl cancel [--env-file FILE] [--json] ID

            Cancels message ID if no sender has it: queued, deferred, or held by a
            breaker, a cap, a warm-up or a pause. It ends as `cancelled` (final) with a
            `cancelled` event on the events stream and in its history, and is never sent.
            The check and the change are one step in Redis, the same step as the
            scheduler's release, so a message is either released or cancelled, never both.

            A message in a sender's hands (`sending`) or already final is left alone: the
            command says its state and exits 1.

            Exit status: 0 cancelled, 1 not cancelled or no such message, 64 bad usage,
            69 Redis does not answer, 78 a setting is wrong.

            \(CtlContext.optionsHelp)
            """,
        run: run)

    static func run(_ arguments: [String], _ io: CtlOutput) async throws -> Int32 {
        let args = try ArgumentReader(arguments, valued: CtlContext.valued,
                                      flags: CtlContext.flags)
        let id = try CtlContext.messageID(args)
        let ctx = try CtlContext(args)
        let lifetime = try MessageLifetime(ctx.env)
        let user = ProcessInfo.processInfo.environment["USER"] ?? "operator"
        let outcome = try await ControlStore(redis: try await ctx.redis(), keys: ctx.keys)
            .cancel(id: id, org: nil, by: "ternctl (\(user))", recordTTL: lifetime.recordTTL)
        let (state, text, code): (String?, String, Int32)
        switch outcome {
        case .cancelled: (state, text, code) = ("cancelled", "\(id): cancelled", 0)
        case .notFound: (state, text, code) = (nil, "\(id): no such message", 1)
        case .refused(let s):
            let why = s == .sending ? "in a sender's hands" : "already final"
            (state, text, code) = (s.rawValue, "\(id): not cancelled, it is \(s.rawValue) "
                                   + "(\(why))", 1)
        }
        if ctx.json {
            ctx.print(json: ["id": id, "cancelled": code == 0,
                             "state": state.map { $0 as Any } ?? NSNull()], io)
        } else {
            io.line(text)
        }
        return code
    }
}

enum SuppressionsCommand {
    static let command = CtlCommand(
        name: "suppressions", summary: "list, add, remove or export suppressed addresses",
        help: """
            usage: ternctl suppressions list ORG [--env-file FILE] [--json]
                   ternctl suppressions add ORG ADDRESS...
                   ternctl suppressions remove ORG ADDRESS...
                   ternctl suppressions export ORG

            An organisation's suppression list (supp:ORG) holds the addresses it must not
            mail again: hard bounces and complaints put them there, and the scheduler ends
            a new message to one at once as `suppressed`. Addresses are kept lowercased.

            list    the addresses, one a line
            add     suppress the addresses (an address already there is left as it is)
            remove  mail them again
            export  CSV (RFC 4180) with an "address" header, as the API's
                    GET /v1/suppressions/ORG?format=csv; an address with a quote or a
                    comma in its quoted local part is quoted

            Exit status: 0, 1 when an address to remove was not suppressed or an address
            to add is not one, 64 bad usage, 69 Redis does not answer, 78 a setting is
            wrong.

            \(CtlContext.optionsHelp)
            """,
        run: run)

    static func run(_ arguments: [String], _ io: CtlOutput) async throws -> Int32 {
        let args = try ArgumentReader(arguments, valued: CtlContext.valued,
                                      flags: CtlContext.flags)
        guard args.operands.count >= 2 else { throw UsageError("give an action and an ORG") }
        let (action, org) = (args.operands[0], args.operands[1])
        guard PauseKind.org.problem(with: org) == nil else {
            throw UsageError("ORG must be 1 to 64 characters of a-z, 0-9, _ and -")
        }
        let addresses = Array(args.operands.dropFirst(2))
        let ctx = try CtlContext(args)
        let key = ctx.keys.suppressions(org)
        switch action {
        case "list", "export":
            guard addresses.isEmpty else { throw UsageError("\(action) takes only ORG") }
            let members = try await ctx.redis().run("SMEMBERS", key).array?
                .compactMap(\.string).sorted() ?? []
            if action == "export" {
                io.raw(SuppressionExport.csv(members))
            } else if ctx.json {
                ctx.print(json: ["org": org, "addresses": members], io)
            } else {
                members.forEach(io.text)
            }
            return 0
        case "add", "remove":
            guard !addresses.isEmpty else { throw UsageError("give the addresses") }
            var status: Int32 = 0
            var changed: [String: Bool] = [:]
            let redis = try await ctx.redis()
            for address in addresses {
                guard case .success(let parsed) = EmailAddress.parse(address) else {
                    io.error("suppressions: '\(address)' is not an email address")
                    status = 1
                    continue
                }
                // Removing takes the form lists held before listKey too.
                let member = parsed.listKey
                let n = try await redis.run(action == "add"
                    ? ["SADD", key, member]
                    : ["SREM", key] + parsed.suppressionMembers).int
                changed[member] = (n ?? 0) > 0
                if action == "remove" && n == 0 {
                    io.error("suppressions: \(member) was not suppressed for \(org)")
                    status = 1
                } else if !ctx.json {
                    io.line((action == "add" ? "suppressed " : "removed ") + member)
                }
            }
            if ctx.json { ctx.print(json: ["org": org, "action": action, "changed": changed], io) }
            return status
        default:
            throw UsageError("unknown action '\(action)'; list, add, remove or export")
        }
    }
}
