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

    /// Random joins at either end, hand-overs, take-outs and single removals against a plain
    /// array: the line never loses, repeats or reorders a waiter, across many compactions of
    /// its head.
    @Test func aLineBehavesAsAPlainArrayUnderRandomOperations() {
        var state: UInt64 = 2025
        func random(_ n: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(n))
        }
        var line = WaitLine<Int>(), model: [Int] = [], next = 0
        for step in 0..<100_000 {
            // Phases of growth and of shrinking, so the head passes 1024 and the line
            // compacts; take-outs (which rebuild it) are rare.
            let roll = random(400), joins = (step / 5000) % 2 == 0 ? 220 : 100
            switch roll {
            case 0..<joins:
                line.append(next)
                model.append(next)
                next += 1
            case joins..<(joins + 20):
                line.pushFront(next)
                model.insert(next, at: 0)
                next += 1
            case (joins + 20)..<399:
                let expected = model.isEmpty ? nil : model.removeFirst()
                if line.popFirst() != expected {
                    Issue.record("step \(step): popFirst")
                    return
                }
            case _ where random(2) == 0:
                // One waiter of a group taken out (`wakeGroup`), from anywhere in the line.
                let k = random(7) + 2
                let expected = model.firstIndex { $0 % k == 0 }.map { model.remove(at: $0) }
                if line.remove(firstWhere: { $0 % k == 0 }) != expected {
                    Issue.record("step \(step): remove(firstWhere:)")
                    return
                }
            default:
                let k = random(7) + 2
                let pick: (Int, Int) -> Bool = { place, w in place == 0 || w % k == 0 }
                let expected = model.enumerated().filter { pick($0.offset, $0.element) }
                    .map(\.element)
                model = model.enumerated().filter { !pick($0.offset, $0.element) }
                    .map(\.element)
                if line.take(where: pick) != expected {
                    Issue.record("step \(step): take")
                    return
                }
            }
            if line.isEmpty != model.isEmpty || (step % 997 == 0 && line.waiters != model) {
                Issue.record("step \(step): \(line.waiters.count) waiters, \(model.count) expected")
                return
            }
        }
        #expect(line.waiters == model)
    }
}
