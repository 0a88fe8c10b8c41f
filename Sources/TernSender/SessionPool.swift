// Open SMTP sessions kept between messages (connection reuse), and the wait for a connection
// when a group has all it may open.
//
// A session is shared only by messages that would open the same connection: same source IP,
// same MX host name, address and port, same STARTTLS policy (`SessionKey`). The name is part
// of it because results report it and a TLS certificate is checked against it; the policy
// because a clear session must not carry mail whose domain requires TLS. A session that fell
// back to clear text after a failed handshake is kept under `.disabled`, the policy the next
// messages to that host compute while it is remembered. After a message the session goes
// back to the pool, idle, unless it has carried TERN_MAX_MESSAGES_PER_CONNECTION messages or
// is no longer in step; an idle session is closed with QUIT after TERN_CONNECTION_IDLE.
//
// Every open session holds one lease (`GroupLeases`) on the group that opened it, and keeps
// it while it serves messages of other groups with the same MX. A delivery that finds no idle
// session and no free lease waits in line for its key: a session given back is handed to the
// first in line, a lease given back here wakes the first waiter of its group, and a tick
// lets the first waiter of each key ask Redis again (leases freed by other senders). Idle
// sessions of the same group under another key are closed to free their leases, and so is
// one idle session of a group another sender was just refused (checked every half second).

import Synchronization
import TernCore
import TernMail
import TernSMTP

/// Which connections are interchangeable.
public struct SessionKey: Hashable, Sendable, CustomStringConvertible {
    /// The source IP, "" when the kernel picks.
    public var source: String
    public var mxHost: String
    public var address: String
    public var port: UInt16
    /// The STARTTLS policy the session runs under.
    public var tls: TLSPolicy

    public init(source: String, mxHost: String, address: String, port: UInt16,
                tls: TLSPolicy = .disabled) {
        self.source = source
        self.mxHost = mxHost
        self.address = address
        self.port = port
        self.tls = tls
    }

    public var description: String {
        "\(source.isEmpty ? "*" : source)>\(mxHost)[\(address)]:\(port)/\(tls.rawValue)"
    }
}

/// An open session, used by one delivery at a time: the pool hands it from one to the next.
public final class PooledSession: @unchecked Sendable {
    public let connection: SMTPClientConnection
    public let key: SessionKey
    /// The group whose lease this session holds.
    public let group: String
    let lease: String
    /// Messages offered on this session so far.
    public internal(set) var messages = 0
    /// Messages after which it is closed: its provider's `messagesPerConnection`, at most
    /// TERN_MAX_MESSAGES_PER_CONNECTION.
    let maxMessages: Int
    var idleSince = ContinuousClock.now

    init(connection: SMTPClientConnection, key: SessionKey, group: String, lease: String,
         maxMessages: Int) {
        self.maxMessages = maxMessages
        self.connection = connection
        self.key = key
        self.group = group
        self.lease = lease
    }
}

public final class SessionPool: Sendable {
    /// What asking for a session came to.
    public enum Checkout: Sendable {
        /// An idle session, already used for `messages` messages.
        case reused(PooledSession)
        /// A session just opened (greeting, EHLO, STARTTLS done); `note` says why it is in
        /// clear text when TLS failed.
        case opened(PooledSession, note: String)
        /// The connection or its opening failed: the result for this address.
        case failed(DeliveryResult)
        /// The group held all its connections for the whole wait.
        case busy
    }

    private enum Wake: Sendable {
        case session(PooledSession)
        case retry
    }

    private final class Waiter: Sendable {
        let key: SessionKey
        let group: String
        let deadline: ContinuousClock.Instant
        let continuation: Mutex<CheckedContinuation<Wake, Never>?> = Mutex(nil)

        init(key: SessionKey, group: String, deadline: ContinuousClock.Instant) {
            self.key = key
            self.group = group
            self.deadline = deadline
        }

        /// Resumes the waiting task once; false when it was resumed already.
        @discardableResult
        func wake(_ w: Wake) -> Bool {
            guard let c = continuation.withLock({ c -> CheckedContinuation<Wake, Never>? in
                defer { c = nil }
                return c
            }) else { return false }
            c.resume(returning: w)
            return true
        }
    }

    private struct State {
        var idle: [SessionKey: [PooledSession]] = [:]
        var idleCount = 0
        var open = 0
        var waiters: [SessionKey: WaitLine<Waiter>] = [:]
        /// When a lease of the group was last refused: waiters do not all ask Redis again.
        var refused: [String: ContinuousClock.Instant] = [:]
        var closed = false
        /// Sessions being closed after their last message, by a number of their own.
        var retiring: [Int: Task<Void, Never>] = [:]
        var retired = 0

        /// A key without waiters leaves the dictionary, which is walked on every tick.
        mutating func dropLineIfEmpty(_ key: SessionKey) {
            if waiters[key]?.isEmpty == true { waiters[key] = nil }
        }
    }

    /// How often the first waiter of each key asks Redis for a lease again.
    static let tick: Duration = .milliseconds(100)

    let leases: GroupLeases
    /// TERN_MAX_MESSAGES_PER_CONNECTION.
    public let maxMessages: Int
    /// TERN_CONNECTION_IDLE.
    public let idleTimeout: Duration
    /// At most this many idle sessions are kept (the sender's concurrency).
    let maxIdle: Int
    let logger: Logger
    private let state = Mutex(State())

    public init(leases: GroupLeases, maxMessages: Int, idleTimeout: Duration, maxIdle: Int,
                logger: Logger) {
        self.leases = leases
        self.maxMessages = maxMessages
        self.idleTimeout = idleTimeout
        self.maxIdle = maxIdle
        self.logger = logger
    }

    /// Sessions open now, idle or busy.
    public var openCount: Int { state.withLock { $0.open } }
    public var idleCount: Int { state.withLock { $0.idleCount } }

    // MARK: Taking and giving back

    /// A ready session for `key`: an idle one, else one opened by `connect` under a new lease
    /// on `group` (one of at most `limit`, by default the leases' own), else the first one
    /// given back or opened within `wait`. A new session carries at most `maxMessages`
    /// (by default TERN_MAX_MESSAGES_PER_CONNECTION).
    public func session(
        for key: SessionKey, group: String, limit: Int? = nil, maxMessages: Int? = nil,
        wait: Duration, connect: () async -> SMTPClient.Opening
    ) async -> Checkout {
        let deadline = ContinuousClock.now + wait
        var inLine = false
        while !Task.isCancelled, !state.withLock({ $0.closed }) {
            if let s = takeIdle(key) { return .reused(s) }
            if mayAsk(group), let lease = await leasedOrRefused(group, limit: limit) {
                switch await connect() {
                case .ready(let connection, let note):
                    state.withLock { $0.open += 1 }
                    var kept = key
                    kept.tls = connection.tlsPolicy
                    return .opened(PooledSession(connection: connection, key: kept,
                                                 group: group, lease: lease,
                                                 maxMessages: min(maxMessages ?? .max,
                                                                  self.maxMessages)),
                                   note: note)
                case .failed(let result):
                    await leases.release(lease)
                    wakeGroup(group)
                    return .failed(result)
                }
            }
            if let spare = takeIdle(group: group, otherThan: key) {
                // Our own idle session of this group elsewhere: its lease serves better here.
                await retire(spare)
                continue
            }
            if ContinuousClock.now >= deadline { break }
            switch await waitInLine(key, group: group, deadline: deadline, front: inLine) {
            case .session(let s): return .reused(s)
            case .retry: inLine = true
            }
        }
        return .busy
    }

    /// Gives a session back after a message: kept idle (or handed to a waiter) when it is
    /// in step and under its message limit, closed with QUIT otherwise.
    public func giveBack(_ s: PooledSession) async {
        s.messages += 1
        let keep = s.connection.isReady && s.messages < s.maxMessages
        let waiter: Waiter? = state.withLock { st in
            guard keep, !st.closed else { return nil }
            guard let w = st.waiters[s.key]?.popFirst() else { return nil }
            st.dropLineIfEmpty(s.key)
            return w
        }
        if let waiter, waiter.wake(.session(s)) { return }
        let idle = state.withLock { st -> Bool in
            guard keep, !st.closed, st.idleCount < maxIdle else { return false }
            s.idleSince = .now
            st.idle[s.key, default: []].append(s)
            st.idleCount += 1
            return true
        }
        if !idle { retireLater(s) }
    }

    /// Closes a session without holding up its last message: the result is known at the
    /// reply to the final dot, and must not wait for a server slow to answer QUIT (a sender
    /// killed meanwhile would send the message again). `close` waits for these.
    func retireLater(_ s: PooledSession) {
        state.withLock { st in
            let n = st.retired
            st.retired += 1
            // The task removes itself under this same lock, so only once it is in the table.
            st.retiring[n] = Task {
                await self.retire(s)
                _ = self.state.withLock { $0.retiring.removeValue(forKey: n) }
            }
        }
    }

    /// Closes a session: QUIT when it is in step, then its lease goes back.
    func retire(_ s: PooledSession) async {
        await s.connection.quit()
        state.withLock { $0.open -= 1 }
        await leases.release(s.lease)
        wakeGroup(s.group)
    }

    // MARK: Upkeep

    /// Until cancelled: closes sessions idle too long, lets waiters ask for leases again,
    /// and gives up an idle session of each group another sender waits for.
    public func maintain() async {
        var ticks = 0
        while !Task.isCancelled {
            try? await Task.sleep(for: Self.tick)
            await expireIdle()
            wakeWaiters()
            ticks += 1
            if ticks % 5 == 0 { await yieldWanted() }
        }
    }

    func yieldWanted() async {
        // A group we wait for ourselves is served by our own spare sessions already.
        let groups = state.withLock { st in
            Set(st.idle.values.flatMap { $0.map(\.group) })
                .subtracting(st.waiters.values.flatMap { $0.waiters.map(\.group) })
        }
        for group in await leases.wanted(Array(groups)) {
            guard let s = takeIdle(group: group, otherThan: nil) else { continue }
            logger.debug("closing an idle session another sender waits for", ("group", group))
            await retire(s)
        }
    }

    /// Closes every idle session (shutdown); waiters give up.
    public func close() async {
        let (all, waiting) = state.withLock { st -> ([PooledSession], [Waiter]) in
            st.closed = true
            defer { st.idle = [:]; st.idleCount = 0; st.waiters = [:] }
            return (st.idle.values.flatMap { $0 }, st.waiters.values.flatMap(\.waiters))
        }
        for w in waiting { w.wake(.retry) }
        await withTaskGroup(of: Void.self) { group in
            for s in all { group.addTask { await self.retire(s) } }
        }
        while true {
            let closing = state.withLock { Array($0.retiring.values) }
            if closing.isEmpty { break }
            for task in closing { await task.value }
        }
    }

    func expireIdle() async {
        let now = ContinuousClock.now
        let old = state.withLock { st -> [PooledSession] in
            var out: [PooledSession] = []
            for (key, list) in st.idle {
                let (stale, fresh) = (list.filter { now - $0.idleSince >= idleTimeout },
                                      list.filter { now - $0.idleSince < idleTimeout })
                guard !stale.isEmpty else { continue }
                out += stale
                st.idle[key] = fresh.isEmpty ? nil : fresh
            }
            st.idleCount -= out.count
            return out
        }
        guard !old.isEmpty else { return }
        await withTaskGroup(of: Void.self) { group in
            for s in old { group.addTask { await self.retire(s) } }
        }
    }

    /// The first waiter of each key asks again; those past their deadline give up.
    func wakeWaiters() {
        let now = ContinuousClock.now
        let woken = state.withLock { st -> [Waiter] in
            var out: [Waiter] = []
            for key in Array(st.waiters.keys) {
                out += st.waiters[key]?.take { place, w in place == 0 || w.deadline <= now } ?? []
                st.dropLineIfEmpty(key)
            }
            return out
        }
        for w in woken { w.wake(.retry) }
    }

    // MARK: Helpers

    private func takeIdle(_ key: SessionKey) -> PooledSession? {
        state.withLock { st in
            guard var list = st.idle[key], let s = list.popLast() else { return nil }
            st.idle[key] = list.isEmpty ? nil : list
            st.idleCount -= 1
            return s
        }
    }

    private func takeIdle(group: String, otherThan key: SessionKey?) -> PooledSession? {
        state.withLock { st in
            for (k, list) in st.idle where k != key {
                guard let i = list.lastIndex(where: { $0.group == group }) else { continue }
                var rest = list
                let s = rest.remove(at: i)
                st.idle[k] = rest.isEmpty ? nil : rest
                st.idleCount -= 1
                return s
            }
            return nil
        }
    }

    /// False when a lease of `group` was refused less than a tick ago: the answer would be
    /// the same, and a thousand waiters must not each ask Redis.
    private func mayAsk(_ group: String) -> Bool {
        state.withLock { st in
            guard let last = st.refused[group] else { return true }
            return ContinuousClock.now - last >= Self.tick
        }
    }

    /// A new lease, or nil, remembering the refusal.
    private func leasedOrRefused(_ group: String, limit: Int?) async -> String? {
        let lease = await leases.acquire(group, limit: limit)
        if lease == nil { state.withLock { $0.refused[group] = .now } }
        return lease
    }

    /// A lease of `group` came free here: its first waiter may take it at once.
    private func wakeGroup(_ group: String) {
        let w = state.withLock { st -> Waiter? in
            st.refused[group] = nil
            for key in Array(st.waiters.keys) {
                guard let w = st.waiters[key]?.remove(firstWhere: { $0.group == group }) else {
                    continue
                }
                st.dropLineIfEmpty(key)
                return w
            }
            return nil
        }
        w?.wake(.retry)
    }

    private func waitInLine(_ key: SessionKey, group: String,
                            deadline: ContinuousClock.Instant, front: Bool) async -> Wake {
        let w = Waiter(key: key, group: group, deadline: deadline)
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Wake, Never>) in
                w.continuation.withLock { $0 = c }
                let queued = state.withLock { st -> Bool in
                    guard !st.closed else { return false }
                    if front {
                        st.waiters[key, default: WaitLine<Waiter>()].pushFront(w)
                    } else {
                        st.waiters[key, default: WaitLine<Waiter>()].append(w)
                    }
                    return true
                }
                if !queued || Task.isCancelled { w.wake(.retry) }
            }
        } onCancel: {
            w.wake(.retry)
        }
    }
}

/// The waiters for one key, first come first served. Taking the first moves a head
/// index: removing it from an array of a couple of thousand waiters (copied out of the
/// dictionary, too) was a tenth of the sender's CPU.
struct WaitLine<Element> {
    private var items: [Element?] = []
    private var head = 0

    var isEmpty: Bool { head == items.count }
    var waiters: [Element] { items[head...].compactMap { $0 } }

    mutating func append(_ w: Element) { items.append(w) }

    mutating func pushFront(_ w: Element) {
        if head > 0 {
            head -= 1
            items[head] = w
        } else {
            items.insert(w, at: 0)
        }
    }

    mutating func popFirst() -> Element? {
        guard head < items.count else { return nil }
        let w = items[head]
        items[head] = nil
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 1024 && head * 2 >= items.count {
            items.removeFirst(head)
            head = 0
        }
        return w
    }

    /// Takes out the first waiter `match` picks, keeping the others in order.
    mutating func remove(firstWhere match: (Element) -> Bool) -> Element? {
        guard let i = items[head...].firstIndex(where: { $0.map(match) ?? false }) else {
            return nil
        }
        if i == head { return popFirst() }
        return items.remove(at: i)
    }

    /// Takes out the waiters `match` picks (given each one's place in line), keeping the
    /// others in order.
    mutating func take(where match: (Int, Element) -> Bool) -> [Element] {
        var taken: [Element] = [], kept: [Element?] = []
        for (place, w) in waiters.enumerated() {
            if match(place, w) { taken.append(w) } else { kept.append(w) }
        }
        if !taken.isEmpty {
            items = kept
            head = 0
        }
        return taken
    }
}
