// Providers of recipient domains learned from the MX host that answered for them: a company
// domain hosted by a known provider is throttled as that provider from its first result on.

import Synchronization

final class LearnedProviders: Sendable {
    private let names = Mutex<[String: String]>([:])

    func name(of domain: String) -> String? { names.withLock { $0[domain] } }

    /// Records `provider` for `domain`; true when that is news worth saving.
    func learn(_ domain: String, _ provider: String) -> Bool {
        names.withLock { map in
            defer { map[domain] = provider }
            return map[domain] != provider
        }
    }

    func restore(_ saved: [String: String]) { names.withLock { $0 = saved } }
}
