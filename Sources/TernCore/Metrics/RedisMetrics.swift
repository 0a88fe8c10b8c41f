// Metrics read from Redis at scrape time: the length and the pending entries of the streams
// a daemon reads, and the operators' `counters` hash.

extension MetricsRegistry {
    /// `tern_stream_length{stream}` and `tern_stream_pending{stream,group}`, sampled with
    /// one pipelined round trip per scrape.
    public func streamMetrics(redis: RedisClient, streams: [ConsumedStream],
                              timeout: Duration = .seconds(1)) {
        let length = gauge("tern_stream_length", "Entries in the stream.", labels: ["stream"])
        let pending = gauge("tern_stream_pending",
                            "Entries delivered to the consumer group and not yet acknowledged.",
                            labels: ["stream", "group"])
        addCollector {
            var commands: [[RedisArg]] = []
            for s in streams {
                commands.append(["XLEN", .text(s.key)])
                commands.append(["XINFO", "GROUPS", .text(s.key)])
            }
            guard let replies = try? await redis.pipeline(commands, within: timeout) else {
                return
            }
            for (i, s) in streams.enumerated() {
                if let n = replies[2 * i].int { length.set(Double(n), s.name) }
                for group in replies[2 * i + 1].array ?? [] {
                    let fields = group.fieldMap
                    guard fields["name"] == s.group, let n = fields["pending"].flatMap(Int.init)
                    else { continue }
                    pending.set(Double(n), s.name, s.group)
                }
            }
        }
    }

    /// `tern_counters_total{counter}`: the fields of the `counters` hash whose names start
    /// with one of `prefixes` (each daemon shows the counters it writes).
    public func redisCounters(redis: RedisClient, key: String, prefixes: [String],
                              timeout: Duration = .seconds(1)) {
        let counters = counter("tern_counters_total",
                               "Counters kept in the Redis counters hash, by field.",
                               labels: ["counter"])
        addCollector {
            guard let reply = try? await redis.pipeline([["HGETALL", .text(key)]],
                                                        within: timeout).first else { return }
            for (field, value) in reply.fieldMap
            where prefixes.contains(where: { field.hasPrefix($0) }) {
                counters.set(labels: [field], to: Double(value) ?? 0)
            }
        }
    }
}
