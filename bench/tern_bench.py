#!/usr/bin/env python3
"""Tern's whole pipeline on loopback: HTTP API -> Redis -> scheduler -> sender(s) -> smtp-sink.

    bench/run.sh [N] [SIZE ...]          (defaults: 20000 messages, sizes 2048 and 20480)

For each size and each DKIM mode (DKIM=off, on or both, the default) it first runs Postfix's
`/work/shared/bench/postfix-relay.sh N SIZE [dkim]` (Postfix, with OpenDKIM when signing),
then Tern on the same sink, and prints the ratio of the two delivered rates and of their CPU
per message (POSTFIX=0 skips Postfix). With DKIM on, the api signs every message with an
RSA-2048 key for bench.example made in the run's folder (TERN_DKIM_KEYS), as OpenDKIM does
for Postfix. For each run it starts a private Redis, the test world's DNS (testworld/world.py) with
bench.example's MX pointing at the sink, the api, scheduler and sender(s) from
.build/release, and Postfix's smtp-sink through /work/shared/bench/sink.sh (the same sink
and address the Postfix figures were measured with). It posts N messages to /v1/send from
CLIENTS concurrent keep-alive connections, waits until the sink holds all N, and prints:
delivered msg/s (first request to last message at the sink), CPU seconds per 1000 messages
of each daemon and of Redis, peak RSS of each daemon, Redis commands per message (INFO
commandstats delta), and the injector's own rate. Everything listens on 127.0.0.0/8 only and
is stopped by pid at the end.

Environment: DKIM (both), POSTFIX (1), BATCH (100 messages per POST /v1/send/batch; 0 posts
one message per /v1/send; a server without the batch route falls back to single sends),
CLIENTS (64; 8 with batches), SENDERS (1), BIN_DIR (.build/release), SINK_ADDR (127.0.0.9:2526),
BENCH_ENV (extra "K=V K=V" for the daemons, e.g. TERN_GROUP_MAX_CONNECTIONS=20), REDIS_ARGS
(more redis-server settings, "--name value ..."), PROFILE
(a daemon's name, e.g. sender1: `perf record -g` samples it during the run; `perf report -i`
the file it names). valgrind 3.19's callgrind dies at start-up on these daemons here.
"""

import asyncio
import json
import re
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "e2e"))
from harness import Resp  # noqa: E402  (the e2e tests' small RESP client)

SHARED_BENCH = Path(os.environ.get("SHARED_BENCH", "/work/shared/bench"))
BIN = Path(os.environ.get("BIN_DIR", ROOT / ".build" / "release"))
SINK_ADDR = os.environ.get("SINK_ADDR", "127.0.0.9:2526")
BATCH = int(os.environ.get("BATCH", "100"))
CLIENTS = int(os.environ.get("CLIENTS", "8" if BATCH > 1 else "64"))
DKIM_MODES = {"off": [False], "on": [True], "both": [False, True]}
POSTFIX = os.environ.get("POSTFIX", "1") != "0"
SENDERS = int(os.environ.get("SENDERS", "1"))
API_KEY = "benchkey"
# PROFILE=scheduler (or api, sender1): sample that daemon with `perf record` during the run.
PROFILE = os.environ.get("PROFILE", "")
# COMMANDS=all: every Redis command a message costs, and the time Redis spent in each.
ALL_COMMANDS = os.environ.get("COMMANDS", "") == "all"
# Redis's persistence: `always` (fsync before answering, as Postfix syncs its queue file
# before its 250), `everysec`, or `no` (no append-only file at all).
AOF = os.environ.get("AOF", "everysec")
if AOF not in ("always", "everysec", "no"):
    sys.exit(f"AOF must be always, everysec or no, not {AOF!r}")
if PROFILE == "sender":
    PROFILE = "sender1"
TICK = os.sysconf("SC_CLK_TCK")


def loopback(host):
    if not host.startswith("127."):
        sys.exit(f"refusing non-loopback address {host}")
    return host


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, predicate, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not ready after {timeout}s")


def redis_up(port):
    try:
        Resp(port)("PING")
        return True
    except OSError:
        return False


def stop_all(procs):
    """Stops the processes we started, last first, by pid: TERM, then KILL after 10 s."""
    for p in reversed(procs):
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()


def cpu_seconds(pid):
    """User and system time of the process and of its children it has reaped: Redis forks
    to rewrite its append-only file, and that work is Redis's too."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICK


def peak_rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def command_calls(redis):
    info = redis("INFO", "commandstats")
    calls = {}
    # Socket reads and writes: about one each per round trip a client makes.
    stats = redis("INFO", "stats")
    for field in ("total_reads_processed", "total_writes_processed"):
        found = re.search(field + r":(\d+)", stats)
        calls[field] = (int(found.group(1)) if found else 0, 0)
    for line in info.splitlines():
        if line.startswith("cmdstat_"):
            name, _, stats = line.partition(":")
            fields = dict(f.split("=") for f in stats.split(","))
            calls[name[8:]] = (int(fields["calls"]), int(fields["usec"]))
    return calls


class Stack:
    """Redis, the DNS world, the sink and the daemons for one run."""

    def __init__(self, workdir):
        self.dir = Path(workdir)
        self.procs = {}
        self.sink_host, self.sink_port = SINK_ADDR.rsplit(":", 1)
        loopback(self.sink_host)

    def spawn(self, name, argv, env=None):
        log = open(self.dir / f"{name}.log", "wb")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[name] = p
        return p

    def dkim_keys(self):
        """An RSA-2048 key for bench.example, as OpenDKIM gets in postfix-relay.sh."""
        key = self.dir / "bench.example.rsa.pem"
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", str(key)], check=True,
                       capture_output=True)
        table = self.dir / "dkim-keys"
        table.write_text(f"bench.example bench rsa-sha256 {key.name}\n")
        return str(table)

    def start(self, dkim=False):
        self.redis_port = free_port()
        self.spawn("redis", ["redis-server", "--bind", "127.0.0.1", "--port",
                             str(self.redis_port), "--save", "", "--dir", str(self.dir)]
                   + (["--appendonly", "no"] if AOF == "no"
                      else ["--appendonly", "yes", "--appendfsync", AOF])
                   + os.environ.get("REDIS_ARGS", "").split())
        wait_for("redis", lambda: redis_up(self.redis_port))
        self.redis = Resp(self.redis_port)

        config = {"records": {
            "bench.example": {"MX": [[10, "mx.bench.example"]]},
            "mx.bench.example": {"A": [self.sink_host]},
        }}
        (self.dir / "world.json").write_text(json.dumps(config))
        describe = self.dir / "world-described.json"
        self.spawn("world", [sys.executable, str(ROOT / "testworld" / "world.py"),
                             "--config", str(self.dir / "world.json"), "--dns-port", "0",
                             "--smtp-port", "0", "--describe", str(describe)])
        wait_for("world", describe.exists)
        self.dns_port = json.loads(describe.read_text())["dns"]["port"]

        self.sink("start")
        # bench.example would fall to the `default` profile and its per-IP ceiling: give it a
        # profile of its own far above anything measured here, so the pipeline is measured.
        providers = self.dir / "providers.json"
        providers.write_text(json.dumps({"providers": [{
            "name": "bench", "domains": ["bench.example"], "messagesPerMinute": 6_000_000,
            "connectionsPerIP": 100, "messagesPerConnection": 100}]}))
        self.api_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TERN_")}
        env.update({
            "TERN_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}",
            "TERN_LOG_LEVEL": "warning",
            "TERN_HOSTNAME": "out1.tern.example",
            "TERN_API_LISTEN": f"127.0.0.1:{self.api_port}",
            "TERN_API_KEYS": API_KEY,
            "TERN_POOLS": "default=127.0.0.2/out1.tern.example",
            # One domain is one group: any fixed pace per group would cap it (0 is the
            # default, said anyway).
            "TERN_GROUP_INTERVAL": "0s",
            "TERN_DNS_RESOLVER": f"127.0.0.1:{self.dns_port}",
            "TERN_SMTP_PORT": self.sink_port,
            "TERN_VERP_DOMAIN": "bounces.tern.example",
            "TERN_VERP_SECRET": "5a" * 32,
            "TERN_PROVIDERS_FILE": str(providers),
        })
        for pair in os.environ.get("BENCH_ENV", "").split():
            key, _, value = pair.partition("=")
            env[key] = value
        api_env = {**env, "TERN_DKIM_KEYS": self.dkim_keys()} if dkim else env
        self.spawn("api", [str(BIN / "tern-api")], api_env)
        self.spawn("scheduler", [str(BIN / "tern-scheduler")], env)
        for i in range(SENDERS):
            self.spawn(f"sender{i + 1}", [str(BIN / "tern-sender")],
                       {**env, "TERN_INSTANCE": f"bench{i + 1}"})
        wait_for("api", self._api_up)
        time.sleep(0.5)

    def _api_up(self):
        try:
            socket.create_connection(("127.0.0.1", self.api_port), timeout=1).close()
            return True
        except OSError:
            return False

    def sink(self, *args):
        env = {**os.environ, "SINK_ADDR": SINK_ADDR, "SINK_DIR": str(self.dir / "sink")}
        return subprocess.run([str(SHARED_BENCH / "sink.sh"), *args], env=env, check=True,
                              capture_output=True, text=True).stdout.strip()

    def backlog(self):
        """Where messages wait: each stream's entries and the group queue."""
        r = self.redis
        out = {s: r("XLEN", f"tern:stream:{s}") for s in ("submit", "ready", "results")}
        out["queued"] = r("ZCARD", "tern:q:default:bench.example")
        return out

    def daemons(self):
        return {n: p.pid for n, p in self.procs.items() if n not in ("world",)}

    def stop(self):
        stop_all(list(self.procs.values()))
        try:
            self.sink("stop")
        except subprocess.CalledProcessError:
            pass


def request(path, body):
    return (b"POST " + path + b" HTTP/1.1\r\nHost: bench\r\n"
            b"Authorization: Bearer " + API_KEY.encode() + b"\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


async def response(reader):
    status = await reader.readline()
    length = 0
    while (header := await reader.readline()) not in (b"\r\n", b""):
        if header.lower().startswith(b"content-length:"):
            length = int(header.split(b":")[1])
    return status, await reader.readexactly(length)


async def batch_route(port):
    """True when the api has POST /v1/send/batch (an empty batch is refused, not 404)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request(b"/v1/send/batch", b'{"messages":[]}'))
    status, _ = await response(reader)
    writer.close()
    return b" 404 " not in status and b" 405 " not in status


async def inject(port, n, size, clients, batch):
    """Posts n messages over `clients` keep-alive connections, `batch` per request (single
    sends when batch <= 1); returns the failures."""
    line = "x" * 75 + "\n"
    text = (line * (size // len(line) + 1))[:size]
    per = max(batch, 1)
    queue = asyncio.Queue()
    for i in range(0, n, per):
        queue.put_nowait(range(i, min(i + per, n)))
    failures = []

    def message(i):
        return {"from": "news@bench.example", "to": f"u{i}@bench.example",
                "subject": f"bench {i}", "text": text, "org": "bench", "pool": "default"}

    # The same JSON json.dumps writes for message(i), with the text encoded once: the
    # injector shares the two cores with what it measures, as smtp-source does for Postfix.
    head, tail = json.dumps(message(0)).encode().split(json.dumps(text).encode())
    text_json = json.dumps(text).encode()
    assert head.count(b"u0@") == 1 and head.count(b"bench 0") == 1

    def encoded(i):
        return (head.replace(b"u0@", b"u%d@" % i).replace(b"bench 0", b"bench %d" % i)
                + text_json + tail)

    async def client():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while True:
            try:
                items = queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if batch > 1:
                body = b'{"messages": [' + b", ".join(encoded(i) for i in items) + b"]}"
                writer.write(request(b"/v1/send/batch", body))
            else:
                writer.write(request(b"/v1/send", encoded(items[0])))
            status, answer = await response(reader)
            if batch > 1:
                # Per-item results: every item must carry an id.
                results = json.loads(answer).get("results", []) if answer else []
                accepted = sum(1 for r in results if isinstance(r, dict) and r.get("id"))
                if accepted != len(items):
                    failures.append(status + answer[:300])
            elif b" 202 " not in status:
                failures.append(status)
        writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return failures


def load_average():
    return Path("/proc/loadavg").read_text().split()[0]


def postfix(n, size, dkim):
    """Postfix's figures for the same case, from the shared harness: (msg/s, cpu-ms/msg)."""
    script = SHARED_BENCH / "postfix-relay.sh"
    argv = [str(script), str(n), str(size)] + (["dkim"] if dkim else [])
    done = subprocess.run(argv, capture_output=True, text=True)
    print("  " + "\n  ".join(done.stdout.strip().splitlines()), flush=True)
    found = re.search(r"postfix: \d+ msgs \d+ B: (\d+) msg/s, ([\d.]+) cpu-s", done.stdout)
    if done.returncode != 0 or not found:
        print(f"  postfix-relay.sh failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        return None
    return float(found.group(1)), float(found.group(2))


def run(n, size, dkim):
    """One Tern run; returns (msg/s, cpu-ms per message of Tern and Redis)."""
    work = tempfile.mkdtemp(prefix="bench-tern-", dir="/tmp")
    stack = Stack(work)
    try:
        stack.start(dkim)
        batch = BATCH if BATCH > 1 and asyncio.run(batch_route(stack.api_port)) else 0
        if BATCH > 1 and not batch:
            print("  the api has no POST /v1/send/batch: single sends")
        pids = stack.daemons()
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        calls0 = command_calls(stack.redis)
        sink0 = float(stack.sink("cpu") or 0)
        perf = None
        if PROFILE:
            perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-o",
                                     f"{work}/perf.{PROFILE}", "-p", str(pids[PROFILE])],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        own0 = os.times()
        t0 = time.time()
        clients = CLIENTS if batch else int(os.environ.get("CLIENTS", "64"))
        failures = asyncio.run(inject(stack.api_port, n, size, clients, batch))
        injected = time.time() - t0
        own = os.times()
        backlog = stack.backlog()
        if failures:
            raise RuntimeError(f"{len(failures)} requests failed, first: {failures[0]!r}")
        done = float(stack.sink("wait", str(n), "60").split()[-1])
        wall = done - t0
        # The sink has every message; CPU and commands are read once the scheduler has also
        # applied every result (an `accepted` and a `delivered` event per message).
        try:
            wait_for("the delivered events",
                     lambda: stack.redis("XLEN", "tern:stream:events") >= 2 * n, 60)
        except RuntimeError as e:
            print(f"  {e}")
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait(30)
        cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
        calls1 = command_calls(stack.redis)
        sink_cpu = float(stack.sink("cpu") or 0) - sink0
        usec = {c: calls1[c][1] - calls0.get(c, (0, 0))[1] for c in calls1}
        delta = {c: calls1[c][0] - calls0.get(c, (0, 0))[0] for c in calls1}
        delta.pop("info", None)
        reads = delta.pop("total_reads_processed", 0)
        writes = delta.pop("total_writes_processed", 0)
        usec.pop("total_reads_processed", None)
        usec.pop("total_writes_processed", None)
        rss = {name: peak_rss_mb(pid) for name, pid in pids.items() if name != "redis"}
        total_cpu = sum(v for k, v in cpu.items())
        signed = stack.redis("HGET", "tern:counters", "dkim.signed") or 0
        how = f"batches of {batch}" if batch else "single sends"
        print(f"tern: {n} msgs {size} B{' (dkim)' if dkim else ''}: {n / wall:.0f} msg/s "
              f"delivered ({wall:.1f} s), injected at {n / injected:.0f} msg/s by {clients} "
              f"clients in {how}; dkim.signed {int(signed)}; load {load_average()}")
        print("  cpu-s per 1000 msgs: " + ", ".join(
            f"{k} {v * 1000 / n:.2f}" for k, v in cpu.items())
            + f"; all of Tern and Redis {total_cpu * 1000 / n:.2f}")
        print(f"  injector (python) cpu-s per 1000: "
              f"{(own.user - own0.user + own.system - own0.system) * 1000 / n:.2f}; "
              f"the sink: {sink_cpu * 1000 / n:.2f}")
        print("  peak RSS MB: " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()))
        memory = re.search(r"used_memory:(\d+)", stack.redis("INFO", "memory"))
        if memory:
            print(f"  redis memory once every message is final: "
                  f"{int(memory.group(1)) / 1048576:.0f} MB (what the records kept for "
                  f"TERN_RECORD_TTL hold)")
        top = sorted(delta.items(), key=lambda kv: -kv[1])[:None if ALL_COMMANDS else 8]
        print(f"  redis commands per message: {sum(delta.values()) / n:.1f} ("
              + ", ".join(f"{c} {k / n:.2f}" for c, k in top if k) + ")")
        print(f"  redis socket reads/writes per message: {reads / n:.2f} / {writes / n:.2f}")
        if ALL_COMMANDS:
            print("  redis µs per message inside commands: " + ", ".join(
                f"{c} {u / n:.1f}" for c, u in sorted(usec.items(), key=lambda kv: -kv[1]) if u))
        print(f"  sink sessions/quits/messages: {stack.sink('stats')}")
        print("  waiting when the last request was answered: " + ", ".join(
            f"{k} {v}" for k, v in backlog.items()))
        return n / wall, total_cpu / n * 1000
    finally:
        stack.stop()
        if PROFILE:
            print(f"  perf samples: {work}/perf.{PROFILE}")


def main(argv):
    n = int(argv[0]) if argv else 20000
    sizes = [int(s) for s in argv[1:]] or [2048, 20480]
    modes = DKIM_MODES.get(os.environ.get("DKIM", "both"))
    if modes is None:
        sys.exit("DKIM must be off, on or both")
    for name in ("tern-api", "tern-scheduler", "tern-sender"):
        if not (BIN / name).exists():
            sys.exit(f"{BIN / name} missing: run `swift build -c release` first")
    rows = []
    for size in sizes:
        for dkim in modes:
            load = load_average()
            pf = postfix(n, size, dkim) if POSTFIX else None
            tern = run(n, size, dkim)
            rows.append((size, dkim, load, pf, tern))
    header = ["messages", "load at start", "Postfix msg/s, cpu-ms/msg",
              "Tern msg/s, cpu-ms/msg", "Tern/Postfix msg/s, Postfix/Tern cpu per msg"]
    table = [header]
    for size, dkim, load, pf, (rate, cpu) in rows:
        table.append([f"{n} of {size} B{' dkim' if dkim else ''}", load,
                      f"{pf[0]:.0f}, {pf[1]:.2f}" if pf else "-", f"{rate:.0f}, {cpu:.2f}",
                      f"{rate / pf[0]:.2f}x, {pf[1] / cpu:.2f}x" if pf else "-"])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print()
    for row in table:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


if __name__ == "__main__":
    main(sys.argv[1:])
