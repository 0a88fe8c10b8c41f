// Trimming white space without Foundation: `trimmingCharacters(in: .whitespaces)` bridges
// through NSString and was a twentieth of the API's CPU on the intake path.

extension Substring {
    /// Without leading and trailing white space as `CharacterSet.whitespaces` counts it:
    /// HTAB, every space separator (Zs: SP, NO-BREAK SPACE, IDEOGRAPHIC SPACE, ...) and
    /// ZERO WIDTH SPACE (a Zs before Unicode 4.0.1, still in Foundation's set).
    func trimmingSpaces() -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.isTrimmedSpace }) else { return "" }
        let last = scalars.lastIndex(where: { !$0.isTrimmedSpace })!
        return String(scalars[first...last])
    }
}

extension String {
    func trimmingSpaces() -> String { self[...].trimmingSpaces() }
}

extension Unicode.Scalar {
    var isTrimmedSpace: Bool {
        if value < 0x80 { return value == 0x20 || value == 0x09 }
        return value == 0x200B || properties.generalCategory == .spaceSeparator
    }
}
