// The sender's line of waiters for a session: first come first served, a waiter put back in
// front first, and taking some out keeps the others in order.

import Testing
@testable import TernSender

@Suite struct WaitLineTests {
    @Test func firstComeFirstServedWithTheFrontForPutBackWaiters() {
        var line = WaitLine<Int>()
        #expect(line.isEmpty && line.popFirst() == nil)
        for n in 1...3 { line.append(n) }
        line.pushFront(0)
        #expect(line.popFirst() == 0 && line.popFirst() == 1)
        // The head has moved: a waiter put back takes the freed place.
        line.pushFront(9)
        #expect(line.waiters == [9, 2, 3])
        #expect([line.popFirst(), line.popFirst(), line.popFirst()] == [9, 2, 3])
        #expect(line.isEmpty && line.popFirst() == nil)
    }

    @Test func aLongLineStaysInOrderAsItsHeadMoves() {
        var line = WaitLine<Int>()
        var next = 0, served: [Int] = []
        // Join and leave in rounds so that the head passes the compaction point many times.
        for round in 0..<50 {
            for _ in 0..<(100 + round) {
                line.append(next)
                next += 1
            }
            for _ in 0..<90 { served += [line.popFirst()].compactMap { $0 } }
        }
        while let n = line.popFirst() { served.append(n) }
        #expect(served == Array(0..<next))
    }

    @Test func takingOutWaitersKeepsTheRestInOrder() {
        var line = WaitLine<Int>()
        for n in 0..<10 { line.append(n) }
        _ = line.popFirst()
        let taken = line.take { place, n in place == 0 || n % 3 == 0 }
        #expect(taken == [1, 3, 6, 9])
        #expect(line.waiters == [2, 4, 5, 7, 8])
        #expect(line.take { _, _ in false } == [] && line.waiters.count == 5)
        line.pushFront(1)
        #expect(line.popFirst() == 1 && line.popFirst() == 2)
    }
}
