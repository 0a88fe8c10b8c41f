// Consumer-group reading of Redis streams: the one way Tern's daemons receive work.
//
// A consumer first re-reads what it was given before a restart (its own pending entries),
// then new entries; `claimStale` takes over entries a dead consumer left pending.

public struct StreamEntry: Sendable, Equatable {
    public let id: String
    public let fields: [String: String]

    public init(id: String, fields: [String: String]) {
        self.id = id
        self.fields = fields
    }

    public subscript(_ name: String) -> String? { fields[name] }
}

extension RedisClient {
    /// Creates the group (and the stream) if missing; an existing group is fine.
    public func ensureGroup(stream: String, group: String) async throws {
        do {
            try await run("XGROUP", "CREATE", stream, group, "0", "MKSTREAM")
        } catch RedisError.server(let e) where e.hasPrefix("BUSYGROUP") {
            return
        }
    }

    /// XREADGROUP on one stream. `pending: true` re-reads this consumer's unacknowledged
    /// entries instead of new ones. Blocks up to `block` when nothing is there.
    public func readGroup(stream: String, group: String, consumer: String, count: Int,
                          block: Duration?, pending: Bool = false) async throws -> [StreamEntry] {
        var args = ["XREADGROUP", "GROUP", group, consumer, "COUNT", String(count)]
        var deadline: ContinuousClock.Instant = .now + .seconds(10)
        if let block, !pending {
            args += ["BLOCK", String(block.milliseconds)]
            deadline = .now + block + .seconds(10)
        }
        args += ["STREAMS", stream, pending ? "0" : ">"]
        let reply = try await withConnection {
            try await $0.command(args, deadline: deadline)
        }.get()
        guard let streams = reply.array, let first = streams.first?.array, first.count == 2,
              let entries = first[1].array else { return [] }
        return entries.compactMap(Self.entry)
    }

    /// XAUTOCLAIM: entries idle longer than `minIdle` in the group move to `consumer`.
    public func claimStale(stream: String, group: String, consumer: String, minIdle: Duration,
                           count: Int) async throws -> [StreamEntry] {
        let ms = minIdle.components.seconds * 1000
        let reply = try await run("XAUTOCLAIM", stream, group, consumer, String(ms), "0-0",
                                  "COUNT", String(count))
        guard let parts = reply.array, parts.count >= 2, let entries = parts[1].array else {
            return []
        }
        return entries.compactMap(Self.entry)
    }

    static func entry(_ value: RedisValue) -> StreamEntry? {
        // A claimed entry that was deleted meanwhile comes back with a null field list.
        guard let pair = value.array, pair.count == 2, let id = pair[0].string,
              pair[1].array != nil else { return nil }
        return StreamEntry(id: id, fields: pair[1].fieldMap)
    }
}

/// Builds the XADD command for an entry, for use inside a transaction.
public func xadd(_ stream: String, _ fields: [(String, String)], maxLen: Int? = nil)
    -> [RedisArg]
{
    var cmd: [RedisArg] = ["XADD", .text(stream)]
    if let maxLen { cmd += ["MAXLEN", "~", .text(String(maxLen))] }
    cmd.append("*")
    for (k, v) in fields { cmd += [.text(k), .text(v)] }
    return cmd
}

extension RedisClient {
    /// Deletes the entries of `stream` that every consumer group has read and acknowledged:
    /// everything below the lowest of each group's oldest pending entry (or, with nothing
    /// pending, the entry after the last one it was given). A stream read by several groups
    /// is trimmed this way instead of entry by entry, so no group loses what another has
    /// finished with. Returns how many entries went.
    @discardableResult
    public func trimAcknowledged(stream: String) async throws -> Int {
        let groups = (try await run("XINFO", "GROUPS", stream).array ?? []).map(\.fieldMap)
        guard !groups.isEmpty else { return 0 }
        var floor: StreamID?
        for g in groups {
            guard let name = g["name"], let last = g["last-delivered-id"].flatMap(StreamID.init)
            else { return 0 }
            var keep = last.successor
            if Int(g["pending"] ?? "0") ?? 0 > 0 {
                let summary = try await run("XPENDING", stream, name).array ?? []
                guard summary.count >= 2, let oldest = summary[1].string.flatMap(StreamID.init)
                else { return 0 }
                keep = oldest
            }
            floor = floor.map { min($0, keep) } ?? keep
        }
        guard let floor else { return 0 }
        return try await run("XTRIM", stream, "MINID", floor.description).int ?? 0
    }
}

/// A stream entry id, `<ms>-<seq>`, ordered as Redis orders them.
public struct StreamID: Comparable, Sendable, CustomStringConvertible {
    public let ms: UInt64
    public let seq: UInt64

    public init(ms: UInt64, seq: UInt64) {
        self.ms = ms
        self.seq = seq
    }

    public init?(_ text: String) {
        let parts = text.split(separator: "-")
        guard parts.count == 2, let ms = UInt64(parts[0]), let seq = UInt64(parts[1]) else {
            return nil
        }
        self.init(ms: ms, seq: seq)
    }

    public var successor: StreamID {
        seq == UInt64.max ? StreamID(ms: ms + 1, seq: 0) : StreamID(ms: ms, seq: seq + 1)
    }

    public var description: String { "\(ms)-\(seq)" }

    public static func < (a: StreamID, b: StreamID) -> Bool {
        (a.ms, a.seq) < (b.ms, b.seq)
    }
}
