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
