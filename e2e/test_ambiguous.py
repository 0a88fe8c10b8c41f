"""A connection lost after the final dot, through the built daemons.

Its own Redis and stack on the shared test world, plus testworld/peer.py as the MX host of
lost.example, closing every connection after the final dot without a reply. The sender
reports the attempt `ambiguous`; the scheduler sends it once more after
TERN_AMBIGUOUS_RETRY_DELAY (2 s here, while the retry schedule says an hour), and after
that resend takes the message as delivered, saying in its history that delivery is unknown.
"""

import json
import sys
import subprocess

import pytest

import harness

PEER_ADDR = "127.0.0.53"


@pytest.fixture
def lost_stack(tmp_path, world):
    world.set_records({"lost.example": {"MX": [[10, "mx.lost.example"]]},
                       "mx.lost.example": {"A": [PEER_ADDR]}})
    stats = tmp_path / "peer.json"
    peer = subprocess.Popen(
        [sys.executable, str(harness.REPO / "testworld" / "peer.py"), "--port",
         str(world.smtp_port), "--stats", str(stats), f"{PEER_ADDR}=dropdot"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "peer.log", "wb"))
    harness.wait_for(stats.exists, what="peer")
    redis = harness.RedisServer(tmp_path / "redis")
    redis.start()
    stack = harness.TernStack(tmp_path / "tern", redis, world, extra_env={
        "TERN_RETRY_DELAYS": "1h", "TERN_AMBIGUOUS_RETRY_DELAY": "2s", "TERN_MAX_AGE": "600s",
        "TERN_LOG_LEVEL": "info"})
    stack.start()
    yield stack, stats
    stack.stop()
    redis.stop()
    harness.stop_process(peer)


def test_an_ambiguous_attempt_is_resent_once_then_taken_as_delivered(lost_stack):
    stack, stats = lost_stack
    mid = stack.send(to="someone@lost.example", subject="lost", text="x")
    stack.wait_for_state(mid, "delivered", timeout=60)

    history = [json.loads(h) for h in
               stack.redis("LRANGE", f"{harness.PREFIX}hist:{mid}", "0", "-1")]
    attempts = [h for h in history if h.get("ambiguous")]
    assert [h["event"] for h in attempts] == ["deferred", "delivered"], history
    assert "delivery unknown" in attempts[-1]["note"]
    # The resend came after the ambiguous delay, not the retry schedule's hour.
    assert attempts[0]["next_attempt_at"] < attempts[1]["at"]
    assert all(h["engagement_source"] == "default" for h in attempts)
    recorded = [json.loads(a) for a in
                stack.redis("LRANGE", f"{harness.PREFIX}att:{mid}", "0", "-1")]
    assert [a["outcome"] for a in recorded] == ["ambiguous", "ambiguous"], recorded
    assert all(a["timings"]["data_ms"] >= 0 and a["stage"] == "dot" for a in recorded)
    harness.wait_for(lambda: json.loads(stats.read_text())[PEER_ADDR]["messages"] >= 2,
                     what="both copies at the peer")
    assert json.loads(stats.read_text())[PEER_ADDR]["messages"] == 2
