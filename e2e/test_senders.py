"""Two built tern-sender processes sharing one Redis keep one connection limit per source IP
and provider.

Its own Redis, test world and peer (testworld/peer.py answering each final dot 0.3 s late,
so sessions overlap); the two senders read the `ready` entries this test writes the way the
scheduler would. With four deliveries in flight in each process and a limit of two (set by
TERN_GROUP_MAX_CONNECTIONS, or by the provider profile's connectionsPerIP), the peer must
never see more than two connections at once, and every message must arrive; a profile's
messagesPerConnection bounds the messages of each session.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import harness

PEER_ADDR = "127.0.0.51"
COUNT = 16


def test_the_group_limit_holds_across_two_sender_processes(tmp_path):
    counters = run_two_senders(tmp_path, {"TERN_GROUP_MAX_CONNECTIONS": "2"})
    assert counters["max_open"] == 2


def test_a_profiles_connection_limits_hold_across_two_sender_processes(tmp_path):
    providers = tmp_path / "providers.json"
    providers.write_text(json.dumps({"providers": [
        {"name": "heldco", "domains": ["held.example"], "messagesPerMinute": 600,
         "connectionsPerIP": 2, "messagesPerConnection": 3}]}))
    counters = run_two_senders(tmp_path, {"TERN_PROVIDERS_FILE": str(providers),
                                          "TERN_CONNECTION_IDLE": "1s"})
    assert counters["max_open"] == 2
    # Every session closed (the last ones when idle): never more than three messages
    # each, and all but each sender's last session exactly three.
    sessions = counters["per_connection"]
    assert sum(sessions) == COUNT and max(sessions) == 3, sessions
    assert sessions.count(3) >= COUNT // 3 - 2, sessions


def peer_counters(tmp_path):
    return json.loads((tmp_path / "peer.json").read_text())[PEER_ADDR]


def run_two_senders(tmp_path, extra_env):
    """Sends COUNT messages through two sender processes; the peer's counters after."""
    redis = harness.RedisServer(tmp_path / "redis").start()
    world = harness.WorldProcess(tmp_path / "world", records={
        "held.example": {"MX": [[10, "mx.held.example"]]},
        "mx.held.example": {"A": [PEER_ADDR]}})
    processes = []
    try:
        world.start()
        stats = tmp_path / "peer.json"
        processes.append(subprocess.Popen(
            [sys.executable, str(harness.REPO / "testworld" / "peer.py"), "--port",
             str(world.smtp_port), "--stats", str(stats), f"{PEER_ADDR}=delay:0.3"],
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "peer.log", "wb")))
        harness.wait_for(stats.exists, what="peer")

        bin_dir = Path(os.environ.get("TERN_BIN_DIR") or harness.REPO / ".build" / "debug")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TERN_")}
        env.update({
            "TERN_REDIS_URL": redis.url, "TERN_DNS_RESOLVER": f"127.0.0.1:{world.dns_port}",
            "TERN_SMTP_PORT": str(world.smtp_port), "TERN_VERP_DOMAIN": harness.VERP_DOMAIN,
            "TERN_VERP_SECRET": "ab" * 32, "TERN_HOSTNAME": "out1.tern.example",
            "TERN_SENDER_CONCURRENCY": "4", **extra_env,
        })
        for name in ("s1", "s2"):
            processes.append(subprocess.Popen(
                [str(bin_dir / "tern-sender")], env={**env, "TERN_INSTANCE": name},
                stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{name}.log", "wb")))

        r = redis.client()
        for i in range(COUNT):
            mid = f"e2e{i:04d}"
            r("HSET", f"tern:msg:{mid}", "id", mid, "pool", "default", "from", harness.SENDER,
              "rcpt", f"m{i}@held.example", "domain", "held.example",
              "body", "Subject: held\r\n\r\nHello.\r\n", "state", "sending")
            r("XADD", "tern:stream:ready", "*", "id", mid, "attempt", "1", "ip", "127.0.0.2",
              "helo", "out1.tern.example")

        def all_results():
            return len(r.xrange("tern:stream:results")) >= COUNT
        harness.wait_for(all_results, timeout=60, what="results")
        outcomes = [fields["outcome"] for _, fields in r.xrange("tern:stream:results")]
        assert outcomes == ["delivered"] * COUNT

        time.sleep(0.3)    # the peer writes its counters every 100 ms
        counters = json.loads(stats.read_text())[PEER_ADDR]
        assert counters["messages"] == COUNT
        if "TERN_CONNECTION_IDLE" in extra_env:
            harness.wait_for(lambda: sum(peer_counters(tmp_path)["per_connection"]) == COUNT,
                             timeout=20, what="every session closed")
            counters = peer_counters(tmp_path)
        return counters
    finally:
        for p in reversed(processes):
            harness.stop_process(p)
        world.stop()
        redis.stop()
