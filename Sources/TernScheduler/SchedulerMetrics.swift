// What the scheduler counts for /metrics: attempts as the results report them, releases, and
// at scrape time the state of its in-memory throttles and breakers and of its streams.

import TernCore
import TernMail

struct SchedulerMetrics: Sendable {
    let registry = MetricsRegistry()
    let attempts: Counter
    let tls: Counter
    let releases: Counter
    let inboundBounces: Counter

    init(throttles: Throttles, breakers: Breakers) {
        attempts = registry.counter(
            "tern_scheduler_attempts_total",
            "Delivery attempts whose results the scheduler applied, by outcome, reply class "
                + "(2xx, 4xx, 5xx, none when no reply came) and provider.",
            labels: ["outcome", "reply_class", "provider"])
        tls = registry.counter(
            "tern_scheduler_attempts_tls_total",
            "Attempts that reached an SMTP session, by whether it ran over TLS (yes, no).",
            labels: ["tls"])
        releases = registry.counter("tern_scheduler_releases_total",
                                    "Messages released to the ready stream.")
        inboundBounces = registry.counter("tern_scheduler_inbound_bounces_total",
                                          "Asynchronous bounces (DSNs) applied.")
        // A domain of no known provider is its own throttle scope (`default:<domain>`), so
        // it gets its own series here; nothing caps their number yet.
        let rate = registry.gauge(
            "tern_throttle_rate_per_minute",
            "Messages a minute the adaptive throttle allows from an IP to a provider.",
            labels: ["ip", "provider"])
        let state = registry.gauge(
            "tern_throttle_state",
            "1 for the throttle's current state (steady, backing_off, paused), 0 for the others.",
            labels: ["ip", "provider", "state"])
        let breaker = registry.gauge(
            "tern_breaker_state",
            "1 for an organisation's breaker state (closed, open, half_open), 0 for the others.",
            labels: ["org", "state"])
        registry.addCollector {
            var rates: [[String]: Double] = [:], states: [[String]: Double] = [:]
            for (key, r) in throttles.snapshot() {
                let parts = key.split(separator: "|", maxSplits: 1).map(String.init)
                guard parts.count == 2 else { continue }
                rates[parts] = r.rate
                for s in [AdaptiveRate.State.steady, .backingOff, .paused] {
                    states[parts + [s.rawValue]] = s == r.state ? 1 : 0
                }
            }
            rate.replaceAll(rates)
            state.replaceAll(states)
            var orgs: [[String]: Double] = [:]
            for (org, b) in breakers.snapshot() {
                for s in [CircuitBreaker.State.closed, .open, .halfOpen] {
                    orgs[[org, s.rawValue]] = s == b.state ? 1 : 0
                }
            }
            breaker.replaceAll(orgs)
        }
        ProcessMetrics.register(in: registry)
    }

    /// `tern_messages_final_total`: messages that entered each final state, counted in Redis
    /// in the transaction that set it (so every scheduler, and a restarted one, reports the
    /// same totals: take one scheduler's series, not their sum). Read at scrape time; a
    /// scrape that cannot read them in a second keeps the last values.
    func finalStateMetrics(redis: RedisClient, keys: Keys) {
        let counter = registry.counter(
            "tern_messages_final_total",
            "Messages that entered each final state (delivered, bounced, expired, suppressed, "
                + "cancelled), across all schedulers; a bounce after delivery counts in both.",
            labels: ["state"])
        registry.addCollector {
            guard let reply = try? await redis.pipeline([["HGETALL", .text(keys.finalCounts)]],
                                                        within: .seconds(1)).first,
                  case .array = reply
            else { return }
            let counts = reply.fieldMap
            for state in MessageState.allCases where state.isFinal {
                counter.set(labels: [state.rawValue],
                            to: Double(counts[state.rawValue] ?? "") ?? 0)
            }
        }
    }

    /// `tern_pauses_active`: the operators' pauses by kind, read from Redis at scrape time
    /// (a scrape that cannot read them in a second keeps the last values).
    func pauseMetrics(redis: RedisClient, keys: Keys) {
        let gauge = registry.gauge("tern_pauses_active",
                                   "Pauses operators set, by kind (group, provider, pool, org).",
                                   labels: ["kind"])
        registry.addCollector {
            guard let reply = try? await redis.pipeline([["HKEYS", .text(keys.pauses)]],
                                                        within: .seconds(1)).first,
                  case .array(let fields) = reply
            else { return }
            var counts: [[String]: Double] = [:]
            for kind in PauseKind.allCases { counts[[kind.rawValue]] = 0 }
            for field in fields.compactMap(\.string) {
                let kind = String(field.prefix(while: { $0 != ":" }))
                if counts[[kind]] != nil { counts[[kind]]! += 1 }
            }
            gauge.replaceAll(counts)
        }
    }

    /// One applied result.
    func attempt(_ a: AttemptRecord, outcome: AttemptOutcome, provider: String) {
        let replyClass = (200..<600).contains(a.code) ? "\(a.code / 100)xx" : "none"
        attempts.inc(outcome.rawValue, replyClass, provider)
        // Attempts that never reached a session (dns, connect) have no TLS to speak of.
        if a.code > 0 || !a.tls.isEmpty {
            tls.inc(a.tls.isEmpty ? "no" : "yes")
        }
    }
}
