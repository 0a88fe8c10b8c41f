"""DKIM end to end: messages sent through the API arrive at the test world's MX hosts
signed, and dkimpy verifies every signature with the public keys served by the world's DNS.

The session's stack signs mail From tern.example with an RSA-2048 key (selector r1) and an
Ed25519 key (e1), both made with `openssl genpkey` at the start (conftest.py).
"""

import os
import subprocess
import uuid
from pathlib import Path

from harness import (REPO, DKIM_DOMAIN, address, delivered_once, dkim_tags, dkim_verify,
                     free_port, make_dkim_keys, wait_for)


def delivered(tern, world, message_id, to):
    return delivered_once(tern, world, message_id, to).raw


def record(tern, message_id):
    return tern.redis.hgetall(tern.key(f"msg:{message_id}"))


def send_stored(tern, **fields):
    """Sends while the message's organisation is paused, so that its stored bytes can be
    read before it goes (they leave the record at the final state); returns the id and
    those bytes once the pause is lifted."""
    org = "dkim" + uuid.uuid4().hex[:8]
    assert tern.http("PUT", f"/v1/pauses/org/{org}").status == 201
    try:
        message_id = tern.send(org=org, **fields)

        def held():
            return any(h["event"] == "held" for h in tern.message(message_id)["history"])
        wait_for(held, 30, what="the message held by the pause")
        body = record(tern, message_id)["body"].encode("utf-8", "surrogateescape")
    finally:
        assert tern.http("DELETE", f"/v1/pauses/org/{org}").status == 200
    return message_id, body


def test_built_message_arrives_signed_with_both_keys(tern, world):
    to = address("dkim")
    message_id, stored = send_stored(
        tern, to=to, subject=f"Grüße {uuid.uuid4().hex[:6]} — long enough to be folded by Tern "
                       "when it writes the field",
        text="Hällo,\n\tthis  line has   runs of spaces \n.a dot-stuffed line\n"
             "and trailing blank lines\n\n\n",
        html="<p>Hällo <b>wörld</b></p>",
        headers={"List-Unsubscribe": "<https://tern.example/u/1>",
                 "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"})
    raw = delivered(tern, world, message_id, to)
    assert b"\r\n.a dot-stuffed line" in raw.replace(b"=\r\n", b"")

    assert dkim_verify(raw, world) == ["pass", "pass"]
    tags = dkim_tags(raw)
    assert [t["a"] for t in tags] == ["rsa-sha256", "ed25519-sha256"]
    assert [t["s"] for t in tags] == ["r1", "e1"]
    for t in tags:
        assert t["d"] == DKIM_DOMAIN and t["c"] == "relaxed/relaxed" and "l" not in t
        assert t["h"].startswith("from:from:to:subject:date:message-id:")
        assert "list-unsubscribe:list-unsubscribe-post" in t["h"]
    # Signed once at acceptance: what arrived is the stored record's bytes, which the
    # record no longer holds once the message is delivered.
    assert raw.endswith(stored)
    assert "body" not in record(tern, message_id)


def test_raw_8bit_message_is_signed(tern, world):
    to = address("dkim-raw")
    raw_message = (f"From: Zoë <news@{DKIM_DOMAIN}>\r\nTo: {to}\r\n"
                   "Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\nMIME-Version: 1.0\r\n"
                   "Content-Type: text/plain; charset=utf-8\r\n"
                   "Content-Transfer-Encoding: 8bit\r\n\r\n"
                   "Hällo  Wörld \r\n→ ✓ 日本語\r\n\r\n\r\n")
    message_id = tern.send(to=to, raw=raw_message)
    raw = delivered(tern, world, message_id, to)
    assert dkim_verify(raw, world) == ["pass", "pass"]
    assert raw.endswith(raw_message.encode())


def test_retried_message_sends_the_same_signed_bytes(tern, world):
    to = address("defer-once")
    message_id, stored = send_stored(tern, to=to, subject="retry",
                                     text="Same bytes every attempt\n")
    raw = delivered(tern, world, message_id, to)
    assert tern.event_names(message_id) == ["accepted", "deferred", "delivered"]
    assert dkim_verify(raw, world) == ["pass", "pass"]
    assert raw.endswith(stored)


def test_domain_without_key_is_sent_unsigned_and_counted(tern, world):
    before = tern.counter("dkim.unsigned")
    to = address("nodkim")
    message_id = tern.send(to=to, **{"from": "news@inbox.example"}, subject="plain",
                           text="no key for this domain\n")
    raw = delivered(tern, world, message_id, to)
    assert b"DKIM-Signature" not in raw
    assert tern.counter("dkim.unsigned") == before + 1


def test_a_bad_keys_file_stops_the_api_with_exit_78(tmp_path):
    """A key the file names but that is not there: tern-api refuses to start (EX_CONFIG)
    and says which file and line. Needs only the built binary."""
    binary = Path(os.environ.get("TERN_BIN_DIR") or REPO / ".build" / "debug") / "tern-api"
    keys, _ = make_dkim_keys(tmp_path, selectors={"r1": "rsa-sha256"})
    keys.write_text(keys.read_text() + f"{DKIM_DOMAIN} e1 ed25519-sha256 missing.pem\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERN_")}
    env.update(TERN_API_KEYS="k", TERN_DKIM_KEYS=str(keys),
               TERN_API_LISTEN=f"127.0.0.1:{free_port()}",
               TERN_REDIS_URL=f"redis://127.0.0.1:{free_port()}")
    result = subprocess.run([str(binary)], env=env, capture_output=True, text=True,
                            timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 78, result.stderr
    assert f"TERN_DKIM_KEYS: {keys} line 3: {tmp_path}/missing.pem does not exist" \
        in result.stderr, result.stderr
