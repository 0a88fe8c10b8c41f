"""Tern end to end: the five daemons deliver to the test world and read its bounces.

Each test mails its own fresh address (a "+TAG" of uuid), so tests share one session of
daemons without seeing each other's messages. What a test expects of the API, the
message record, the events stream and the bounce receiver is the contract in
e2e/README.md; what the world does with each address is testworld/README.md.
"""

import email.utils
import smtplib
import uuid

import pytest

from harness import (API_MAX_BODY, EVENT_KINDS, FBL_ADDRESS, HOSTNAME, MESSAGE_ID, POOL_IPS,
                     SENDER, VERP_ADDRESS, address, build_arf, build_dsn, forge_signature,
                     header_block, wait_for)


def history(record):
    """The message's history as event names, ignoring entries that are not events."""
    return [h["event"] for h in record["history"] if h["event"] in EVENT_KINDS]


def assert_in_order(record):
    ats = [h["at"] for h in record["history"]]
    assert ats == sorted(ats), ats


def contains(value, wanted):
    """True if the JSON value has `wanted` (a dict) anywhere inside it."""
    if value == wanted:
        return True
    if isinstance(value, dict):
        return any(contains(v, wanted) for v in value.values())
    if isinstance(value, list):
        return any(contains(v, wanted) for v in value)
    return False


def only_spooled(world, recipient):
    messages = world.spool_for(recipient)
    assert len(messages) == 1, [m.meta for m in messages]
    return messages[0]


def assert_crlf_only(raw):
    # RFC 5321 section 2.3.8: lines end in CRLF; a bare LF or CR must not be sent.
    assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF in the message"
    assert b"\r" not in raw.replace(b"\r\n", b""), "bare CR in the message"


def test_health(http):
    response = http("GET", "/health", key=None)
    assert response.status == 200
    assert response.json()["redis"] == "ok"


def test_delivered(tern, world):
    to = address("alice")
    subject = f"Grüße from Tern {uuid.uuid4().hex[:8]}"
    metadata = {"user": "42", "campaign": "spring"}
    message_id = tern.send(
        to=to, subject=subject, text="Hello Alice,\nthis is Tern.\n",
        html="<p>Hello <b>Alice</b></p>", headers={"X-Campaign": "spring"},
        org="acme", pool="default", metadata=metadata)
    record = tern.wait_for_state(message_id, "delivered")
    delivered = tern.wait_for_event(message_id, "delivered")

    spooled = only_spooled(world, to)
    assert spooled.rcpt_tos == [to]
    assert spooled.peer_ip in POOL_IPS
    assert spooled.helo == POOL_IPS[spooled.peer_ip]     # the pool pairs IP and name
    assert (spooled.mx_host, spooled.mx_addr) == ("mx1.inbox.example", "127.0.0.11")
    verp = VERP_ADDRESS.match(spooled.mail_from)
    assert verp and verp["id"] == message_id, spooled.mail_from

    assert_crlf_only(spooled.raw)
    mail = spooled.message
    assert mail["Subject"] == subject
    assert email.utils.parseaddr(mail["From"])[1] == SENDER
    assert email.utils.parseaddr(mail["To"])[1] == to
    assert mail["X-Campaign"] == "spring"
    assert mail["Date"]                                    # RFC 5322 section 3.6
    assert mail["Message-ID"] == f"<{message_id}@{HOSTNAME}>"  # TERN_HOSTNAME, not the machine's
    assert "this is Tern." in mail.get_body(("plain",)).get_content()
    assert "<b>Alice</b>" in mail.get_body(("html",)).get_content()

    assert MESSAGE_ID.match(record["id"]) and record["id"] == message_id
    assert (record["org"], record["from"], record["to"]) == ("acme", SENDER, to)
    [attempt] = record["attempts"]
    assert attempt["outcome"] == "delivered" and int(attempt["code"]) == 250
    assert (attempt["mx"], attempt["addr"]) == ("mx1.inbox.example", "127.0.0.11")
    assert attempt["ip"] == spooled.peer_ip
    assert history(record) == ["accepted", "delivered"]
    assert_in_order(record)
    assert tern.event_names(message_id) == ["accepted", "delivered"]
    assert contains(delivered.data, metadata), delivered.raw_json


def test_raw_message_arrives_byte_for_byte(tern, world):
    to = address("raw")
    raw = (f"From: Sender <{SENDER}>\r\nTo: <{to}>\r\n"
           f"Subject: raw {uuid.uuid4().hex[:8]}\r\n"
           "Date: Thu, 03 Dec 2026 10:00:00 +0000\r\n"
           f"Message-ID: <{uuid.uuid4().hex}@tern.example>\r\n"
           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
           "first line\r\n.a line that starts with a dot (RFC 5321 4.5.2)\r\n"
           "..two dots\r\n.\r\nlast line\r\n")
    message_id = tern.send(to=to, raw=raw)
    tern.wait_for_state(message_id, "delivered")
    spooled = only_spooled(world, to)
    # Tern may add header fields on top (a DKIM signature, Received), never change the
    # message itself; dot-stuffing must be undone exactly by the receiving server.
    assert spooled.raw.endswith(raw.encode())
    assert VERP_ADDRESS.match(spooled.mail_from)["id"] == message_id


def test_defer_once_then_delivered(tern, world):
    to = address("defer-once")
    message_id = tern.send(to=to, subject="deferred once", text="try again")
    record = tern.wait_for_state(message_id, "delivered")
    first, second = record["attempts"]
    assert first["outcome"] == "deferred" and int(first["code"]) == 451
    assert first["enhanced"] == "4.3.0"
    assert second["outcome"] == "delivered" and int(second["code"]) == 250
    assert history(record) == ["accepted", "deferred", "delivered"]
    assert_in_order(record)
    assert tern.wait_for_event(message_id, "delivered")
    assert tern.event_names(message_id) == ["accepted", "deferred", "delivered"]
    replies = [e["reply"][:3] for e in world.journal()
               if e["stage"] == "rcpt" and e["arg"] == to]
    assert replies == ["451", "250"]
    only_spooled(world, to)


def test_bounce_at_rcpt(tern, world):
    to = address("bounce")
    message_id = tern.send(to=to, subject="will bounce", text="nobody home")
    record = tern.wait_for_state(message_id, "bounced")
    [attempt] = record["attempts"]
    assert attempt["outcome"] == "failed" and int(attempt["code"]) == 550
    assert attempt["enhanced"] == "5.1.1"
    # Both lines of the multi-line 550 are kept.
    assert "does not exist" in attempt["reply"] and "user unknown" in attempt["reply"]
    assert history(record) == ["accepted", "bounced"]
    bounced = tern.wait_for_event(message_id, "bounced")
    assert "user unknown" in bounced.raw_json and "550" in bounced.raw_json
    assert world.spool_for(to) == []


def test_first_mx_refuses_second_delivers(tern, world):
    to = address("bob", "twomx.example")
    message_id = tern.send(to=to, subject="two MX hosts", text="the second one works")
    record = tern.wait_for_state(message_id, "delivered")
    spooled = only_spooled(world, to)
    assert (spooled.mx_host, spooled.mx_addr) == ("mx2.twomx.example", "127.0.0.15")
    assert spooled.peer_ip in POOL_IPS
    last = record["attempts"][-1]
    assert last["outcome"] == "delivered"
    assert (last["mx"], last["addr"]) == ("mx2.twomx.example", "127.0.0.15")
    assert "bounced" not in history(record)


def test_implicit_mx(tern, world):
    to = address("carol", "nomx.example")
    message_id = tern.send(to=to, subject="no MX record", text="the A record it is")
    tern.wait_for_state(message_id, "delivered")
    assert only_spooled(world, to).mx_host == "nomx.example"     # RFC 5321 section 5.1


def test_null_mx_is_never_contacted(tern, world):
    to = address("dave", "nullmx.example")
    message_id = tern.send(to=to, subject="null MX", text="no mail accepted here")
    record = tern.wait_for_state(message_id, "bounced")            # RFC 7505 section 3
    assert history(record) == ["accepted", "bounced"]
    assert world.spool_for(to) == []
    assert not [e for e in world.journal() if e["mx_host"] == "nullmx.example"]


def delivered_verp(tern, world, local):
    """Send one message, wait for its delivery; returns (id, recipient, spooled)."""
    to = address(local)
    message_id = tern.send(to=to, subject="will bounce later", text="async bounce")
    tern.wait_for_state(message_id, "delivered")
    return message_id, to, only_spooled(world, to)


def test_dsn_to_verp_address_bounces(tern, world):
    message_id, to, spooled = delivered_verp(tern, world, "erin")
    verp = spooled.mail_from
    dsn = build_dsn(verp, to, header_block(spooled.raw))
    with tern.bounce_smtp() as smtp:
        assert smtp.mail("")[0] == 250                   # null reverse path, RFC 3464 2
        assert smtp.rcpt(verp)[0] == 250
        assert smtp.data(dsn)[0] == 250
    bounced = tern.wait_for_event(message_id, "bounced")
    assert "5.1.1" in bounced.raw_json


def test_dsn_to_forged_verp_address_is_refused(tern, world):
    message_id, to, spooled = delivered_verp(tern, world, "frank")
    forged = forge_signature(spooled.mail_from)
    assert forged != spooled.mail_from
    forged_before = tern.counter("bounce.forged")
    with tern.bounce_smtp() as smtp:
        assert smtp.mail("")[0] == 250
        code, reply = smtp.rcpt(forged)
    assert code == 550 and reply.startswith(b"5.7.1"), (code, reply)
    wait_for(lambda: tern.counter("bounce.forged") == forged_before + 1, timeout=5,
             what="bounce.forged to count the forgery")
    inbound = tern.redis.xrange(tern.key("stream:inbound"))
    assert not [f for _, f in inbound if f.get("id") == message_id]
    assert "bounced" not in tern.event_names(message_id)


def test_bounce_receiver_greets_with_tern_hostname(tern):
    smtp = smtplib.SMTP(timeout=10)
    try:
        code, banner = smtp.connect("127.0.0.1", tern.bounce_port)
    finally:
        smtp.close()
    assert code == 220 and banner.split()[0].decode() == HOSTNAME, banner


def test_dsn_bounce_suppresses_the_address(tern, world):
    message_id, to, spooled = delivered_verp(tern, world, "gone")
    dsn = build_dsn(spooled.mail_from, to, header_block(spooled.raw))
    for _ in range(2):                                  # the same report twice counts once
        with tern.bounce_smtp() as smtp:
            assert smtp.mail("")[0] == 250
            assert smtp.rcpt(spooled.mail_from)[0] == 250
            assert smtp.data(dsn)[0] == 250
    tern.wait_for_event(message_id, "bounced")
    wait_for(lambda: tern.redis("XLEN", tern.key("stream:inbound")) == 0, timeout=10,
             what="both reports applied")
    assert tern.event_names(message_id).count("bounced") == 1
    assert tern.redis("SISMEMBER", tern.key("supp:default"), to) == 1
    again = tern.send(to=to, subject="again", text="after a hard bounce")
    tern.wait_for_state(again, "suppressed")
    assert len(world.spool_for(to)) == 1                 # the second was never sent


def test_arf_complaint_to_the_feedback_address(tern, world):
    message_id, to, spooled = delivered_verp(tern, world, "grumpy")
    arf = build_arf(spooled.raw, to)
    with tern.bounce_smtp() as smtp:
        assert smtp.mail("fbl@fbl.inbox.example")[0] == 250
        assert smtp.rcpt(FBL_ADDRESS)[0] == 250
        assert smtp.data(arf)[0] == 250
    complained = tern.wait_for_event(message_id, "complained")
    assert "abuse" in complained.raw_json
    assert tern.wait_for_state(message_id, "delivered")   # a complaint ends nothing
    assert tern.redis("SISMEMBER", tern.key("supp:default"), to) == 1
    again = tern.send(to=to, subject="again", text="after a complaint")
    tern.wait_for_state(again, "suppressed")


def valid_send(**changes):
    body = {"from": SENDER, "to": "alice@inbox.example", "subject": "s", "text": "t"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


# name, request arguments, accepted statuses, the field the error must name (or None)
BAD_INPUT = [
    ("malformed-json", {"body": b'{"from": "sender@tern.example", "to": '}, {400}, None),
    ("missing-to", {"json": valid_send(to=None)}, {400, 422}, "to"),
    ("missing-from", {"json": valid_send(**{"from": None})}, {400, 422}, "from"),
    ("to-without-at", {"json": valid_send(to="alice.inbox.example")}, {400, 422}, "to"),
    ("to-without-domain", {"json": valid_send(to="alice@")}, {400, 422}, "to"),
    ("to-without-local-part", {"json": valid_send(to="@inbox.example")}, {400, 422}, "to"),
    ("crlf-in-to", {"json": valid_send(to="alice@inbox.example\r\nBcc: eve@inbox.example")},
     {400, 422}, "to"),
    ("crlf-in-header", {"json": valid_send(headers={"X-Test": "a\r\nBcc: eve@inbox.example"})},
     {400, 422}, "headers"),
    ("crlf-in-subject", {"json": valid_send(subject="hi\r\nBcc: eve@inbox.example")},
     {400, 422}, "subject"),
    ("to-address-literal", {"json": valid_send(to="alice@[127.0.0.1]")}, {422}, "to"),
    ("to-ipv6-literal", {"json": valid_send(to="alice@[IPv6:::1]")}, {422}, "to"),
    ("to-localhost", {"json": valid_send(to="alice@localhost")}, {422}, "to"),
    ("to-dot-localhost", {"json": valid_send(to="alice@box.localhost")}, {422}, "to"),
    ("to-emoji-domain", {"json": valid_send(to="alice@i\u2764.example")}, {422}, "to"),
    ("to-bad-a-label", {"json": valid_send(to="alice@xn--zz.example")}, {422}, "to"),
    ("bidi-in-from", {"json": valid_send(**{"from": "ad\u202emin@tern.example"})}, {422},
     "from"),
    ("bcc-header", {"json": valid_send(headers={"Bcc": "eve@inbox.example"})}, {422},
     "headers.Bcc"),
    ("unknown-pool", {"json": valid_send(pool="transactional")}, {422}, "pool"),
    ("json-string", {"body": b'"x"'}, {400}, "body"),
    ("body-over-max", {"json": valid_send(text="x" * (API_MAX_BODY + 50_000))}, {413}, None),
    ("no-api-key", {"json": valid_send(), "key": None}, {401}, None),
    ("wrong-api-key", {"json": valid_send(), "key": "not-the-key"}, {401, 403}, None),
]


@pytest.mark.parametrize("name,request_args,statuses,field", BAD_INPUT,
                         ids=[case[0] for case in BAD_INPUT])
def test_bad_input_is_refused(tern, name, request_args, statuses, field):
    before = tern.submit_last_id()
    response = tern.http("POST", "/v1/send", **request_args)
    assert response.status in statuses, (response.status, response.body)
    headers = {name.lower(): value for name, value in response.headers.items()}
    assert headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == response.status and problem["type"] == "about:blank"
    assert isinstance(problem["detail"], str) and problem["detail"].strip()
    if field is not None:
        assert problem.get("field", "").startswith(field), problem
    assert tern.submit_last_id() == before, "a refused request reached the submit stream"
