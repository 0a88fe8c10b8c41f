"""Two built tern-sender processes sharing one Redis keep one group's connection limit.

Its own Redis, test world and peer (testworld/peer.py answering each final dot 0.3 s late,
so sessions overlap); the two senders read the `ready` entries this test writes the way the
scheduler would. With TERN_GROUP_MAX_CONNECTIONS=2 and four deliveries in flight in each
process, the peer must never see more than two connections at once, and every message
must arrive.
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
            "TERN_GROUP_MAX_CONNECTIONS": "2", "TERN_SENDER_CONCURRENCY": "4",
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
        assert counters["max_open"] == 2
    finally:
        for p in reversed(processes):
            harness.stop_process(p)
        world.stop()
        redis.stop()
