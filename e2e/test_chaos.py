"""Crashes lose nothing: messages flow through the whole pipeline while the api, the
scheduler and the sender are killed with SIGKILL at random moments and restarted. At the
end every accepted message (every 202) has exactly one final event and reached the test
world's MX; deliveries made twice (possible only when a sender dies after the remote
accepted the message and before it wrote the result) are counted and reported.

20,000 messages by default (about two minutes here); TERN_CHAOS_MESSAGES changes it."""

import http.client
import os
import random
import threading
import time
import uuid

import pytest

import harness

MESSAGES = int(os.environ.get("TERN_CHAOS_MESSAGES", "20000"))
VICTIMS = ("tern-api", "tern-scheduler", "tern-sender")


@pytest.fixture
def chaos_stack(tmp_path, world):
    redis = harness.RedisServer(tmp_path / "redis")
    redis.start()
    providers = tmp_path / "providers.json"
    # The loopback test world is no real provider: let the throttle stay out of the way.
    providers.write_text('{"providers": [{"name": "default", "messagesPerMinute": 600000,'
                         ' "connectionsPerIP": 1000}]}')
    stack = harness.TernStack(tmp_path / "tern", redis, world, extra_env={
        "TERN_PROVIDERS_FILE": str(providers),
        "TERN_MAX_AGE": "600s",
        "TERN_SENDER_CLAIM_IDLE": "5s",
        "TERN_SCHEDULER_CLAIM_IDLE": "5s",
        # A session that never greets is deferred after this, not RFC 5321's 5 minutes.
        "TERN_SMTP_TIMEOUT_GREETING": "20s",
        "TERN_LOG_LEVEL": "info",
    })
    stack.start()
    yield stack
    stack.stop()
    redis.stop()


def test_kill_9_at_random_moments_loses_no_message(chaos_stack, world):
    stack = chaos_stack
    run = uuid.uuid4().hex[:8]
    accepted = {}          # message id -> recipient
    refused = 0
    done = threading.Event()

    def send_all():
        nonlocal refused
        try:
            for n in range(MESSAGES):
                rcpt = f"chaos-{run}-{n}@inbox.example"
                try:
                    reply = stack.http("POST", "/v1/send", json={
                        "from": harness.SENDER, "to": rcpt, "subject": f"chaos {n}",
                        "text": "x"}, timeout=5)
                except (OSError, http.client.HTTPException):
                    # The api was down or died mid-answer (an incomplete read is no OSError):
                    # the client does not know, and would retry.
                    refused += 1
                    time.sleep(0.05)
                    continue
                if reply.status == 202:
                    accepted[reply.json()["id"]] = rcpt
                else:
                    refused += 1
        finally:
            done.set()            # whatever happened, the killing stops

    sender = threading.Thread(target=send_all)
    sender.start()
    rng = random.Random(run)
    kills = {v: 0 for v in VICTIMS}
    while not done.is_set():
        time.sleep(rng.uniform(0.2, 0.8))
        victim = rng.choice(VICTIMS)
        stack.crash(victim)
        kills[victim] += 1
    sender.join()
    assert len(accepted) >= MESSAGES // 2, (len(accepted), refused)
    assert refused + len(accepted) == MESSAGES, "the sending thread stopped early"

    redis = stack.redis_server.client()
    try:
        def all_final():
            states = {i: redis("HGET", stack.key("msg:" + i), "state") for i in accepted}
            pending = {i: s for i, s in states.items() if s not in harness.FINAL_STATES}
            return not pending or {"pending": len(pending),
                                   "example": list(pending.items())[:5]}
        def settled():
            return all_final() is True
        try:
            harness.wait_for(settled, timeout=float(os.environ.get("TERN_CHAOS_SETTLE", "240")),
                             interval=0.5,
                             what="every accepted message to reach a final state")
        except AssertionError:
            ready = stack.key("stream:ready")
            raise AssertionError(
                f"not final: {all_final()}; ready: {redis('XLEN', ready)} entries, "
                f"groups {redis.xinfo_groups(ready)}, pending "
                f"{redis('XPENDING', ready, 'sender')}; results: "
                f"{redis('XLEN', stack.key('stream:results'))}, "
                f"{redis.xinfo_groups(stack.key('stream:results'))}")

        finals = {}
        for _, fields in redis.xrange(stack.key("stream:events")):
            if fields.get("event") in harness.FINAL_STATES and fields.get("id") in accepted:
                finals.setdefault(fields["id"], []).append(fields["event"])
        states = {i: redis("HGET", stack.key("msg:" + i), "state") for i in accepted}
    finally:
        redis.close()

    assert all(s == "delivered" for s in states.values()), \
        {i: s for i, s in states.items() if s != "delivered"}
    more_than_one = {i: e for i, e in finals.items() if len(e) != 1}
    missing = [i for i in accepted if i not in finals]
    assert not more_than_one and not missing, (more_than_one, missing)

    spooled = {}
    for m in world.spool_messages():
        for rcpt in m.rcpt_tos:
            if rcpt.startswith(f"chaos-{run}-"):
                spooled[rcpt] = spooled.get(rcpt, 0) + 1
    lost = [r for r in accepted.values() if r not in spooled]
    duplicates = sum(c - 1 for c in spooled.values())
    print(f"\nchaos: {len(accepted)} accepted, {refused} refused while the api was down, "
          f"kills {kills}, {duplicates} delivered twice")
    assert not lost, lost
    # A duplicate needs a sender killed between the remote's 250 to the final dot and the
    # result it writes; every session in that window at the kill becomes one.
    if kills["tern-sender"] == 0:
        assert duplicates == 0
