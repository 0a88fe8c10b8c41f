import Foundation
import Testing
import TernCore
@testable import TernMail

@Suite struct ProviderCatalogTests {
    let catalog = ProviderCatalog.builtin

    @Test func shipsTwelveProvidersAndADefault() {
        let names = Set(catalog.profiles.map(\.name))
        #expect(names == ["gmail", "microsoft", "yahoo", "apple", "comcast", "gmx-webde",
                          "orange", "t-online", "mailru", "yandex", "zoho", "proton", "default"])
        for profile in catalog.profiles {
            #expect(profile.problems().isEmpty, "\(profile.name): \(profile.problems())")
            #expect(!profile.source.isEmpty)
        }
        #expect(catalog.profile(named: "gmail")?.messagesPerMinute == 100)
        #expect(catalog.profile(named: "microsoft")?.messagesPerMinute == 80)
        #expect(catalog.profile(named: "yahoo")?.messagesPerMinute == 50)
    }

    @Test(arguments: [
        ("gmail.com", "gmail"), ("GMail.COM.", "gmail"), ("hotmail.co.uk", "microsoft"),
        ("aol.com", "yahoo"), ("me.com", "apple"), ("web.de", "gmx-webde"),
        ("t-online.de", "t-online"), ("ya.ru", "yandex"), ("pm.me", "proton"),
    ])
    func domainsByName(domain: String, provider: String) {
        #expect(catalog.provider(forDomain: domain)?.name == provider)
        #expect(catalog.provider(forDomain: domain, mxHosts: []).name == provider)
    }

    @Test(arguments: [
        (["aspmx.l.google.com", "alt1.aspmx.l.google.com"], "gmail"),
        (["company-com.mail.protection.outlook.com"], "microsoft"),
        (["mta5.am0.yahoodns.net"], "yahoo"),
        (["mx01.mail.icloud.com."], "apple"),
        (["mx.zoho.eu"], "zoho"),
        (["mail.protonmail.ch"], "proton"),
    ])
    func companyDomainsByTheirMXHosts(hosts: [String], provider: String) {
        #expect(catalog.provider(forDomain: "company.example") == nil)
        #expect(catalog.provider(forDomain: "company.example", mxHosts: hosts).name == provider)
    }

    @Test func theFirstMXThatMatchesDecidesAndOthersFallBackToTheDefault() {
        let hosts = ["mx.company.example", "aspmx.l.google.com"]
        #expect(catalog.provider(forMXHosts: hosts)?.name == "gmail")
        #expect(catalog.provider(forDomain: "x.example", mxHosts: ["mx.x.example"]).name
                == "default")
        // A suffix match needs a whole label: notgoogle.com is not google.com.
        #expect(catalog.provider(forMXHosts: ["mx.notgoogle.com"]) == nil)
    }

    @Test func overridesChangeOnlyTheFieldsTheyGiveAndAddNewProfiles() throws {
        let json = #"""
            {"providers": [
              {"name": "gmail", "messagesPerMinute": 20},
              {"name": "fastmail", "domains": ["fastmail.com"],
               "mxPatterns": ["*.messagingengine.com"],
               "messagesPerMinute": 30, "connectionsPerIP": 2, "messagesPerConnection": 10}
            ]}
            """#
        let custom = try ProviderCatalog(ProviderProfile.builtin, overrides: Data(json.utf8),
                                         file: "p.json")
        let gmail = try #require(custom.profile(named: "gmail"))
        #expect(gmail.messagesPerMinute == 20)
        #expect(gmail.connectionsPerIP == 10)
        #expect(gmail.domains.contains("gmail.com"))
        #expect(custom.provider(forDomain: "x.example", mxHosts: ["in1-smtp.messagingengine.com"])
                .name == "fastmail")
        #expect(custom.profile(named: "fastmail")?.source == "operator")
    }

    @Test(arguments: [
        (#"[1]"#, "not a JSON object"),
        (#"{"providers": [],}"#, "is not valid JSON (octet 17)"),
        (#"{"providers": [{"name": "gmail", "name": "yahoo"}]}"#,
         #"has the name "name" twice in one object"#),
        (#"{"profiles": []}"#, "unknown key 'profiles'"),
        (#"{"providers": [{"messagesPerMinute": 3}]}"#, "providers[0].name: missing"),
        (#"{"providers": [{"name": "gmail", "rate": 3}]}"#, "unknown field 'rate'"),
        (#"{"providers": [{"name": "gmail", "messagesPerMinute": "fast"}]}"#,
         "providers[0] (gmail).messagesPerMinute: wrong type"),
        (#"{"providers": [{"name": "gmail", "messagesPerMinute": 0}]}"#,
         "messagesPerMinute: must be at least 1"),
        (#"{"providers": [{"name": "new", "messagesPerMinute": 3}]}"#,
         "new profile needs 'connectionsPerIP'"),
        (#"{"providers": [{"name": "gmail", "domains": ["bad domain"]}]}"#,
         "'bad domain' is not a host name"),
    ])
    func badOverridesNameTheFileAndTheField(json: String, expected: String) {
        do {
            _ = try ProviderCatalog(ProviderProfile.builtin, overrides: Data(json.utf8),
                                    file: "p.json")
            Issue.record("accepted \(json)")
        } catch let error as ConfigError {
            #expect("\(error)".contains("p.json"))
            #expect("\(error)".contains(expected), "\(error)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }
}
