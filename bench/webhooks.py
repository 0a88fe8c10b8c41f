"""How fast one API process posts webhooks: N events of M messages, written straight into
`events` before the API starts, posted to one receiver on loopback (Python's
ThreadingHTTPServer, which is likely the slower side: the figure is a floor).

    python3 bench/webhooks.py [EVENTS] [EVENTS_PER_MESSAGE]

Prints events/s from the API's start until the receiver holds every event, the CPU seconds
of the API and of Redis per 1000 events (/proc/<pid>/stat), the connections the receiver
saw, duplicates, and whether every message's events arrived in order. Uses .build/release
when built, else .build/debug (TERN_BIN_DIR overrides). Everything listens on 127.0.0.1 and is stopped by pid at the end.
"""

import json
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
import harness  # noqa: E402

EVENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 6000
PER_MESSAGE = int(sys.argv[2]) if len(sys.argv) > 2 else 3
SECRET = "bench-secret-0123456789"


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    work = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    received, lock = [], threading.Lock()
    connections = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            with lock:
                connections[0] += 1

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            event = json.loads(body)
            with lock:
                received.append((event["message_id"], event["id"]))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()

    redis = harness.RedisServer(work / "redis")
    redis.start()
    r = redis.client()
    stream = harness.PREFIX + "stream:events"
    r("XGROUP", "CREATE", stream, "webhooks", "0", "MKSTREAM")
    order = {}
    for n in range(EVENTS):
        mid = f"m{n // PER_MESSAGE:07d}"
        kind = ["accepted", "deferred", "delivered"][min(n % PER_MESSAGE, 2)]
        doc = json.dumps({"at": "2026-12-04T18:00:00.000Z", "event": kind, "id": mid,
                          "metadata": {}, "org": "acme", "to": "a@inbox.example"})
        entry = r("XADD", stream, "*", "id", mid, "event", kind, "json", doc)
        order.setdefault(mid, []).append(entry)

    bin_dir = Path(os.environ.get("TERN_BIN_DIR") or (
        harness.REPO / ".build" / ("release" if (harness.REPO / ".build/release/tern-api")
                                   .exists() else "debug")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERN_")}
    env.update({
        "TERN_REDIS_URL": redis.url, "TERN_REDIS_PREFIX": harness.PREFIX,
        "TERN_API_LISTEN": f"127.0.0.1:{harness.free_port()}", "TERN_API_KEYS": "k",
        "TERN_LOG_LEVEL": "warning",
        "TERN_WEBHOOKS": json.dumps([{"name": "bench", "secret": SECRET,
                                      "url": f"http://127.0.0.1:{server.server_port}/"}]),
        **dict(kv.split("=", 1) for kv in os.environ.get("BENCH_ENV", "").split() if kv),
    })
    api = []
    redis_cpu = cpu_seconds(redis.process.pid)
    started = time.monotonic()
    with open(work / "tern-api.stderr", "ab") as err:
        harness.spawn(api.append, [str(bin_dir / "tern-api")], env=env, stderr=err,
                      stdout=err)
    try:
        harness.wait_for(lambda: len(received) >= EVENTS, 600, interval=0.05,
                         what="every event at the receiver")
        elapsed = time.monotonic() - started
        api_cpu = cpu_seconds(api[0].pid)
        redis_cpu = cpu_seconds(redis.process.pid) - redis_cpu
        with lock:
            firsts = {}
            for mid, eid in received:
                firsts.setdefault(mid, [])
                if eid not in firsts[mid]:
                    firsts[mid].append(eid)
            in_order = all(firsts.get(mid) == ids for mid, ids in order.items())
            duplicates = len(received) - sum(len(v) for v in firsts.values())
        print(f"{EVENTS} events of {len(order)} messages from {bin_dir.name}, "
              f"{env.get('TERN_WEBHOOK_CONCURRENCY', '8')} posts in flight: "
              f"{EVENTS / elapsed:.0f} events/s ({elapsed:.1f} s); "
              f"CPU per 1000 events: api {1000 * api_cpu / EVENTS:.2f} s, "
              f"redis {1000 * redis_cpu / EVENTS:.2f} s; connections {connections[0]}; "
              f"duplicates {duplicates}; "
              f"in order per message: {in_order}")
    finally:
        for p in api:
            harness.stop_process(p)
        r.close()
        redis.stop()
        server.shutdown()


if __name__ == "__main__":
    main()
