// DNS for Tern's daemons: MX records and host addresses for delivery (sender), blocklist
// lookups and reverse names for the reputation monitor, all through libunbound forwarding to
// the one resolver the operator names (TERN_DNS_RESOLVER). The system resolver is never
// consulted: no resolv.conf, no hosts file, no root hints.
//
// Queries use libunbound's asynchronous API with its own worker thread: a query is handed
// over and the asking task suspends; a pump task waits on `ub_fd` through the event loop and
// calls `ub_process`, whose callback resumes the task. No thread of the cooperative pool ever
// blocks, and a query that outlives its timeout is cancelled and answered as a failure.
//
// Answers are kept for their TTL (at most a day) in a bounded cache of this process, so a
// busy domain costs one lookup per TTL, not one per message; failures are never cached. A
// resolver made with `cache: false` (blocklist checks) keeps nothing.
//
// Answers come from the network and are not trusted: names are checked label by label and
// records of the wrong size are skipped.

import CUnbound
import Synchronization
import TernCore
import TernMail

#if canImport(Glibc)
import Glibc
#endif

/// The answer to one lookup.
public enum DNSAnswer<Value: Sendable>: Sendable {
    case records(Value)
    /// The name exists but has no record of the type asked (NOERROR, empty answer).
    case noData
    /// The name does not exist (RCODE 3, RFC 1035 §4.1.1).
    case nxDomain
    /// SERVFAIL, REFUSED, a timeout or a resolver error: worth asking again later.
    case failure(String)
}

/// A raw answer, copied out of libunbound's result inside its callback.
struct UnboundAnswer: Sendable {
    var error: String?
    var rcode: Int32 = 0
    var nxDomain = false
    var records: [[UInt8]] = []
    /// Seconds the answer may be kept (the smallest TTL of its records).
    var ttl: Int32 = 0
}

/// One query in flight. libunbound holds one retain of it (passed as `mydata`), released by
/// the callback or by a successful `ub_cancel`, whichever happens.
private final class UnboundQuery: Sendable {
    private struct State {
        var continuation: CheckedContinuation<UnboundAnswer, Never>?
        var finished = false
        /// The answer given before anyone waited (a task cancelled before it asked).
        var early: UnboundAnswer?
        var asyncID: Int32?
        var timer: Task<Void, Never>?
    }

    private let state = Mutex(State())

    /// Registers the waiter; false (and the waiter resumed) when the query already finished.
    func start(_ c: CheckedContinuation<UnboundAnswer, Never>) -> Bool {
        let early = state.withLock { s -> UnboundAnswer? in
            if s.finished { return s.early ?? UnboundAnswer(error: "cancelled") }
            s.continuation = c
            return nil
        }
        guard let early else { return true }
        c.resume(returning: early)
        return false
    }

    func started(id: Int32, timer: Task<Void, Never>) {
        let cancelTimer = state.withLock { s -> Bool in
            s.asyncID = id
            if s.finished { return true }
            s.timer = timer
            return false
        }
        if cancelTimer { timer.cancel() }
    }

    var asyncID: Int32? { state.withLock { $0.asyncID } }

    /// Resumes the waiting task once; false when it was already resumed.
    @discardableResult
    func finish(_ answer: UnboundAnswer) -> Bool {
        let (c, timer) = state.withLock { s -> (CheckedContinuation<UnboundAnswer, Never>?,
                                               Task<Void, Never>?) in
            guard !s.finished else { return (nil, nil) }
            s.finished = true
            if s.continuation == nil { s.early = answer }
            defer { s.continuation = nil; s.timer = nil }
            return (s.continuation, s.timer)
        }
        timer?.cancel()
        c?.resume(returning: answer)
        return c != nil
    }
}

/// libunbound's context pointer, shared with the pump task. The context locks internally
/// (libunbound is documented thread-safe); `DNSResolver` guards its creation and deletion.
private struct UnboundContext: @unchecked Sendable {
    let pointer: OpaquePointer
}

/// The callback libunbound calls from `ub_process`, on the pump task's thread.
private func unboundCallback(_ data: UnsafeMutableRawPointer?, _ err: Int32,
                             _ result: UnsafeMutablePointer<ub_result>?) {
    guard let data else {
        if let result { ub_resolve_free(result) }
        return
    }
    let query = Unmanaged<UnboundQuery>.fromOpaque(data).takeRetainedValue()
    var answer = UnboundAnswer()
    if err != 0 {
        answer.error = String(cString: ub_strerror(err))
    } else if let r = result?.pointee {
        answer.rcode = r.rcode
        answer.nxDomain = r.nxdomain != 0
        answer.ttl = r.ttl
        if r.havedata != 0, let data = r.data, let lengths = r.len {
            var i = 0
            while let item = data[i], i < 1000 {
                let n = Int(lengths[i])
                answer.records.append(item.withMemoryRebound(to: UInt8.self, capacity: n) {
                    Array(UnsafeBufferPointer(start: $0, count: n))
                })
                i += 1
            }
        }
    } else {
        answer.error = "no result"
    }
    if let result { ub_resolve_free(result) }
    query.finish(answer)
}

public final class DNSResolver: Sendable {
    static let typeA: Int32 = 1, typePTR: Int32 = 12, typeMX: Int32 = 15, typeAAAA: Int32 = 28
    static let typeTXT: Int32 = 16
    static let classIN: Int32 = 1

    private let context: UnboundContext
    private let fd: Int32
    private let timeout: Duration
    /// Open while true; submissions and cancels hold the lock so `close` cannot delete
    /// the context under them.
    private let open = Mutex(true)
    private let outstanding = Mutex<[ObjectIdentifier: UnboundQuery]>([:])
    private let pump: Task<Void, Never>
    private let metrics: DNSMetrics?
    private let cache = Mutex<[String: (answer: UnboundAnswer, until: ContinuousClock.Instant)]>(
        [:])
    /// Answers kept at most; past that, expired ones go, and if none has, all of them.
    static let cacheLimit = 50_000
    /// False: every lookup asks the forwarder (`cache: false`).
    private let keepsAnswers: Bool

    /// A resolver that forwards every query to `forwarder` (never the system resolver).
    /// `timeout` bounds each lookup; a lookup that takes longer is a temporary failure.
    /// `cache: false` keeps no answer between lookups, neither in libunbound nor in this
    /// process: a blocklist check must see a delisting at the next check, and the forwarder
    /// caches anyway.
    public init(forwarder: SocketAddress, timeout: Duration = .seconds(30),
                cache: Bool = true, metrics: DNSMetrics? = nil) throws {
        guard let ctx = ub_ctx_create() else {
            throw ConfigError("TERN_DNS_RESOLVER", "libunbound: cannot create a context")
        }
        func check(_ rc: Int32, _ what: String) throws {
            guard rc == 0 else {
                ub_ctx_delete(ctx)
                throw ConfigError("TERN_DNS_RESOLVER",
                                  "libunbound \(what): \(String(cString: ub_strerror(rc)))")
            }
        }
        // "host@port" is libunbound's form; every name goes to this one server.
        try check(ub_ctx_set_fwd(ctx, "\(forwarder.host)@\(forwarder.port)"), "set_fwd")
        // libunbound answers the loopback reverse zones itself; the forwarder must see them
        // (the test world serves PTRs for 127.0.0.x sending addresses).
        for zone in ["127.in-addr.arpa.", Self.reverseName("::1").map { $0 + "." } ?? ""] {
            try check(ub_ctx_set_option(ctx, "local-zone:", "\(zone) transparent"), "local-zone")
        }
        if !cache {
            try check(ub_ctx_set_option(ctx, "cache-max-ttl:", "0"), "cache-max-ttl")
            try check(ub_ctx_set_option(ctx, "cache-max-negative-ttl:", "0"), "cache-max-ttl")
        }
        // A thread, not a forked process, answers asynchronous queries.
        try check(ub_ctx_async(ctx, 1), "async")
        let fd = ub_fd(ctx)
        if fd < 0 {
            ub_ctx_delete(ctx)
            throw ConfigError("TERN_DNS_RESOLVER", "libunbound: no result descriptor")
        }
        let context = UnboundContext(pointer: ctx)
        self.context = context
        self.fd = fd
        self.timeout = timeout
        self.metrics = metrics
        keepsAnswers = cache
        pump = Task.detached {
            while !Task.isCancelled {
                do {
                    try await EventLoop.shared.waitReadable(fd)
                } catch {
                    return
                }
                // Non-blocking: it reads what answers are there and runs their callbacks.
                if ub_process(context.pointer) != 0 {
                    // The worker is gone or its pipe broken: do not spin on a readable
                    // descriptor; lookups will time out and defer.
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
        }
    }

    /// Stops the pump and frees the context; lookups still waiting answer as failures.
    public func close() async {
        let wasOpen = open.withLock { o -> Bool in
            defer { o = false }
            return o
        }
        guard wasOpen else { return }
        pump.cancel()
        await pump.value
        // Only now: a pump still looping could otherwise register the descriptor again.
        EventLoop.shared.deregister(fd)
        let waiting = outstanding.withLock { o -> [UnboundQuery] in
            defer { o = [:] }
            return Array(o.values)
        }
        for q in waiting { q.finish(UnboundAnswer(error: "resolver closed")) }
        // Queries still inside libunbound keep their retain: a small leak at shutdown only.
        ub_ctx_delete(context.pointer)
    }

    // MARK: Lookups

    /// The MX records of `domain`.
    public func mx(_ domain: String) async -> DNSAnswer<[MXRecord]> {
        switch classify(await query(domain, type: Self.typeMX)) {
        case .records(let raw): return .records(raw.compactMap(Self.mxRecord))
        case .noData: return .noData
        case .nxDomain: return .nxDomain
        case .failure(let why): return .failure(why)
        }
    }

    /// The IPv4 (A) or IPv6 (AAAA) addresses of `host`, as numeric text.
    public func addresses(_ host: String, ipv6: Bool) async -> DNSAnswer<[String]> {
        let type = ipv6 ? Self.typeAAAA : Self.typeA
        switch classify(await query(host, type: type)) {
        case .records(let raw):
            let found = raw.compactMap { Self.addressText($0, ipv6: ipv6) }
            return found.isEmpty ? .noData : .records(found)
        case .noData: return .noData
        case .nxDomain: return .nxDomain
        case .failure(let why): return .failure(why)
        }
    }

    /// The names of `address`'s PTR records (RFC 1035 §3.5, RFC 3596 §2.5).
    public func ptr(_ address: String) async -> DNSAnswer<[String]> {
        guard let name = Self.reverseName(address) else {
            return .failure("not an IP address: \(Logger.printable(address))")
        }
        switch classify(await query(name, type: Self.typePTR)) {
        case .records(let raw):
            let names = raw.compactMap { Self.wireName($0, from: 0) }
            return names.isEmpty ? .noData : .records(names)
        case .noData: return .noData
        case .nxDomain: return .nxDomain
        case .failure(let why): return .failure(why)
        }
    }

    /// The TXT records of `name`, each one's character-strings joined (RFC 1035 §3.3.14;
    /// RFC 6376 §3.6.2.2 joins them so for DKIM keys).
    public func txt(_ name: String) async -> DNSAnswer<[String]> {
        switch classify(await query(name, type: Self.typeTXT)) {
        case .records(let raw): return .records(raw.map(Self.txtText))
        case .noData: return .noData
        case .nxDomain: return .nxDomain
        case .failure(let why): return .failure(why)
        }
    }

    /// TXT RDATA: length-prefixed strings, concatenated; a length past the end is cut.
    static func txtText(_ rdata: [UInt8]) -> String {
        var out: [UInt8] = []
        var i = 0
        while i < rdata.count {
            let length = Int(rdata[i])
            out += rdata[min(i + 1, rdata.count)..<min(i + 1 + length, rdata.count)]
            i += 1 + length
        }
        return String(decoding: out, as: UTF8.self)
    }

    private func classify(_ a: UnboundAnswer) -> DNSAnswer<[[UInt8]]> {
        if let error = a.error { return .failure(error) }
        if a.rcode == 3 || a.nxDomain { return .nxDomain }
        switch a.rcode {
        case 0: return a.records.isEmpty ? .noData : .records(a.records)
        case 2: return .failure("SERVFAIL")
        case 5: return .failure("REFUSED")
        default: return .failure("DNS error, RCODE \(a.rcode)")
        }
    }

    private func query(_ name: String, type: Int32) async -> UnboundAnswer {
        guard let metrics else { return await lookup(name, type: type) }
        let started = ContinuousClock.now
        let answer = await lookup(name, type: type)
        metrics.record(type: type, answer: answer, took: ContinuousClock.now - started)
        return answer
    }

    private func lookup(_ name: String, type: Int32) async -> UnboundAnswer {
        guard Self.isPlausibleName(name) else {
            return UnboundAnswer(error: "not a domain name: \(Logger.printable(name))")
        }
        let cacheKey = "\(type) \(name.lowercased())"
        let now = ContinuousClock.now
        if keepsAnswers, let hit = cache.withLock({ $0[cacheKey] }), hit.until > now {
            return hit.answer
        }
        let answer = await ask(name, type: type)
        if keepsAnswers, answer.error == nil, answer.ttl > 0, answer.rcode == 0 || answer.nxDomain {
            let until = now + .seconds(min(Int(answer.ttl), 86_400))
            cache.withLock { c in
                if c.count >= Self.cacheLimit {
                    c = c.filter { $0.value.until > now }
                    if c.count >= Self.cacheLimit { c = [:] }
                }
                c[cacheKey] = (answer, until)
            }
        }
        return answer
    }

    private func ask(_ name: String, type: Int32) async -> UnboundAnswer {
        let q = UnboundQuery()
        let key = ObjectIdentifier(q)
        outstanding.withLock { $0[key] = q }
        defer { _ = outstanding.withLock { $0.removeValue(forKey: key) } }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<UnboundAnswer, Never>) in
                // Cancelled before this point: the handler already finished the query.
                guard q.start(c) else { return }
                if Task.isCancelled {
                    q.finish(UnboundAnswer(error: "cancelled"))
                    return
                }
                submit(q, name: name, type: type)
            }
        } onCancel: {
            if q.finish(UnboundAnswer(error: "cancelled")) { cancel(q) }
        }
    }

    private func submit(_ q: UnboundQuery, name: String, type: Int32) {
        let retained = Unmanaged.passRetained(q)
        var id: Int32 = 0
        let rc: Int32? = open.withLock { isOpen in
            guard isOpen else { return nil }
            return ub_resolve_async(context.pointer, name, type, Self.classIN,
                                    retained.toOpaque(), unboundCallback, &id)
        }
        guard let rc, rc == 0 else {
            retained.release()
            let why = rc.map { String(cString: ub_strerror($0)) } ?? "resolver closed"
            q.finish(UnboundAnswer(error: why))
            return
        }
        let timeout = self.timeout
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            guard !Task.isCancelled else { return }
            if q.finish(UnboundAnswer(error: "timed out after \(timeout)")) { self?.cancel(q) }
        }
        q.started(id: id, timer: timer)
    }

    /// Withdraws a query whose waiter was already answered. On success libunbound will not
    /// call back, so its retain is released here.
    private func cancel(_ q: UnboundQuery) {
        guard let id = q.asyncID else { return }
        let rc: Int32 = open.withLock { isOpen in
            isOpen ? ub_cancel(context.pointer, id) : -1
        }
        if rc == 0 { Unmanaged.passUnretained(q).release() }
    }

    // MARK: Parsing answers

    /// A name worth asking for: LDH labels (and "_"), 1-63 octets each, 253 in all.
    public static func isPlausibleName(_ name: String) -> Bool {
        var name = Substring(name)
        if name.hasSuffix(".") { name = name.dropLast() }
        guard !name.isEmpty, name.utf8.count <= 253 else { return false }
        return name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy {
            (1...63).contains($0.utf8.count) && $0.utf8.allSatisfy(isHostByte)
        }
    }

    static func isHostByte(_ b: UInt8) -> Bool {
        (0x30...0x39).contains(b) || (0x41...0x5A).contains(b) || (0x61...0x7A).contains(b)
            || b == 0x2D || b == 0x5F
    }

    /// MX RDATA (RFC 1035 §3.3.9): a 16-bit preference, then the exchange as a name in
    /// wire form. libunbound hands names uncompressed; anything else is skipped.
    static func mxRecord(_ rdata: [UInt8]) -> MXRecord? {
        guard rdata.count >= 3 else { return nil }
        let preference = UInt16(rdata[0]) << 8 | UInt16(rdata[1])
        // The root name alone is RFC 7505's null MX: "." is what MXOrdering expects.
        return wireName(rdata, from: 2).map { MXRecord(preference: preference, host: $0) }
    }

    /// A name in uncompressed wire form starting at `from`, lowercased, "." for the root;
    /// nil for a compression pointer, a bad label or a truncated name.
    static func wireName(_ rdata: [UInt8], from start: Int) -> String? {
        var labels: [String] = []
        var i = start
        while i < rdata.count {
            let n = Int(rdata[i])
            i += 1
            if n == 0 { return labels.isEmpty ? "." : labels.joined(separator: ".") }
            guard n <= 63, i + n <= rdata.count else { return nil }
            let label = rdata[i..<i + n]
            guard label.allSatisfy(isHostByte) else { return nil }
            labels.append(String(decoding: label, as: UTF8.self).lowercased())
            i += n
        }
        return nil
    }

    /// The reverse-lookup name of an address: reversed octets under in-addr.arpa, reversed
    /// nibbles under ip6.arpa (RFC 3596 §2.5). `zone` replaces the arpa suffix, which is how
    /// DNS blocklists are asked (RFC 5782 §2.1, §2.4).
    public static func reverseName(_ address: String, zone: String? = nil) -> String? {
        if address.contains(":") {
            var raw = [UInt8](repeating: 0, count: 16)
            guard inet_pton(AF_INET6, address, &raw) == 1 else { return nil }
            let hex = Array("0123456789abcdef")
            let nibbles = raw.reversed().flatMap { [hex[Int($0 & 0xF)], hex[Int($0 >> 4)]] }
            return nibbles.map(String.init).joined(separator: ".") + "." + (zone ?? "ip6.arpa")
        }
        var raw = [UInt8](repeating: 0, count: 4)
        guard inet_pton(AF_INET, address, &raw) == 1 else { return nil }
        return raw.reversed().map { String($0) }.joined(separator: ".") + "."
            + (zone ?? "in-addr.arpa")
    }

    static func addressText(_ rdata: [UInt8], ipv6: Bool) -> String? {
        guard rdata.count == (ipv6 ? 16 : 4) else { return nil }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let ok = rdata.withUnsafeBytes { raw in
            inet_ntop(ipv6 ? AF_INET6 : AF_INET, raw.baseAddress, &buffer,
                      socklen_t(buffer.count)) != nil
        }
        guard ok else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) },
                      as: UTF8.self)
    }
}
