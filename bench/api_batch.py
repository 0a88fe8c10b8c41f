#!/usr/bin/env python3
"""The API alone: N messages posted one per request to /v1/send, then the same N in
batches to /v1/send/batch, each from CLIENTS keep-alive connections, against a private
Redis. Prints messages per second, the API's CPU seconds per 1000 messages, and Redis
commands and round trips (MULTI) per message for each. Nothing but the API runs, so this
is the cost of accepting, building and storing, not of delivering.

    python3 bench/api_batch.py [N=20000] [BATCH=1000]     (CLIENTS=4, TERN_BIN_DIR)
"""

import http.client
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
import harness  # noqa: E402

KEY = "bench-key"
CLIENTS = int(os.environ.get("CLIENTS", "4"))


def message(i):
    return {"from": "news@bench.example", "to": f"user{i}@inbox.example",
            "subject": f"Bench {i}", "text": "Hello there.\n" * 40, "metadata": {"n": i}}


def post_all(port, path, bodies):
    """Posts `bodies` from CLIENTS connections; returns the seconds it took."""
    chunks = [bodies[i::CLIENTS] for i in range(CLIENTS)]
    failures = []

    def client(chunk):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for body in chunk:
            conn.request("POST", path, body=body, headers={
                "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
            reply = conn.getresponse()
            data = reply.read()
            if reply.status not in (200, 202):
                failures.append((reply.status, data[:200]))
        conn.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in chunks]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"{len(failures)} refused, first: {failures[0]}")
    return time.monotonic() - started


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def commands(redis):
    """Commands Redis has run so far, and MULTIs among them (INFO commandstats)."""
    text = redis("INFO", "commandstats")
    text = text.decode() if isinstance(text, bytes) else text
    calls = {}
    for line in text.splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line.split(":", 1)
            calls[name] = int(rest.split("calls=")[1].split(",")[0])
    return sum(calls.values()), calls.get("cmdstat_multi", 0)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    bin_dir = Path(os.environ.get("TERN_BIN_DIR") or harness.REPO / ".build" / "debug")
    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    redis_server = harness.RedisServer(work / "redis").start()
    port = harness.free_port()
    api = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERN_")}
    env.update({"TERN_REDIS_URL": redis_server.url, "TERN_API_LISTEN": f"127.0.0.1:{port}",
                "TERN_API_KEYS": KEY, "TERN_LOG_LEVEL": "warning",
                "TERN_HOSTNAME": "bench.example"})
    with open(work / "api.stderr", "wb") as err:
        harness.spawn(api.append, [str(bin_dir / "tern-api")], env=env,
                      stdin=harness.subprocess.DEVNULL, stdout=err, stderr=err)
    try:
        redis = redis_server.client()
        harness.wait_for(lambda: _health(port), what="the API answers")
        singles = [json.dumps(message(i)).encode() for i in range(n)]
        batches = [json.dumps({"messages": [message(j) for j in range(i, min(n, i + batch))]})
                   .encode() for i in range(0, n, batch)]
        print(f"{n} messages of {len(singles[0])} B of JSON, {CLIENTS} clients, "
              f"binaries in {bin_dir}")
        for name, path, bodies in (("/v1/send", "/v1/send", singles),
                                   (f"/v1/send/batch x{batch}", "/v1/send/batch", batches)):
            redis("FLUSHALL")
            cpu, (calls, multis) = cpu_seconds(api[0].pid), commands(redis)
            seconds = post_all(port, path, bodies)
            cpu = cpu_seconds(api[0].pid) - cpu
            calls2, multis2 = commands(redis)
            stored = redis("XLEN", "tern:stream:submit")
            assert stored == n, (stored, n)
            print(f"{name:24} {n / seconds:8.0f} msg/s  api CPU {1000 * cpu / n:6.3f} s/1000  "
                  f"redis {(calls2 - calls) / n:5.2f} commands/msg, "
                  f"{(multis2 - multis) / n:6.4f} MULTI/msg")
    finally:
        harness.stop_process(api[0])
        redis_server.stop()


def _health(port):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()
