// The provider profiles Tern ships with. Operators override or add profiles in the file named
// by TERN_PROVIDERS_FILE (see docs/providers.md); `ternctl config check` validates it.
//
// Where the numbers come from: very few providers publish a per-IP rate. Where one is
// commonly quoted it is used and named; elsewhere the figure is a deliberately low starting
// point, because the adaptive throttle raises a rate only on sustained success and lowers it
// at the first "slow down" reply. Reply patterns are the codes and texts each provider
// documents in its postmaster pages for deferrals and blocks.

extension ProviderProfile {
    /// Patterns that mean "slow down" at any provider.
    public static let genericSlowDown = [
        "rate limit", "ratelimit", "rate-limit", "too many", "throttl", "try again later",
        "temporarily deferred", "unusual rate", "exceeded", "volume", "please slow down",
        "server busy", "too fast",
    ]
    /// Patterns that mean the sending IP (not the recipient) is refused at any provider.
    public static let genericBlocked = [
        "blocklist", "block list", "blacklist", "blocked using", "spamhaus", "spamcop",
        "barracuda", "listed at", "listed on", "listed in", "dnsbl", "banned sending ip",
        "poor reputation", "bad reputation", "ip reputation", "sender ip is blocked",
    ]

    public static let builtin: [ProviderProfile] = [
        ProviderProfile(
            name: "gmail",
            domains: ["gmail.com", "googlemail.com"],
            mxPatterns: ["*.google.com", "*.googlemail.com"],
            messagesPerMinute: 100, connectionsPerIP: 10, messagesPerConnection: 100,
            slowDownPatterns: ["4.7.28", "4.7.0 try again later", "receiving mail at a rate"],
            blockedPatterns: ["5.7.28", "unsolicited mail originating from your ip"],
            source: """
                Google publishes no per-IP rate; 100/min from one IP is the figure commonly used \
                as a safe start for a warmed IP. Codes from Google's SMTP error reference \
                (421-4.7.28 rate of unsolicited mail, 550-5.7.28 blocked for it).
                """),
        ProviderProfile(
            name: "microsoft",
            domains: ["outlook.com", "hotmail.com", "live.com", "msn.com", "hotmail.co.uk",
                      "hotmail.fr", "hotmail.de", "hotmail.it", "hotmail.es", "live.co.uk",
                      "live.fr", "outlook.fr", "outlook.de", "windowslive.com"],
            mxPatterns: ["*.olc.protection.outlook.com", "*.mail.protection.outlook.com",
                         "*.mail.eo.outlook.com"],
            messagesPerMinute: 80, connectionsPerIP: 5, messagesPerConnection: 50,
            slowDownPatterns: ["4.7.650", "4.7.500", "temporarily rate limited"],
            blockedPatterns: ["(s3150)", "(s3140)", "5.7.606", "5.7.511", "s3114"],
            source: """
                Outlook.com publishes no rate; 80/min is a conservative common start. Codes \
                from Microsoft's postmaster troubleshooting pages: 4.7.650 rate limited for \
                reputation, 4.7.500 server busy, S3140/S3150 and 5.7.606 IP block lists.
                """),
        ProviderProfile(
            name: "yahoo",
            domains: ["yahoo.com", "ymail.com", "rocketmail.com", "aol.com", "aim.com",
                      "yahoo.co.uk", "yahoo.fr", "yahoo.de", "yahoo.es", "yahoo.it",
                      "yahoo.co.jp", "verizon.net", "att.net"],
            mxPatterns: ["*.yahoodns.net", "*.aol.com"],
            messagesPerMinute: 50, connectionsPerIP: 5, messagesPerConnection: 20,
            slowDownPatterns: ["[tss04]", "[ts01]", "[ts02]", "[tss01]", "[tss09]"],
            blockedPatterns: ["[bl21]", "[bl22]", "[bl23]", "[ts03]", "[tsp01]"],
            source: """
                Yahoo's sender hub names no rate; 50/min is a conservative start. TSS04/TS01/TS02 \
                are its temporary deferrals for volume or complaints; BL21-23 mean the IP is on \
                a block list used by Yahoo; TS03 is a permanent block.
                """),
        ProviderProfile(
            name: "apple",
            domains: ["icloud.com", "me.com", "mac.com"],
            mxPatterns: ["*.mail.icloud.com"],
            messagesPerMinute: 40, connectionsPerIP: 4, messagesPerConnection: 20,
            slowDownPatterns: ["4.7.0 too many"],
            blockedPatterns: ["[cs01]", "[hm07]", "[hm08]"],
            source: """
                Apple publishes no rate; 40/min is a conservative start. CS01 and HM07/HM08 \
                are the policy and reputation rejections Apple's postmaster page lists.
                """),
        ProviderProfile(
            name: "comcast",
            domains: ["comcast.net", "xfinity.com"],
            mxPatterns: ["*.comcast.net"],
            messagesPerMinute: 30, connectionsPerIP: 3, messagesPerConnection: 100,
            slowDownPatterns: ["rl000001", "rl000010", "rl000020"],
            blockedPatterns: ["bl000000", "bl000001", "bl000010", "bl000100"],
            source: """
                Comcast's postmaster pages document RL codes for rate limits and BL codes for \
                block lists; they limit connections per IP tightly, hence 3.
                """),
        ProviderProfile(
            name: "gmx-webde",
            domains: ["gmx.de", "gmx.net", "gmx.com", "gmx.at", "gmx.ch", "web.de",
                      "1und1.de", "online.de", "mail.com"],
            mxPatterns: ["*.gmx.net", "*.web.de", "*.kundenserver.de", "*.mail.com"],
            messagesPerMinute: 40, connectionsPerIP: 4, messagesPerConnection: 50,
            slowDownPatterns: ["temporarily not available", "temporary reject"],
            blockedPatterns: ["reject due to policy restrictions", "ip address is black listed"],
            source: """
                1&1/United Internet (GMX, Web.de) publish no rate; 40/min is a conservative \
                start. Texts from their postmaster FAQ for temporary and policy rejections.
                """),
        ProviderProfile(
            name: "orange",
            domains: ["orange.fr", "wanadoo.fr", "voila.fr"],
            mxPatterns: ["*.orange.fr"],
            messagesPerMinute: 30, connectionsPerIP: 2, messagesPerConnection: 50,
            slowDownPatterns: ["ofr004", "service refuse", "trop de connexions"],
            blockedPatterns: ["ofr_506", "ofr006", "ofr_999"],
            source: """
                Orange publishes no rate and allows few connections; 30/min over 2 is a \
                conservative start. OFR codes from Orange's postmaster page.
                """),
        ProviderProfile(
            name: "t-online",
            domains: ["t-online.de", "magenta.de"],
            mxPatterns: ["*.t-online.de"],
            messagesPerMinute: 30, connectionsPerIP: 2, messagesPerConnection: 50,
            slowDownPatterns: ["too many sessions"],
            blockedPatterns: ["tosa@rx.t-online.de", "(bl)"],
            source: """
                T-Online publishes no rate; 30/min is a conservative start. Its block \
                replies ask the sender to write to its postmaster team (tosa@rx.t-online.de).
                """),
        ProviderProfile(
            name: "mailru",
            domains: ["mail.ru", "inbox.ru", "list.ru", "bk.ru", "internet.ru"],
            mxPatterns: ["*.mail.ru"],
            messagesPerMinute: 40, connectionsPerIP: 4, messagesPerConnection: 50,
            slowDownPatterns: ["ratelimit exceeded"],
            blockedPatterns: ["ip address blocked", "your ip is blacklisted"],
            source: "Mail.ru publishes no rate; 40/min is a conservative start."),
        ProviderProfile(
            name: "yandex",
            domains: ["yandex.ru", "yandex.com", "ya.ru", "yandex.by", "yandex.kz",
                      "yandex.ua"],
            mxPatterns: ["*.yandex.ru", "*.yandex.net"],
            messagesPerMinute: 40, connectionsPerIP: 4, messagesPerConnection: 50,
            slowDownPatterns: ["service is currently unavailable", "come back later"],
            blockedPatterns: ["your ip is in blacklist"],
            source: "Yandex publishes no rate; 40/min is a conservative start."),
        ProviderProfile(
            name: "zoho",
            domains: ["zoho.com", "zohomail.com", "zoho.eu", "zohomail.eu"],
            mxPatterns: ["*.zoho.com", "*.zoho.eu", "*.zohomail.com"],
            messagesPerMinute: 40, connectionsPerIP: 4, messagesPerConnection: 50,
            blockedPatterns: ["ip address listed"],
            source: "Zoho publishes no rate; 40/min is a conservative start."),
        ProviderProfile(
            name: "proton",
            domains: ["proton.me", "protonmail.com", "protonmail.ch", "pm.me"],
            mxPatterns: ["*.protonmail.ch"],
            messagesPerMinute: 30, connectionsPerIP: 3, messagesPerConnection: 50,
            source: "Proton publishes no rate; 30/min is a conservative start."),
        ProviderProfile(
            name: "default",
            domains: [], mxPatterns: [],
            messagesPerMinute: 60, connectionsPerIP: 5, messagesPerConnection: 100,
            source: """
                Every domain no other profile claims. 60/min and 5 connections per IP are \
                modest for a small domain's server and are adapted by the throttle.
                """),
    ]
}
