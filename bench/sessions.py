#!/usr/bin/env python3
"""The sender's memory while it holds many SMTP sessions open against a slow server.

    bench/run.sh sessions [N]        (default 2000)

Starts a private Redis, the test world's DNS with hold.example's MX on 127.0.0.48, the
test peer (testworld/peer.py) there answering every final dot ten minutes late, and one
tern-sender from .build/release with TERN_SENDER_CONCURRENCY=N. It writes N message records
and `ready` entries straight into Redis (as the scheduler would), waits until the peer holds
N sessions open at once, and prints the sender's resident memory then, next to what it used
idle. Everything listens on 127.0.0.0/8 and is stopped by pid at the end.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tern_bench import (BIN, ROOT, Resp, free_port, redis_up, stop_all,  # noqa: E402
                        wait_for)

PEER_ADDR = "127.0.0.48"


def rss_mb(pid, field="VmRSS:"):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv):
    n = int(argv[0]) if argv else 2000
    work = Path(tempfile.mkdtemp(prefix="bench-tern-sessions-", dir="/tmp"))
    procs = []

    def spawn(name, argv, env=None):
        log = open(work / f"{name}.log", "wb")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        procs.append(p)
        return p

    try:
        redis_port = free_port()
        spawn("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port),
                        "--save", "", "--appendonly", "no", "--dir", str(work)])
        wait_for("redis", lambda: redis_up(redis_port))
        redis = Resp(redis_port)

        (work / "world.json").write_text(json.dumps({"records": {
            "hold.example": {"MX": [[10, "mx.hold.example"]]},
            "mx.hold.example": {"A": [PEER_ADDR]}}}))
        described = work / "described.json"
        spawn("world", [sys.executable, str(ROOT / "testworld" / "world.py"), "--config",
                        str(work / "world.json"), "--dns-port", "0", "--smtp-port", "0",
                        "--describe", str(described)])
        wait_for("world", described.exists)
        dns_port = json.loads(described.read_text())["dns"]["port"]

        smtp_port = free_port()
        stats = work / "peer.json"
        spawn("peer", [sys.executable, str(ROOT / "testworld" / "peer.py"), "--port",
                       str(smtp_port), "--stats", str(stats), f"{PEER_ADDR}=delay:600"])
        wait_for("peer", stats.exists)

        # hold.example would fall to the `default` profile, which allows 5 connections per IP:
        # a profile of its own lets the one IP hold all N.
        providers = work / "providers.json"
        providers.write_text(json.dumps({"providers": [{
            "name": "hold", "domains": ["hold.example"], "messagesPerMinute": 6_000_000,
            "connectionsPerIP": n, "messagesPerConnection": 100}]}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("TERN_")}
        env.update({
            "TERN_REDIS_URL": f"redis://127.0.0.1:{redis_port}", "TERN_LOG_LEVEL": "warning",
            "TERN_INSTANCE": "bench", "TERN_HOSTNAME": "out1.tern.example",
            "TERN_DNS_RESOLVER": f"127.0.0.1:{dns_port}", "TERN_SMTP_PORT": str(smtp_port),
            "TERN_VERP_DOMAIN": "bounces.tern.example", "TERN_VERP_SECRET": "5a" * 32,
            "TERN_SENDER_CONCURRENCY": str(n), "TERN_GROUP_MAX_CONNECTIONS": str(n),
            "TERN_SENDER_GRACE": "0s", "TERN_PROVIDERS_FILE": str(providers),
        })
        sender = spawn("sender", [str(BIN / "tern-sender")], env)
        time.sleep(1.0)
        idle = rss_mb(sender.pid)

        body = "Subject: hold\r\n\r\n" + ("x" * 76 + "\r\n") * 26
        for i in range(n):
            mid = f"hold{i:06d}"
            redis("HSET", f"tern:msg:{mid}", "id", mid, "pool", "default",
                  "from", "news@tern.example", "rcpt", f"u{i}@hold.example",
                  "domain", "hold.example", "body", body, "state", "sending")
            redis("XADD", "tern:stream:ready", "*", "id", mid, "attempt", "1",
                  "ip", "127.0.0.2", "helo", "out1.tern.example")

        def held():
            data = json.loads(stats.read_text())[PEER_ADDR]
            return data["open"] >= n
        wait_for(f"{n} sessions", held, timeout=120)
        time.sleep(1.0)
        rss = rss_mb(sender.pid)
        print(f"sender RSS holding {n} sessions: {rss:.0f} MB (idle {idle:.0f} MB, "
              f"{(rss - idle) * 1024 / n:.0f} KB per session with its 2 KB message)")
    finally:
        stop_all(procs)


if __name__ == "__main__":
    main(sys.argv[1:])
