// Values of the Redis protocol, decoded from hiredis's reply objects into plain Swift.

import CHiredis

public enum RedisValue: Sendable, Equatable {
    case bulk([UInt8])
    case status(String)
    case integer(Int)
    case array([RedisValue])
    case null
    case error(String)

    init(_ reply: UnsafeMutablePointer<redisReply>) {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING:
            self = .bulk(Self.bytes(r.str, r.len))
        case REDIS_REPLY_STATUS:
            self = .status(String(decoding: Self.bytes(r.str, r.len), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            self = .error(String(decoding: Self.bytes(r.str, r.len), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            self = .integer(Int(r.integer))
        case REDIS_REPLY_ARRAY:
            var items: [RedisValue] = []
            items.reserveCapacity(Int(r.elements))
            for i in 0..<Int(r.elements) {
                if let e = r.element[i] { items.append(RedisValue(e)) } else { items.append(.null) }
            }
            self = .array(items)
        default:
            self = .null
        }
    }

    private static func bytes(_ p: UnsafeMutablePointer<CChar>?, _ len: Int) -> [UInt8] {
        guard let p, len > 0 else { return [] }
        return p.withMemoryRebound(to: UInt8.self, capacity: len) {
            Array(UnsafeBufferPointer(start: $0, count: len))
        }
    }

    public var string: String? {
        switch self {
        case .bulk(let b): return String(decoding: b, as: UTF8.self)
        case .status(let s): return s
        case .integer(let i): return String(i)
        default: return nil
        }
    }

    public var bytes: [UInt8]? {
        if case .bulk(let b) = self { return b }
        return nil
    }

    public var int: Int? {
        switch self {
        case .integer(let i): return i
        case .bulk(let b): return Int(String(decoding: b, as: UTF8.self))
        default: return nil
        }
    }

    public var array: [RedisValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    public var isNull: Bool { self == .null }

    /// A flat array of field/value pairs (HGETALL, stream entries) as a dictionary.
    public var fieldMap: [String: String] {
        guard let a = array else { return [:] }
        var out: [String: String] = [:]
        var i = 0
        while i + 1 < a.count {
            if let k = a[i].string { out[k] = a[i + 1].string ?? "" }
            i += 2
        }
        return out
    }
}

public enum RedisError: Error, CustomStringConvertible {
    /// The server answered with an error reply.
    case server(String)
    /// The reply stream could not be parsed (a bug or a corrupted connection).
    case protocolError(String)
    case badURL(String)

    public var description: String {
        switch self {
        case .server(let s): return "redis: \(s)"
        case .protocolError(let s): return "redis protocol: \(s)"
        case .badURL(let s): return "bad redis URL: \(s)"
        }
    }
}
