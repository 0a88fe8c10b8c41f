// The reactor under every socket in Tern: one thread waits in epoll, tasks wait on it.
//
// A task that meets EAGAIN on a non-blocking descriptor calls `waitReadable`/`waitWritable`:
// the descriptor is armed one-shot in epoll and the task suspends on a continuation. The loop
// thread resumes it when the descriptor is ready, so thousands of slow SMTP sessions cost only
// their suspended tasks and buffers, never a thread each. Deadlines and task cancellation resume
// the waiter with an error; whichever comes first wins, exactly once.
//
// Deadlines are kept on the waiters themselves and checked by the loop thread, which sleeps in
// epoll_wait no longer than the earliest one. A wait that ends normally leaves nothing behind,
// so a daemon that waits hundreds of thousands of times a second with 5-minute deadlines
// schedules no timer per wait. `earliest` may be stale-early (its waiter already woke): the
// scan at that instant then finds the true next deadline.

import CLinux
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

public enum IOError: Error, CustomStringConvertible, Equatable {
    /// A system call failed; `call` names it.
    case system(call: String, errno: Int32)
    case timedOut
    case closed
    case cancelled

    public var description: String {
        switch self {
        case .system(let call, let code):
            return "\(call): \(String(cString: strerror(code))) (errno \(code))"
        case .timedOut: return "timed out"
        case .closed: return "connection closed"
        case .cancelled: return "cancelled"
        }
    }
}

public final class EventLoop: Sendable {
    /// The process-wide loop; its thread starts on first use.
    public static let shared = EventLoop()

    private struct Waiter {
        var token: UInt64
        var deadline: ContinuousClock.Instant?
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct Slot {
        var reader: Waiter?
        var writer: Waiter?
        var inEpoll = false
    }

    private struct State {
        var slots: [Int32: Slot] = [:]
        var nextToken: UInt64 = 1
        /// No deadline of a waiter comes before this (nil: no waiter has one).
        var earliest: ContinuousClock.Instant?
    }

    private let epfd: Int32
    /// An eventfd in the epoll set: written when a new deadline comes before the one the loop
    /// thread sleeps until, so that it wakes and sleeps again for less.
    private let wakeFD: Int32
    private let state = Mutex(State())

    private init() {
        epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        precondition(epfd >= 0, "epoll_create1 failed: errno \(errno)")
        wakeFD = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        precondition(wakeFD >= 0, "eventfd failed: errno \(errno)")
        var ev = epoll_event()
        ev.events = EPOLLIN.rawValue
        ev.data.fd = wakeFD
        precondition(epoll_ctl(epfd, EPOLL_CTL_ADD, wakeFD, &ev) == 0,
                     "epoll_ctl of the wake eventfd failed: errno \(errno)")
        let fd = epfd
        let thread = Thread { EventLoop.run(epfd: fd) }
        thread.name = "tern-epoll"
        thread.start()
    }

    /// `closed` is asked under the loop's lock just before the wait is armed, and the owner
    /// sets it before `deregister`: a close from another task between the owner's last look
    /// and the arming then fails the wait, instead of arming a descriptor number that may
    /// already belong to a new socket.
    public func waitReadable(_ fd: Int32, deadline: ContinuousClock.Instant? = nil,
                             closed: () -> Bool = { false }) async throws {
        try await wait(fd, write: false, deadline: deadline, closed: closed)
    }

    public func waitWritable(_ fd: Int32, deadline: ContinuousClock.Instant? = nil,
                             closed: () -> Bool = { false }) async throws {
        try await wait(fd, write: true, deadline: deadline, closed: closed)
    }

    /// Forgets a descriptor before it is closed, failing anyone still waiting on it.
    public func deregister(_ fd: Int32) {
        let slot = state.withLock { $0.slots.removeValue(forKey: fd) }
        guard let slot else { return }
        if slot.inEpoll { epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nil) }
        slot.reader?.continuation.resume(throwing: IOError.closed)
        slot.writer?.continuation.resume(throwing: IOError.closed)
    }

    private func wait(_ fd: Int32, write: Bool, deadline: ContinuousClock.Instant?,
                      closed: () -> Bool) async throws {
        let token = state.withLock { s -> UInt64 in
            defer { s.nextToken += 1 }
            return s.nextToken
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                if Task.isCancelled {
                    c.resume(throwing: IOError.cancelled)
                    return
                }
                arm(fd, write: write,
                    waiter: Waiter(token: token, deadline: deadline, continuation: c),
                    closed: closed)
            }
        } onCancel: {
            fail(fd, write: write, token: token, with: IOError.cancelled)
        }
    }

    private func arm(_ fd: Int32, write: Bool, waiter: Waiter, closed: () -> Bool) {
        var wake = false
        var isClosed = false
        let failure: Int32? = state.withLock { s in
            if closed() {
                isClosed = true
                return nil
            }
            var slot = s.slots[fd] ?? Slot()
            precondition((write ? slot.writer : slot.reader) == nil,
                         "two tasks wait to \(write ? "write" : "read") fd \(fd)")
            if write { slot.writer = waiter } else { slot.reader = waiter }
            var ev = epoll_event()
            ev.events = EPOLLONESHOT.rawValue | EPOLLRDHUP.rawValue
            if slot.reader != nil { ev.events |= EPOLLIN.rawValue }
            if slot.writer != nil { ev.events |= EPOLLOUT.rawValue }
            ev.data.fd = fd
            let op = slot.inEpoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD
            if epoll_ctl(epfd, op, fd, &ev) != 0 {
                let code = errno
                if write { slot.writer = nil } else { slot.reader = nil }
                s.slots[fd] = slot
                return code
            }
            slot.inEpoll = true
            s.slots[fd] = slot
            if let deadline = waiter.deadline, s.earliest.map({ deadline < $0 }) ?? true {
                s.earliest = deadline
                wake = true
            }
            return nil
        }
        if isClosed {
            waiter.continuation.resume(throwing: IOError.closed)
            return
        }
        if wake {
            var one: UInt64 = 1
            _ = Glibc.write(wakeFD, &one, 8)
        }
        if let failure {
            waiter.continuation.resume(throwing: IOError.system(call: "epoll_ctl", errno: failure))
        }
    }

    private func fail(_ fd: Int32, write: Bool, token: UInt64, with error: IOError) {
        let waiter: Waiter? = state.withLock { s in
            guard var slot = s.slots[fd] else { return nil }
            let current = write ? slot.writer : slot.reader
            guard let current, current.token == token else { return nil }
            if write { slot.writer = nil } else { slot.reader = nil }
            s.slots[fd] = slot
            return current
        }
        waiter?.continuation.resume(throwing: error)
    }

    /// Called on the loop thread for each ready descriptor. A waiter left unresumed (say a
    /// writer when only input arrived) is armed again so it is not forgotten by ONESHOT.
    private func ready(fd: Int32, events: UInt32) {
        let hangup = events & (EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0
        let readable = hangup || events & (EPOLLIN.rawValue | EPOLLRDHUP.rawValue) != 0
        let writable = hangup || events & EPOLLOUT.rawValue != 0
        var woken: [Waiter] = []
        state.withLock { s in
            guard var slot = s.slots[fd] else { return }
            if readable, let r = slot.reader { woken.append(r); slot.reader = nil }
            if writable, let w = slot.writer { woken.append(w); slot.writer = nil }
            if slot.reader != nil || slot.writer != nil {
                var ev = epoll_event()
                ev.events = EPOLLONESHOT.rawValue | EPOLLRDHUP.rawValue
                if slot.reader != nil { ev.events |= EPOLLIN.rawValue }
                if slot.writer != nil { ev.events |= EPOLLOUT.rawValue }
                ev.data.fd = fd
                epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev)
            }
            s.slots[fd] = slot
        }
        for w in woken { w.continuation.resume() }
    }

    /// How long epoll_wait may sleep: until the earliest deadline (rounded up to the next
    /// millisecond), or for ever when no waiter has one.
    private func sleepMilliseconds() -> Int32 {
        guard let earliest = state.withLock({ $0.earliest }) else { return -1 }
        let left = ContinuousClock.now.duration(to: earliest)
        if left <= .zero { return 0 }
        let ns = left.components.seconds * 1_000_000_000
            + left.components.attoseconds / 1_000_000_000
        return Int32(clamping: (ns + 999_999) / 1_000_000)
    }

    /// Fails every waiter whose deadline has passed, and finds the next deadline. Runs on
    /// the loop thread after each wake-up; scans the waiters only once `earliest` is due.
    private func expireDue() {
        let now = ContinuousClock.now
        var expired: [Waiter] = []
        state.withLock { s in
            guard let earliest = s.earliest, earliest <= now else { return }
            var next: ContinuousClock.Instant?
            for (fd, var slot) in s.slots where slot.reader != nil || slot.writer != nil {
                var changed = false
                for write in [false, true] {
                    guard let waiter = write ? slot.writer : slot.reader,
                          let deadline = waiter.deadline else { continue }
                    if deadline <= now {
                        expired.append(waiter)
                        if write { slot.writer = nil } else { slot.reader = nil }
                        changed = true
                    } else if next.map({ deadline < $0 }) ?? true {
                        next = deadline
                    }
                }
                // The descriptor stays armed in epoll; if it fires, no one is waiting.
                if changed { s.slots[fd] = slot }
            }
            s.earliest = next
        }
        for waiter in expired { waiter.continuation.resume(throwing: IOError.timedOut) }
    }

    private static func run(epfd: Int32) {
        let loop = EventLoop.shared
        var events = [epoll_event](repeating: epoll_event(), count: 256)
        var drained: UInt64 = 0
        while true {
            let n = epoll_wait(epfd, &events, Int32(events.count), loop.sleepMilliseconds())
            if n < 0 {
                if errno == EINTR { continue }
                fatalError("epoll_wait failed: errno \(errno)")
            }
            for i in 0..<Int(n) {
                let fd = events[i].data.fd
                if fd == loop.wakeFD {
                    _ = read(fd, &drained, 8)
                } else {
                    loop.ready(fd: fd, events: events[i].events)
                }
            }
            loop.expireDue()
        }
    }
}
