"""MIME and scheduling end to end: messages with display names, attachments and inline
images arrive at the test world's MX hosts as the request described them (read back with
Python's email package, policy=default) and signed (dkimpy); a message with send_at is not
delivered before that time, while one sent after it without send_at goes first.

The random round trip over many combinations is the Swift property test
(Tests/TernMailTests/MIMEPropertyTests.swift); here the real pipeline carries a few.
"""

import base64
import datetime
import os
import time

from harness import DKIM_DOMAIN, address, delivered_once as delivered, dkim_verify


def rfc3339(seconds):
    ms = round(seconds * 1000)
    whole = datetime.datetime.fromtimestamp(ms // 1000, datetime.timezone.utc)
    return whole.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def test_attachments_and_names_arrive_as_sent_and_signed(tern, world):
    to = address("mime")
    pdf = os.urandom(3000)
    logo = bytes(range(256))
    message_id = tern.send(
        **{"from": {"email": f"news@{DKIM_DOMAIN}", "name": "Zoë — Tern News"},
           "to": f'"Doe, Jane" <{to}>',
           "reply_to": "Help Desk <help@tern.example>",
           "subject": "Grüße mit Anhang 📎",
           "text": "See the attachment.\n",
           "html": '<p>Logo: <img src="cid:logo@tern.example"></p>',
           "attachments": [
               {"filename": "Übersicht März.pdf", "content_type": "application/pdf",
                "content": base64.b64encode(pdf).decode()},
               {"filename": "logo.png", "content_type": "image/png",
                "content": base64.b64encode(logo).decode(),
                "content_id": "logo@tern.example"}],
           "tags": ["mime-test"]})
    spooled = delivered(tern, world, message_id, to)
    m = spooled.message
    assert m.get_content_type() == "multipart/mixed"
    assert m["from"].addresses[0].display_name == "Zoë — Tern News"
    assert m["to"].addresses[0].display_name == "Doe, Jane"
    assert m["reply-to"].addresses[0].display_name == "Help Desk"
    assert str(m["subject"]) == "Grüße mit Anhang 📎"
    assert m.get_body(("plain",)).get_content().replace("\r\n", "\n") == "See the attachment.\n"
    files = {p.get_filename(): p for p in m.walk() if p.get_content_disposition()}
    assert files["Übersicht März.pdf"].get_payload(decode=True) == pdf
    assert files["logo.png"].get_payload(decode=True) == logo
    assert files["logo.png"]["content-id"] == "<logo@tern.example>"
    assert files["logo.png"].get_content_disposition() == "inline"
    assert not [d for p in m.walk() for d in p.defects]
    assert dkim_verify(spooled.raw, world) == ["pass", "pass"]

    status = tern.message(message_id)
    assert status["tags"] == ["mime-test"]
    assert all(e.data["tags"] == ["mime-test"] for e in tern.events(message_id))


def test_scheduled_message_waits_for_send_at(tern, world):
    later_to, now_to = address("later"), address("now")
    # Whole milliseconds, as Tern keeps them.
    send_at = int((time.time() + 3) * 1000) / 1000
    later = tern.send(to=later_to, subject="later", text="scheduled\n",
                      send_at=rfc3339(send_at))
    status = tern.message(later)
    assert status["send_at"] == rfc3339(send_at)
    assert status["state"] == "queued"
    first = tern.send(to=now_to, subject="now", text="at once\n")

    now_spool = delivered(tern, world, first, now_to)
    later_spool = delivered(tern, world, later, later_to)
    # Ordering, not speed: the message sent second without send_at arrived first, and
    # the scheduled one arrived no earlier than its time.
    assert now_spool.time <= later_spool.time
    assert later_spool.time >= send_at
    accepted = next(e for e in tern.events(later) if e.event == "accepted")
    delivered_event = next(e for e in tern.events(later) if e.event == "delivered")
    assert accepted.data["at"] < rfc3339(send_at) <= delivered_event.data["at"]


def test_refusals_name_the_field(tern):
    bad = tern.http("POST", "/v1/send", json={
        "from": f"news@{DKIM_DOMAIN}", "to": address("refused"), "text": "x",
        "attachments": [{"filename": "a", "content": "AAAA"},
                        {"filename": "b", "content": "AAAA"},
                        {"filename": "c", "content": "%%%"}]})
    assert bad.status in (400, 422)
    assert bad.json()["field"] == "attachments[2].content"
    far = tern.http("POST", "/v1/send", json={
        "from": f"news@{DKIM_DOMAIN}", "to": address("refused"), "text": "x",
        "send_at": rfc3339(time.time() + 40 * 86400)})
    assert far.status in (400, 422)
    assert far.json()["field"] == "send_at"
