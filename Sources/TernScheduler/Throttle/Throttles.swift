// Every source IP's rate towards every provider, held by the scheduler that releases messages
// and saved to Redis whenever a rate changes, so a restarted scheduler resumes where the
// last one left off instead of at full speed.

import Foundation
import Synchronization
import TernCore
import TernMail

final class Throttles: Sendable {
    struct State: Sendable {
        var rates: [String: AdaptiveRate] = [:]
        /// The earliest time each IP may send its next message to each provider, in µs
        /// since the epoch: at a high rate several messages fall into one millisecond.
        var nextAtUs: [String: Int64] = [:]
        /// The earliest time (µs) a pool may send its next message to a provider that limits
        /// the pool as a whole (`poolMessagesPerMinute`).
        var poolNextAtUs: [String: Int64] = [:]
        var turn: [String: Int] = [:]

        /// The rate kept for `key`, or a new one at the provider's ceiling.
        func rate(_ key: String, _ provider: ProviderProfile, _ nowMs: Int64) -> AdaptiveRate {
            rates[key] ?? AdaptiveRate(ceiling: provider.messagesPerMinute, nowMs: nowMs)
        }
    }

    let settings: ThrottleSettings
    private let state = Mutex(State())

    init(settings: ThrottleSettings) { self.settings = settings }

    /// The field of one IP and provider in the `throttles` hash.
    static func key(ip: String, provider: String) -> String { ip + "|" + provider }

    /// What one rate is kept for: a named provider as a whole, but each domain that falls to
    /// the default profile on its own, since those are unrelated servers.
    static func scope(_ provider: ProviderProfile, domain: String) -> ProviderProfile {
        guard provider.name == "default" else { return provider }
        var own = provider
        own.name = "default:" + domain
        return own
    }

    /// Takes saved rates (the `throttles` hash) back after a restart.
    func restore(_ saved: [String: String]) {
        let decoder = JSONDecoder()
        state.withLock { s in
            for (key, json) in saved {
                if let rate = try? decoder.decode(AdaptiveRate.self, from: Data(json.utf8)) {
                    s.rates[key] = rate
                }
            }
        }
    }

    /// An IP of `ips` that may send to `provider` now, taking the IPs in turn; or, when none
    /// may, the time the first of them will. IPs outside `allowed` (at a warm-up cap) are
    /// passed over without losing the rotation's place.
    func pick(_ ips: [SourceIP], pool: String, provider: ProviderProfile, nowMs: Int64,
              allowed: Set<String>? = nil) -> (ip: SourceIP?, retryAtMs: Int64)
    {
        state.withLock { s in
            // A time in µs is due when it falls in the current millisecond or before.
            let endUs = (nowMs + 1) * 1000
            if provider.poolMessagesPerMinute > 0,
               let poolAt = s.poolNextAtUs[pool + "|" + provider.name], poolAt >= endUs {
                return (nil, poolAt / 1000)
            }
            var earliest = Int64.max
            let start = s.turn[pool + "|" + provider.name, default: 0]
            for offset in 0..<ips.count {
                let ip = ips[(start + offset) % ips.count]
                if let allowed, !allowed.contains(ip.address) { continue }
                let key = Self.key(ip: ip.address, provider: provider.name)
                let rate = s.rate(key, provider, nowMs)
                let at = max(rate.holdUntilMs * 1000, s.nextAtUs[key] ?? 0)
                if at < endUs {
                    s.turn[pool + "|" + provider.name] = (start + offset + 1) % ips.count
                    return (ip, nowMs)
                }
                earliest = min(earliest, at / 1000)
            }
            return (nil, earliest)
        }
    }

    /// Notes a message released from `ip` of `pool` to `provider`: the IP's next one waits
    /// one interval at its rate, and the pool's one interval at the pool's ceiling, if any.
    func sent(ip: String, pool: String, provider: ProviderProfile, nowMs: Int64) {
        state.withLock { s in
            if provider.poolMessagesPerMinute > 0 {
                let key = pool + "|" + provider.name
                let interval = Int64((60_000_000 / Double(provider.poolMessagesPerMinute))
                    .rounded(.up))
                s.poolNextAtUs[key] = max(s.poolNextAtUs[key] ?? 0, nowMs * 1000) + interval
            }
            let key = Self.key(ip: ip, provider: provider.name)
            let rate = s.rate(key, provider, nowMs)
            s.nextAtUs[key] = max(s.nextAtUs[key] ?? 0, nowMs * 1000) + rate.intervalUs
        }
    }

    /// Applies one attempt's signal; returns the rate when it changed, to be saved.
    func record(ip: String, provider: ProviderProfile, signal: ReplySignal, reply: String,
                nowMs: Int64) -> AdaptiveRate? {
        state.withLock { s in
            let key = Self.key(ip: ip, provider: provider.name)
            var rate = s.rate(key, provider, nowMs)
            rate.setCeiling(provider.messagesPerMinute, nowMs: nowMs)
            let changed = rate.record(signal, reply: reply, nowMs: nowMs, settings: settings)
            s.rates[key] = rate
            return changed ? rate : nil
        }
    }

    func snapshot() -> [String: AdaptiveRate] { state.withLock { $0.rates } }
}
