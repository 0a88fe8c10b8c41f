// What a JSONDecoder failure means, said as a setting's error should say it: where in the
// document, and what was wrong, without Swift's debug descriptions.

import Foundation

extension DecodingError {
    /// `lists[0].zone: is missing`, `lists: is not an array`, `is not valid JSON`.
    public var plainDescription: String {
        switch self {
        case .typeMismatch(let type, let context):
            return Self.place(context.codingPath) + "is not " + Self.kind(type)
        case .valueNotFound(let type, let context):
            return Self.place(context.codingPath) + "is null, not " + Self.kind(type)
        case .keyNotFound(let key, let context):
            return Self.place(context.codingPath + [key]) + "is missing"
        case .dataCorrupted(let context):
            return context.codingPath.isEmpty ? "is not valid JSON"
                : Self.place(context.codingPath) + "has a value that cannot be read"
        @unknown default:
            return "cannot be read"
        }
    }

    /// `lists[0].zone: `, or nothing for the document itself.
    static func place(_ path: [any CodingKey]) -> String {
        var out = ""
        for key in path {
            if let index = key.intValue {
                out += "[\(index)]"
            } else {
                out += (out.isEmpty ? "" : ".") + key.stringValue
            }
        }
        return out.isEmpty ? "" : out + ": "
    }

    static func kind(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Bool.Type: return "true or false"
        // Every width: a file's port or weight must not read "is not an object".
        case is any BinaryInteger.Type, is any BinaryFloatingPoint.Type: return "a number"
        default:
            return "\(type)".hasPrefix("Array") ? "an array" : "an object"
        }
    }
}
