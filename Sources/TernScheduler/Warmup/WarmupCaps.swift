// Warm-up caps as the scheduler enforces them. The reputation monitor publishes each warm-up
// IP's daily caps per provider (`Keys.warmupCaps`); the release script counts what each IP
// actually released under the same names (`Keys.warmupSent`), so the check here is a cheap
// first look and the script's check before its count is the one that holds.
//
// Pacing spreads a cap over the UTC day: by a given moment an IP may have sent
// cap × (elapsed share of the day) plus a small burst, never more than the cap, so a morning
// backlog does not spend the whole day's allowance in its first hour.

import Foundation
import TernCore
import TernMail

/// How the scheduler paces warm-up caps (TERN_WARMUP_PACING, TERN_WARMUP_BURST).
public struct WarmupPacing: Sendable, Equatable {
    /// Spread each cap over the day; off lets the cap be spent as soon as mail is there.
    public var enabled = true
    /// The share of the cap that may go at any moment ahead of the even pace.
    public var burst = 0.05

    public init() {}

    static let dayMs: Int64 = 86_400_000

    /// Messages an IP with `cap` for the day may have sent by `nowMs`.
    public func allowance(cap: Int, nowMs: Int64) -> Int {
        guard enabled else { return cap }
        let elapsed = nowMs % Self.dayMs
        let even = Int(Int64(cap) * elapsed / Self.dayMs)
        return min(cap, even + burstCount(cap))
    }

    /// When an IP that has sent `sent` of `cap` today may send again: the next UTC day once
    /// the cap is spent, else the moment the even pace passes what it sent.
    public func nextRoomMs(cap: Int, sent: Int, nowMs: Int64) -> Int64 {
        let dayStart = nowMs - nowMs % Self.dayMs
        if sent >= cap || cap <= 0 { return dayStart + Self.dayMs }
        guard enabled else { return nowMs }
        let needed = Int64(sent - burstCount(cap) + 1)
        guard needed > 0 else { return nowMs }
        // The least elapsed time with cap × elapsed / day ≥ needed.
        let elapsed = (needed * Self.dayMs + Int64(cap) - 1) / Int64(cap)
        return max(nowMs, dayStart + elapsed)
    }

    func burstCount(_ cap: Int) -> Int { max(1, Int((Double(cap) * burst).rounded(.up))) }
}

/// One IP's warm-up state today as the scheduler reads it.
struct WarmupCaps: Sendable, Equatable {
    /// Cap name (a profile name or `*`) -> the day's cap; nil for no cap.
    var caps: [String: Int?]
    /// Cap name -> messages released today.
    var sent: [String: Int]

    /// The name a provider's messages count under: its own cap, else `*`'s; nil when the
    /// IP has neither (not capped for it).
    func name(for provider: String) -> String? {
        caps[provider] != nil ? provider : caps["*"] != nil ? "*" : nil
    }
}

/// What a warm-up IP may do for one provider now.
enum WarmupRoom: Equatable {
    /// Not in warm-up: only the throttle limits it.
    case warm
    /// In warm-up with room: the script's argument (the allowance, or `none`) and the name.
    case room(limit: String, name: String)
    /// At its cap or its pace until the given time.
    case full(untilMs: Int64, name: String, cap: Int, sent: Int)

    var isFull: Bool { if case .full = self { return true } else { return false } }
}

extension WarmupCaps {
    func room(provider: String, pacing: WarmupPacing, nowMs: Int64) -> WarmupRoom {
        guard let name = name(for: provider) else { return .warm }
        guard let cap = caps[name] ?? nil else { return .room(limit: "none", name: name) }
        let sent = sent[name] ?? 0
        let allowance = pacing.allowance(cap: cap, nowMs: nowMs)
        if sent < allowance { return .room(limit: String(allowance), name: name) }
        return .full(untilMs: pacing.nextRoomMs(cap: cap, sent: sent, nowMs: nowMs),
                     name: name, cap: cap, sent: sent)
    }
}

/// What a pool does when every warm-up IP in it is at its cap for a provider.
public enum WarmupFullBehaviour: String, Sendable, Equatable {
    /// The group waits for a warm-up IP to have room (its pace, or the next UTC day); the
    /// pool's warm IPs do not take the warm-up IPs' share.
    case wait
    /// The pool's warm IPs (on no plan) take the mail meanwhile.
    case overflow

    /// TERN_POOL_WARMUP_FULL: `wait` or `overflow` for every pool, or per pool
    /// `default=overflow,bulk=wait` (pools not named wait).
    static func parse(_ text: String, pools: Pools) throws -> [String: WarmupFullBehaviour] {
        let variable = "TERN_POOL_WARMUP_FULL"
        var out = pools.byName.mapValues { _ in WarmupFullBehaviour.wait }
        if let all = WarmupFullBehaviour(rawValue: text.trimmingCharacters(in: .whitespaces)) {
            return out.mapValues { _ in all }
        }
        for item in text.split(separator: ",") {
            let pair = item.split(separator: "=").map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2, let b = WarmupFullBehaviour(rawValue: pair[1]) else {
                throw ConfigError(variable, "'\(item)' is not pool=wait or pool=overflow")
            }
            guard out[pair[0]] != nil else {
                throw ConfigError(variable, "'\(pair[0])' is not a pool of TERN_POOLS")
            }
            out[pair[0]] = b
        }
        return out
    }
}
