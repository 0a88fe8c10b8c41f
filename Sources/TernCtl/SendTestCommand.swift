// `ternctl send-test`: one message through the running system, by the front door (the
// API), followed to its final event. The steps printed are the message's history as the
// daemons wrote it, so a stuck step shows where the pipeline stops.

import Foundation
import TernCore
import TernMail

enum SendTestCommand {
    static let command = CtlCommand(
        name: "send-test", summary: "send a message through the API and follow it",
        help: """
            usage: ternctl send-test --to ADDRESS [--from ADDRESS] [--org ORG] [--pool POOL]
                                     [--subject TEXT] [--timeout DURATION]
                                     [--api URL] [--key KEY] [--env-file FILE] [--json]

            Sends a short text message with POST /v1/send, then reads GET /v1/messages/{id}
            four times a second and prints every new history entry (accepted, held,
            deferred with the remote's reply, delivered, bounced, ...) until the message
            reaches a final state or the timeout passes. This is the whole pipeline: the
            API, the scheduler's release, a sender's SMTP delivery to the recipient's MX
            hosts, and the result back through the scheduler.

              --to ADDRESS        the recipient (required); it really receives the message
              --from ADDRESS      the sender (default ternctl@TERN_HOSTNAME, or
                                  ternctl@localhost.localdomain)
              --org ORG           the organisation to send as (default: the key's, or
                                  "ternctl")
              --pool POOL         the IP pool (default "default")
              --subject TEXT      the subject (default "Tern test message")
              --timeout DURATION  how long to follow it (default 2m; 30s, 5m, ...)
              --api URL           the API (default TERN_API_URL, else http:// and
                                  TERN_API_LISTEN, else http://127.0.0.1:8025)
              --key KEY           the API key (default TERN_API_KEY, else the first key of
                                  TERN_API_KEYS)

            With --json the output is one JSON object per line: {"step": "accepted", "id":
            ...}, then each history entry as {"step": "history", ...}, then
            {"step": "final", "state": ...}.

            Exit status: 0 delivered, 1 any other final state or the timeout, 69 when the
            API cannot be reached, 64 for bad usage or when it refuses the request as
            malformed, 78 a setting is wrong.

            \(CtlContext.optionsHelp)
            """,
        run: run)

    static func run(_ arguments: [String], _ io: CtlOutput) async throws -> Int32 {
        let args = try ArgumentReader(
            arguments,
            valued: CtlContext.valued.union(["to", "from", "org", "pool", "subject", "timeout",
                                             "api", "key"]),
            flags: CtlContext.flags)
        guard args.operands.isEmpty else { throw UsageError("send-test takes no operands") }
        guard let to = args.options["to"]?.last else { throw UsageError("--to is required") }
        let ctx = try CtlContext(args)
        let env = ctx.env
        let timeoutText = args.options["timeout"]?.last ?? "2m"
        guard let timeout = parseDuration(timeoutText) else {
            throw UsageError("--timeout '\(timeoutText)' is not a duration like 30s or 5m")
        }
        let api = try APIEndpoint(
            url: args.options["api"]?.last ?? env.values["TERN_API_URL"]
                ?? "http://" + env.string("TERN_API_LISTEN", default: "127.0.0.1:8025"))
        let keyText = args.options["key"]?.last ?? env.values["TERN_API_KEY"]
            ?? env.string("TERN_API_KEYS", default: "").split(separator: ",").first.map {
                String($0.split(separator: ":").first ?? "").trimmingCharacters(in: .whitespaces)
            }
        guard let key = keyText, !key.isEmpty else {
            throw UsageError("no API key: give --key or set TERN_API_KEY")
        }
        let host = env.string("TERN_HOSTNAME", default: "localhost.localdomain")
        var request: [String: Any] = [
            "from": args.options["from"]?.last ?? "ternctl@\(host)", "to": to,
            "subject": args.options["subject"]?.last ?? "Tern test message",
            "text": "A test message sent by ternctl send-test at \(timestamp(ms: nowMs())).",
            "pool": args.options["pool"]?.last ?? "default",
            "metadata": ["sent_by": "ternctl send-test"],
        ]
        if let org = args.options["org"]?.last {
            request["org"] = org
        } else if !env.string("TERN_API_KEYS", default: "").contains(":")
                    || args.options["key"] != nil {
            request["org"] = "ternctl"
        }
        let body = Array(try JSONSerialization.data(withJSONObject: request))
        let sent = try await api.call("POST", "/v1/send", key: key, body: body)
        guard sent.status == 202, let id = sent.json["id"] as? String else {
            let why = (sent.json["error"] as? [String: Any])?["message"] as? String ?? sent.text
            io.error("send-test: the API answered \(sent.status): \(why)")
            return sent.status == 400 || sent.status == 422 ? 64 : 1
        }
        emit(ctx, io, ["step": "accepted", "id": id], "accepted as \(id)")
        let deadline = ContinuousClock.now + timeout
        var shown = 0
        var state = "queued"
        while ContinuousClock.now < deadline {
            let reply = try await api.call("GET", "/v1/messages/\(id)", key: key)
            guard reply.status == 200 else {
                io.error("send-test: GET /v1/messages/\(id) answered \(reply.status)")
                return 1
            }
            state = reply.json["state"] as? String ?? state
            let history = reply.json["history"] as? [[String: Any]] ?? []
            for entry in history.dropFirst(shown) {
                var step = entry
                step["step"] = "history"
                emit(ctx, io, step, "  " + MessageCommand.historyLine(entry))
            }
            shown = max(shown, history.count)
            if MessageState(rawValue: state)?.isFinal == true {
                emit(ctx, io, ["step": "final", "id": id, "state": state], "final: \(state)")
                return state == MessageState.delivered.rawValue ? 0 : 1
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        emit(ctx, io, ["step": "timeout", "id": id, "state": state],
             "still \(state) after \(timeoutText); `ternctl message \(id)` shows more")
        return 1
    }

    static func emit(_ ctx: CtlContext, _ io: CtlOutput, _ object: [String: Any],
                     _ text: String) {
        guard ctx.json else { return io.line(text) }
        let data = (try? JSONSerialization.data(withJSONObject: object,
                                                options: [.sortedKeys, .withoutEscapingSlashes]))
        io.line(String(decoding: data ?? Data("{}".utf8), as: UTF8.self))
    }
}

/// Just enough HTTP/1.1 to talk to Tern's API: one request per connection, a body framed
/// by Content-Length (the only framing the API uses). No TLS: reach a remote API through
/// its TLS proxy from a host that has curl.
struct APIEndpoint {
    let address: SocketAddress
    let host: String

    init(url: String) throws {
        guard url.hasPrefix("http://") else {
            throw UsageError("the API URL must be http://host:port ('\(url)')")
        }
        let rest = url.dropFirst("http://".count).prefix(while: { $0 != "/" })
        guard let address = SocketAddress(String(rest)) else {
            throw UsageError("'\(rest)' is not a numeric host:port")
        }
        self.address = address
        self.host = String(rest)
    }

    struct Reply {
        let status: Int
        let body: [UInt8]
        var text: String { String(decoding: body, as: UTF8.self) }
        var json: [String: Any] {
            (try? JSONReading.value(body)) as? [String: Any] ?? [:]
        }
    }

    func call(_ method: String, _ path: String, key: String, body: [UInt8] = []) async throws
        -> Reply
    {
        let deadline = ContinuousClock.now + .seconds(30)
        let connection: TCPConnection
        do {
            connection = try await TCPConnection.connect(to: address, deadline: deadline)
        } catch {
            throw Unreachable(description: "the API at \(address) does not answer: \(error)")
        }
        defer { connection.close() }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host)\r\n"
            + "Authorization: Bearer \(key)\r\nConnection: close\r\n"
        if !body.isEmpty {
            head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n"
        }
        try await connection.write(Array((head + "\r\n").utf8) + body, deadline: deadline)
        let reader = LineReader(connection)
        guard let statusLine = try await reader.readLine(limit: 8192, deadline: deadline) else {
            throw Unreachable(description: "the API closed the connection without answering")
        }
        let parts = String(decoding: statusLine, as: UTF8.self).split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else {
            throw Unreachable(description: "the API's answer is not HTTP")
        }
        var length = 0
        while let line = try await reader.readLine(limit: 65536, deadline: deadline),
              !line.isEmpty {
            let text = String(decoding: line, as: UTF8.self)
            if let colon = text.firstIndex(of: ":"),
               text[..<colon].lowercased() == "content-length" {
                length = Int(text[text.index(after: colon)...]
                    .trimmingCharacters(in: .whitespaces)) ?? 0
            }
        }
        return Reply(status: status, body: try await reader.readExactly(length,
                                                                       deadline: deadline))
    }
}
