// What operators change while Tern runs, shared by the API and `ternctl`: pauses of a group,
// a provider, a pool or an organisation, and the cancellation of a message not yet sent.
//
// Both act in Redis in one atomic step (a Lua script or a single command), and the
// scheduler's release script reads the same keys in its own atomic step, so a change never
// races a release: a message is either released before a pause or a cancel, or not at all.
//
//   pauses                hash  `<kind>:<name>` -> JSON `Pause`; the release script reads it
//   pause-held:<org>      hash  message id -> group, the messages an organisation's pause
//                               holds back; a resume puts them back in their queues at once
//   pauses:version        int   counts every change, so a reader that caches the pauses can
//                               tell when to look again (the release script reads the hash)

import Foundation
import TernCore

/// What a pause stops: one group (`pool:domain`), a provider profile (by its name), a pool,
/// or an organisation.
public enum PauseKind: String, Sendable, Codable, CaseIterable {
    case group, provider, pool, org

    /// Why `name` cannot name a thing of this kind, or nil when it can. Only the form is
    /// checked here; `PauseNames` also checks that the thing exists and normalises it.
    public func problem(with name: String) -> String? {
        if self == .org {
            let ok = (1...64).contains(name.utf8.count) && name.utf8.allSatisfy {
                (97...122).contains($0) || (48...57).contains($0) || $0 == 95 || $0 == 45
            }
            return ok ? nil : "must be 1 to 64 characters of a-z, 0-9, _ and -"
        }
        let visible = name.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != 0x7C }
        guard (1...255).contains(name.utf8.count), visible else {
            return "must be 1 to 255 visible ASCII characters other than |"
        }
        switch self {
        case .group:
            return name.contains(":") ? nil : "a group is pool:domain"
        case .provider, .pool:
            return name.contains(":") ? "has no ':'" : nil
        case .org:
            return nil
        }
    }
}

/// Why a pause's name cannot be used.
public enum PauseNameProblem: Error, Equatable, Sendable {
    /// Not of the kind's form: a bad request (400, exit 64).
    case malformed(String)
    /// Well formed but names no pool or provider Tern knows (404, exit 64): such a pause
    /// would stop nothing.
    case unknown(String)

    public var message: String {
        switch self {
        case .malformed(let text), .unknown(let text): return text
        }
    }
}

/// The pools (TERN_POOLS) and provider profiles (the catalog with TERN_PROVIDERS_FILE) a
/// pause may name, as the scheduler knows them. The API and ternctl both check a pause's
/// name here, so that a pause always names what the release step compares.
public struct PauseNames: Sendable {
    public let pools: Set<String>
    /// Profile names as the catalog spells them (`default` is every domain of no profile).
    public let providers: [String]

    public init(pools: Pools, providers: ProviderCatalog) {
        self.pools = Set(pools.byName.keys)
        self.providers = providers.profiles.map(\.name)
    }

    /// The name as the scheduler's release step compares it, or why there is none.
    /// Provider names and domains are lowercased; a domain loses its trailing dot and is
    /// written in A-labels, as the API writes a message's domain. Pool names are exact.
    public func canonical(_ kind: PauseKind, _ name: String) -> Result<String, PauseNameProblem> {
        if kind != .group, let problem = kind.problem(with: name) {
            return .failure(.malformed(problem))
        }
        switch kind {
        case .org:
            return .success(name)
        case .pool:
            return pools.contains(name) ? .success(name) : .failure(.unknown(unknownPool(name)))
        case .provider:
            let lower = name.lowercased()
            guard let known = providers.first(where: { $0.lowercased() == lower }) else {
                return .failure(.unknown("'\(name)' is not a provider profile (one of "
                                         + providers.sorted().joined(separator: ", ") + ")"))
            }
            return .success(known)
        case .group:
            guard (1...255).contains(name.utf8.count), let colon = name.firstIndex(of: ":")
            else { return .failure(.malformed("a group is pool:domain")) }
            let pool = String(name[..<colon])
            var domain = String(name[name.index(after: colon)...])
            guard pools.contains(pool) else { return .failure(.unknown(unknownPool(pool))) }
            if domain.hasSuffix(".") { domain.removeLast() }
            guard case .success(let address) = EmailAddress.parse("x@" + domain),
                  !address.isAddressLiteral
            else {
                return .failure(.malformed("'\(domain)' is not a domain name; a group is "
                                           + "pool:domain"))
            }
            return .success(pool + ":" + address.asciiDomain)
        }
    }

    private func unknownPool(_ name: String) -> String {
        "'\(name)' is not a pool of TERN_POOLS (one of "
            + pools.sorted().joined(separator: ", ") + ")"
    }
}

/// One active pause, as stored in the `pauses` hash.
public struct Pause: Sendable, Codable, Equatable {
    public var kind: PauseKind
    public var name: String
    /// Why, in the operator's words; shown in the history of every message it holds.
    public var reason: String
    /// Who paused: `ternctl`, or through the API the key's scope and id (`all:<key id>`,
    /// `ops:<key id>`, `org:<org>:<key id>`). A key bound to an organisation changes only the
    /// pauses whose `by` starts with `org:<its org>:` (`ownerPrefix`).
    public var by: String
    public var sinceMs: Int64

    enum CodingKeys: String, CodingKey {
        case kind, name, reason, by
        case sinceMs = "since_ms"
    }

    public init(kind: PauseKind, name: String, reason: String, by: String, sinceMs: Int64) {
        self.kind = kind
        self.name = name
        self.reason = reason
        self.by = by
        self.sinceMs = sinceMs
    }

    /// The longest reason, in Unicode scalars.
    public static let maxReason = 500

    /// Why `reason` cannot be a pause's reason, or nil. A reason is printed on operators'
    /// terminals and in message histories, so no control character (C0, DEL, C1: a line
    /// break or an escape sequence could forge or hide output) and no bidirectional
    /// override (which reorders what is shown).
    public static func reasonProblem(_ reason: String) -> String? {
        guard reason.unicodeScalars.count <= maxReason else {
            return "must be at most \(maxReason) characters"
        }
        let bad = reason.unicodeScalars.first {
            EmailAddress.isControl($0) || EmailAddress.isBidiControl($0)
        }
        guard let bad else { return nil }
        return "must hold no control character or bidirectional override (found U+"
            + String(format: "%04X", bad.value) + ")"
    }

    /// The start of `by` of every pause set by a key bound to `org`.
    public static func ownerPrefix(org: String) -> String { "org:" + org + ":" }

    /// The field in the `pauses` hash.
    public var field: String { Pause.field(kind, name) }
    public static func field(_ kind: PauseKind, _ name: String) -> String {
        kind.rawValue + ":" + name
    }

    /// What a message's history says while it waits for this pause.
    public var holdReason: String {
        "\(kind == .org ? "organisation" : kind.rawValue) \(name) is paused"
            + (reason.isEmpty ? "" : " (\(reason))") + ": waiting for a resume"
    }

    /// The JSON operators see: `since` as a timestamp.
    public var object: [String: any Sendable] {
        ["kind": kind.rawValue, "name": name, "reason": reason, "by": by,
         "since": timestamp(ms: sinceMs)]
    }
}

extension Keys {
    /// Hash: `<kind>:<name>` -> JSON `Pause`, the active pauses (`Control.swift`).
    public var pauses: String { prefix + "pauses" }
    /// String: incremented at every pause and resume.
    public var pausesVersion: String { prefix + "pauses:version" }
    /// Hash: message id -> group, the messages an organisation's pause holds back.
    public func pauseHeld(_ org: String) -> String { prefix + "pause-held:" + org }
    /// The prefix the release script appends an organisation to for `pauseHeld`.
    public var pauseHeldPrefix: String { prefix + "pause-held:" }
}

extension MessageField {
    /// Why a message waits although due: `breaker`, `cap`, `warmup` or `pause`; cleared at
    /// release. Set with the first `held` history entry.
    public static let held = "held"
}

extension MessageState {
    /// States a message can be cancelled in: waiting in its group's queue, never in a
    /// sender's hands (`sending`) nor final.
    public static let cancellable: [MessageState] = [.queued, .deferred]
}

/// What a pause or a resume did.
public enum PauseChange: Sendable, Equatable {
    /// A new pause.
    case created
    /// A pause already there took the new reason and setter.
    case replaced
    /// The pause was lifted.
    case lifted
    /// There was no such pause to lift.
    case notPaused
    /// The pause is another's (its `by` is given); nothing was changed.
    case refused(by: String)

    init(_ reply: RedisValue) {
        let parts = reply.array ?? []
        let word = parts.first?.string ?? ""
        let value = parts.count > 1 ? parts[1] : RedisValue.null
        switch word {
        case "refused": self = .refused(by: value.string ?? "")
        case "set": self = value.int == 1 ? .created : .replaced
        default: self = value.int == 1 ? .lifted : .notPaused
        }
    }
}

/// The outcome of a cancel request.
public enum CancelOutcome: Sendable, Equatable {
    case cancelled
    /// No such message, or one of another organisation than the caller's.
    case notFound
    /// Already in a sender's hands or final: nothing was changed.
    case refused(state: MessageState)
}

/// Pauses and cancellations over one Redis client.
public struct ControlStore: Sendable {
    public let redis: RedisClient
    public let keys: Keys

    public init(redis: RedisClient, keys: Keys) {
        self.redis = redis
        self.keys = keys
    }

    /// Every active pause, sorted by kind and name.
    public func pauses() async throws -> [Pause] {
        let map = try await redis.run("HGETALL", keys.pauses).fieldMap
        return map.values.compactMap {
            try? JSONDecoder().decode(Pause.self, from: Data($0.utf8))
        }.sorted { ($0.kind.rawValue, $0.name) < ($1.kind.rawValue, $1.name) }
    }

    /// Sets a pause; true when it is new (a pause already there takes the new reason).
    @discardableResult
    public func pause(_ pause: Pause) async throws -> Bool {
        try await self.pause(pause, owner: nil) == .created
    }

    /// Sets a pause, unless `owner` is given and a pause already there has a `by` that does
    /// not start with it: a key bound to an organisation cannot take over (and so lift) a
    /// pause an operator set. The check and the change are one step.
    public func pause(_ pause: Pause, owner: String?) async throws -> PauseChange {
        let json = String(decoding: try JSONEncoder().encode(pause), as: UTF8.self)
        let reply = try await redis.eval(
            ControlScripts.pause, keys: [keys.pauses, keys.pausesVersion],
            args: [.text(pause.field), .text(json), .text(owner ?? "")])
        return PauseChange(reply)
    }

    /// Lifts a pause; false when there was none. An organisation's held messages go back
    /// into their queues, due now, in the same step.
    @discardableResult
    public func resume(_ kind: PauseKind, _ name: String, nowMs: Int64 = nowMs()) async throws
        -> Bool
    {
        try await resume(kind, name, owner: nil, nowMs: nowMs) == .lifted
    }

    /// Lifts a pause, unless `owner` is given and the pause's `by` does not start with it
    /// (`.refused`, nothing changed).
    public func resume(_ kind: PauseKind, _ name: String, owner: String?,
                       nowMs: Int64 = nowMs()) async throws -> PauseChange {
        let held = kind == .org ? keys.pauseHeld(name) : keys.pauseHeld("")
        let reply = try await redis.eval(
            ControlScripts.resume, keys: [keys.pauses, keys.pausesVersion, held, keys.dueGroups],
            args: [.text(Pause.field(kind, name)), .text(kind == .org ? "1" : "0"),
                   .text(keys.groupQueue("")), .text(String(nowMs)), .text(owner ?? "")])
        return PauseChange(reply)
    }

    /// Cancels a message still waiting for release. `org`: the caller's organisation, when
    /// it is bound to one (another organisation's message is "not found"). `recordTTL`: how
    /// long the final record is kept, as the scheduler keeps it (TERN_RECORD_TTL).
    public func cancel(id: String, org: String?, by: String, recordTTL: Duration,
                       nowMs: Int64 = nowMs()) async throws -> CancelOutcome {
        let fields = [MessageField.org, MessageField.pool, MessageField.domain,
                      MessageField.from, MessageField.recipient, MessageField.metadata,
                      MessageField.state, MessageField.tags]
        let v = try await redis.run(["HMGET", keys.message(id)] + fields).array ?? []
        guard v.count == fields.count, let stateText = v[6].string else { return .notFound }
        let owner = v[0].string ?? ""
        if let org, org != owner { return .notFound }
        let event = MessageEvent(id: id, event: .cancelled, atMs: nowMs, org: owner,
                                 from: v[3].string ?? "", to: v[4].string ?? "",
                                 metadataJSON: v[5].string ?? "{}",
                                 tagsJSON: v[7].string ?? "[]",
                                 detail: ["reason": "cancelled by \(by)"]).documents
        let group = (v[1].string ?? "") + ":" + (v[2].string ?? "")
        let reply = try await redis.eval(
            ControlScripts.cancel,
            keys: [keys.message(id), keys.history(id), keys.attempts(id),
                   keys.stream(.events), keys.groupQueue(group), keys.pauseHeld(owner),
                   keys.groupDue(group), keys.deadlines, keys.finalCounts],
            args: [.text(id), .text(event.history), .text(event.json),
                   .text(String(recordTTL.milliseconds / 1000)),
                   .text(MessageState.cancellable.map(\.rawValue).joined(separator: ","))])
        let parts = reply.array?.compactMap(\.string) ?? []
        switch parts.first {
        case "cancelled": return .cancelled
        case "state":
            let state = parts.count > 1 ? MessageState(rawValue: parts[1]) : nil
            return .refused(state: state ?? MessageState(rawValue: stateText) ?? .sending)
        default: return .notFound
        }
    }
}

enum ControlScripts {
    /// KEYS: 1 message, 2 history, 3 attempts, 4 events stream, 5 the group's queue, 6 the
    /// organisation's pause-held hash, 7 the group's due set (`groupDue`), 8 the deadline
    /// index, 9 the final-state counts. ARGV: 1 id, 2 history entry, 3 event JSON, 4 record
    /// TTL (s), 5 the cancellable states, ","-joined. Returns {"cancelled"}, {"state", s}
    /// when the state forbids it, {"missing"}.
    ///
    /// The release script pops a message and sets it `sending` in one step, so this check
    /// and that one never interleave: a message is released or cancelled, not both.
    static let cancel = RedisScript("""
        local state = redis.call('HGET', KEYS[1], 'state')
        if not state then return {'missing'} end
        local ok = false
        for s in string.gmatch(ARGV[5], '[^,]+') do
          if s == state then ok = true end
        end
        if not ok then return {'state', state} end
        redis.call('HSET', KEYS[1], 'state', 'cancelled')
        redis.call('HDEL', KEYS[1], 'held', 'body')
        redis.call('ZREM', KEYS[5], ARGV[1])
        redis.call('ZREM', KEYS[7], ARGV[1])
        redis.call('HDEL', KEYS[6], ARGV[1])
        redis.call('ZREM', KEYS[8], ARGV[1])
        redis.call('HINCRBY', KEYS[9], 'cancelled', 1)
        redis.call('RPUSH', KEYS[2], ARGV[2])
        redis.call('XADD', KEYS[4], 'MAXLEN', '~', '1000000', '*', 'id', ARGV[1],
                   'event', 'cancelled', 'json', ARGV[3])
        for i = 1, 3 do redis.call('EXPIRE', KEYS[i], tonumber(ARGV[4])) end
        return {'cancelled'}
        """)

    /// The check of a pause's setter, shared by `pause` and `resume`: ARGV[OWNER] is the
    /// start its `by` must have, or empty for anyone's. Leaves `refused` set to its `by`.
    private static let ownerCheck = """
        local refused = nil
        if ARGV[OWNER] ~= '' then
          local current = redis.call('HGET', KEYS[1], ARGV[1])
          if current then
            local by = tostring(cjson.decode(current).by or '')
            if string.sub(by, 1, #ARGV[OWNER]) ~= ARGV[OWNER] then refused = by end
          end
        end
        """

    /// KEYS: 1 pauses, 2 version. ARGV: 1 field, 2 the pause's JSON, 3 owner (see
    /// `ownerCheck`). Returns {"set", 1 new or 0 replaced} or {"refused", by}.
    static let pause = RedisScript(ownerCheck.replacingOccurrences(of: "OWNER", with: "3") + "\n"
        + """
        if refused then return {'refused', refused} end
        local new = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
        redis.call('INCR', KEYS[2])
        return {'set', new}
        """)

    /// KEYS: 1 pauses, 2 version, 3 the organisation's pause-held hash, 4 due index.
    /// ARGV: 1 field, 2 "1" for an organisation, 3 the group queue key prefix, 4 now (ms),
    /// 5 owner (see `ownerCheck`). Returns {"lifted", 1 lifted or 0 none} or {"refused", by}.
    /// Held messages still queued (not cancelled) become due now; `XX` leaves out those
    /// that left their queue meanwhile.
    ///
    /// Known limit: all of an organisation's held messages move in this one step, which
    /// keeps Redis busy for about a tenth of a second per hundred thousand of them.
    static let resume = RedisScript(ownerCheck.replacingOccurrences(of: "OWNER", with: "5") + "\n"
        + """
        if refused then return {'refused', refused} end
        local gone = redis.call('HDEL', KEYS[1], ARGV[1])
        redis.call('INCR', KEYS[2])
        if ARGV[2] == '1' then
          local held = redis.call('HGETALL', KEYS[3])
          for i = 1, #held, 2 do
            local id, group = held[i], held[i + 1]
            redis.call('ZADD', ARGV[3] .. group, 'XX', 'LT', ARGV[4], id)
            redis.call('ZADD', KEYS[4], 'LT', ARGV[4], group)
          end
          redis.call('DEL', KEYS[3])
        end
        return {'lifted', gone}
        """)
}
