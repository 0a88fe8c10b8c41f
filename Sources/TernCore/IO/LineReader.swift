// Buffered reading of line-oriented protocols (SMTP, HTTP headers) over any ByteStream.
//
// Lines end at LF; a preceding CR is removed, and `lastLineEndedBare` says whether there was
// none. A line longer than the caller's limit is an error rather than unbounded buffering,
// which is what keeps a hostile peer from growing memory.

public enum LineError: Error, Equatable {
    case tooLong(limit: Int)
    case endOfStream
}

public final class LineReader: @unchecked Sendable {
    public var stream: any ByteStream
    private var buffer: [UInt8] = []
    private var start = 0

    public init(_ stream: any ByteStream) { self.stream = stream }

    /// Bytes received but not yet consumed (pipelined commands, early talkers).
    public var buffered: Int { buffer.count - start }

    /// Whether the line `readLine` returned last ended with a bare LF rather than CR LF.
    public private(set) var lastLineEndedBare = false

    /// Drops what is buffered (after STARTTLS, RFC 3207 §4.2: nothing read before the
    /// handshake may be trusted afterwards).
    public func discardBuffered() {
        buffer.removeAll(keepingCapacity: true)
        start = 0
    }

    /// The next line without its CR LF, or nil at a clean end of stream.
    public func readLine(limit: Int, deadline: ContinuousClock.Instant? = nil)
        async throws -> [UInt8]?
    {
        var scanned = start
        while true {
            if let lf = buffer[scanned...].firstIndex(of: 0x0A) {
                var end = lf
                if end > start, buffer[end - 1] == 0x0D { end -= 1 }
                lastLineEndedBare = end == lf
                if end - start > limit { throw LineError.tooLong(limit: limit) }
                let line = Array(buffer[start..<end])
                start = lf + 1
                compact()
                return line
            }
            if buffer.count - start > limit + 1 { throw LineError.tooLong(limit: limit) }
            scanned = buffer.count
            let more = try await stream.read(max: 16384, deadline: deadline)
            if more.isEmpty {
                if buffered == 0 { return nil }
                throw LineError.endOfStream
            }
            buffer.append(contentsOf: more)
        }
    }

    /// Buffers whatever the stream holds now, without waiting for more: for a peer that
    /// ought to be silent, whose early words must not be taken for a later answer.
    /// Never suspends: a check made before every message of a reused session must not cost
    /// a trip through the event loop.
    public func readAvailable() {
        guard let more = try? stream.readIfReady(max: 16384) else { return }
        buffer.append(contentsOf: more)
    }

    /// Exactly `count` bytes (an HTTP body of known length).
    public func readExactly(_ count: Int, deadline: ContinuousClock.Instant? = nil)
        async throws -> [UInt8]
    {
        while buffered < count {
            let more = try await stream.read(max: max(16384, count - buffered), deadline: deadline)
            if more.isEmpty { throw LineError.endOfStream }
            buffer.append(contentsOf: more)
        }
        let out = Array(buffer[start..<start + count])
        start += count
        compact()
        return out
    }

    private func compact() {
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: buffer.capacity <= 65536)
            start = 0
        } else if start > 65536 {
            buffer.removeSubrange(0..<start)
            start = 0
        }
    }
}
