"""CFBL (RFC 9477) end to end: with TERN_CFBL_ADDRESS set, a message delivered through
the stack carries CFBL-Address and CFBL-Feedback-ID; a provider's complaint that returns
only those fields of the original (no Return-Path, no Message-ID) becomes a `complained`
event for the message; one whose CFBL-Feedback-ID names another message with this tag is
counted as forged and changes nothing.

Runs its own stack (the session's has no CFBL address, and its other tests compare the
exact header of what they send). That DKIM signs both fields is checked in-process
(APIDKIMTests)."""

import uuid

import pytest

import harness


@pytest.fixture
def cfbl_stack(tmp_path, world):
    redis = harness.RedisServer(tmp_path / "redis")
    redis.start()
    stack = harness.TernStack(tmp_path / "tern", redis, world, extra_env={
        "TERN_CFBL_ADDRESS": harness.FBL_ADDRESS, "TERN_LOG_LEVEL": "info"})
    stack.start()
    yield stack
    stack.stop()
    redis.stop()


def delivered(stack, world):
    to = f"cfbl+{uuid.uuid4().hex[:12]}@inbox.example"
    message_id = stack.send(to=to, subject="news", text="Hello.\n")
    stack.wait_for_state(message_id, "delivered")
    spooled = world.spool_for(to)
    assert len(spooled) == 1
    return message_id, to, spooled[0].raw


def field(raw, name):
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    for line in head.split("\r\n"):
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return None


def complain(stack, to, feedback_id):
    # A redacted original: From, To and the CFBL fields only.
    original = (f"From: {harness.SENDER}\r\nTo: {to}\r\n"
                f"CFBL-Address: {harness.FBL_ADDRESS}; report=arf\r\n"
                f"CFBL-Feedback-ID: {feedback_id}\r\n\r\n").encode()
    report = harness.build_arf(original, to)
    with stack.bounce_smtp() as smtp:
        assert smtp.mail("fbl@fbl.inbox.example")[0] == 250
        assert smtp.rcpt(harness.FBL_ADDRESS)[0] == 250
        assert smtp.data(report)[0] == 250


def test_complaint_names_its_message_by_cfbl_feedback_id(cfbl_stack, world):
    message_id, to, raw = delivered(cfbl_stack, world)
    assert field(raw, "CFBL-Address") == f"{harness.FBL_ADDRESS}; report=arf"
    feedback_id = field(raw, "CFBL-Feedback-ID")
    assert feedback_id.startswith(message_id + ":")

    complain(cfbl_stack, to, feedback_id)
    complained = cfbl_stack.wait_for_event(message_id, "complained")
    assert to in complained.raw_json

    # The first message's tag on the second message's id: forged.
    other_id, other_to, _ = delivered(cfbl_stack, world)
    forged_before = cfbl_stack.counter("bounce.cfbl_forged")
    unmatched_before = cfbl_stack.counter("bounce.unmatched")
    complain(cfbl_stack, other_to, other_id + ":" + feedback_id.split(":")[1])
    # Counted as forged, and as a report that names no message: no entry was written.
    assert cfbl_stack.counter("bounce.cfbl_forged") == forged_before + 1
    assert cfbl_stack.counter("bounce.unmatched") == unmatched_before + 1
    assert not [e for e in cfbl_stack.events(other_id) if e.event == "complained"]
