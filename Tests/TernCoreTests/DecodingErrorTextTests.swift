// DecodingError.plainDescription: a setting file's error says what a field must be.

import Foundation
import Testing
@testable import TernCore

@Suite struct DecodingErrorTextTests {
    struct File: Decodable {
        let port: UInt16
        let weight: Float
        let tags: [String]
    }

    func problem(_ json: String) -> String {
        do {
            _ = try JSONDecoder().decode(File.self, from: Data(json.utf8))
            return "decoded"
        } catch let error as DecodingError {
            return error.plainDescription
        } catch {
            return "\(error)"
        }
    }

    @Test func everyNumberTypeIsANumber() {
        #expect(problem(#"{"port": "25", "weight": 1, "tags": []}"#) == "port: is not a number")
        #expect(problem(#"{"port": 25, "weight": "1", "tags": []}"#) == "weight: is not a number")
        #expect(problem(#"{"port": 25, "weight": 1, "tags": {}}"#) == "tags: is not an array")
        #expect(problem(#"{"port": 25, "weight": 1}"#) == "tags: is missing")
    }
}
