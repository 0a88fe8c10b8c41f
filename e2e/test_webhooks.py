"""Webhooks end to end: the API posts every event to HTTP receivers on loopback.

The receivers are Python http.server instances that check each post the way README.md
tells a receiver to: the HMAC-SHA256 of "<t>.<body>" with the endpoint's secret, and a
timestamp no more than five minutes off. They fail on purpose (500s, a closed port) to
show that every event still arrives, in order per message, also across a kill -9 of the
API. Each stack here has its own Redis, so these tests see only their own events.
"""

import hashlib
import hmac
import http.client
import itertools
import json
import os
import socket
import struct
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import harness

SECRETS = {"main": "main-secret-0123456789", "flaky": "flaky-secret-0123456789",
           "audit": "audit-secret-0123456789", "dead": "dead-secret-0123456789"}
TOLERANCE = 300


def verify(secret, field, body, now=None, tolerance=TOLERANCE):
    """A receiver's check of Tern-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>."""
    parts = {}
    for item in (field or "").split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((now or time.time()) - t) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, v) for v in parts.get("v1", []))


class Receiver:
    """One webhook endpoint: records the posts whose signature verifies (401 for the
    others), answers 500 to the next `fail_next` posts, waits `delay` before answering.
    With `keep_alive` it speaks HTTP/1.1 and keeps connections open between posts (else
    HTTP/1.0, one post a connection); `connections` counts those opened to it."""

    def __init__(self, name, port=None, delay=0.0, host="127.0.0.1", keep_alive=False):
        self.name = name
        self.keep_alive = keep_alive
        self.connections = 0
        self.host = host
        self.secret = SECRETS[name]
        self.port = port or harness.free_port()
        self.delay = delay
        self.fail_next = 0
        self.lock = threading.Lock()
        self.received = []
        self.rejected = []
        self.failed = 0
        self.server = None

    @property
    def url(self):
        return f"http://{self.host}:{self.port}/hooks/{self.name}?v=1"

    def start(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if receiver.keep_alive else "HTTP/1.0"

            def setup(self):
                super().setup()
                with receiver.lock:
                    receiver.connections += 1

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                field = self.headers.get("Tern-Signature")
                if not verify(receiver.secret, field, body):
                    with receiver.lock:
                        receiver.rejected.append((field, body))
                    return self.answer(401)
                with receiver.lock:
                    if receiver.fail_next > 0:
                        receiver.fail_next -= 1
                        receiver.failed += 1
                        fail = True
                    else:
                        fail = False
                if fail:
                    return self.answer(500, b"not today")
                time.sleep(receiver.delay)
                event = json.loads(body)
                assert event["id"] == self.headers["Tern-Event-Id"]
                with receiver.lock:
                    receiver.received.append(event)
                self.answer(200)

            def answer(self, status, text=b""):
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                except (BrokenPipeError, ConnectionResetError):
                    pass    # the API was killed while we answered

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def events(self):
        """Every event received once, in the order first received."""
        with self.lock:
            seen, out = set(), []
            for event in self.received:
                if event["id"] not in seen:
                    seen.add(event["id"])
                    out.append(event)
            return out

    def duplicates(self):
        with self.lock:
            return len(self.received) - len({e["id"] for e in self.received})

    def types_for(self, message_id):
        return [e["type"] for e in self.events() if e.get("message_id") == message_id]


def endpoint(receiver, **extra):
    return {"name": receiver.name, "url": receiver.url, "secret": receiver.secret, **extra}


def start_stack(tmp_path, world, endpoints, **env):
    redis = harness.RedisServer(tmp_path / "redis")
    redis.start()
    stack = harness.TernStack(tmp_path / "tern", redis, world, extra_env={
        "TERN_WEBHOOKS": json.dumps(endpoints),
        "TERN_WEBHOOK_BACKOFF": "200ms",
        "TERN_WEBHOOK_BACKOFF_MAX": "1s",
        "TERN_WEBHOOK_TIMEOUT": "2s",
        "TERN_WEBHOOK_CLAIM_IDLE": "2s",
        **env,
    })
    stack.start()
    harness.wait_for(lambda: any(g["name"] == "webhooks" for g in stack.redis.xinfo_groups(
        stack.key("stream:events"))), 10, what="the webhooks group on events")
    return redis, stack


@pytest.fixture(scope="module")
def hooks(tmp_path_factory, world):
    # The audit endpoint is named by host: the API asks the world's DNS (TERN_DNS_RESOLVER).
    world.set_records({"hooks.tern.example": {"A": ["127.0.0.1"]}})
    receivers = {"main": Receiver("main", keep_alive=True).start(),
                 "flaky": Receiver("flaky").start(),
                 "audit": Receiver("audit", host="hooks.tern.example").start()}
    endpoints = [endpoint(receivers["main"]),
                 endpoint(receivers["flaky"], old_secrets=["retired-secret-0123456789"]),
                 endpoint(receivers["audit"], events=["delivered"])]
    redis, stack = start_stack(tmp_path_factory.mktemp("webhooks"), world, endpoints)
    yield stack, receivers
    codes = stack.stop()
    redis.stop()
    for r in receivers.values():
        r.stop()
    # SIGTERM ends the API's posting loops too: it exits 0 within the stop timeout.
    assert codes["tern-api"] == 0, codes


def api_up(stack):
    try:
        return stack.http("GET", "/health", key=None, timeout=2).status == 200
    except OSError:
        return False


def send(stack, local="hooks"):
    return stack.send(to=harness.address(local), subject="Hi", text="Hello", org="acme",
                      pool="default", metadata={"uid": "42"})


def assert_all_arrived_in_order(stack, receiver, ids, timeout=60):
    """Each message ended, and the receiver got each of its events once at least, first
    copies in the order the daemons wrote them."""
    for mid in ids:
        harness.wait_for(lambda m=mid: stack.message(m)["state"] in harness.FINAL_STATES,
                         timeout, what=f"{mid} to end")

    def complete():
        return all(receiver.types_for(m) == stack.event_names(m) for m in ids)
    harness.wait_for(complete, timeout, what=f"every event at {receiver.name}")
    for mid in ids:
        assert receiver.types_for(mid)[0] == "accepted"
        assert receiver.types_for(mid)[-1] in harness.FINAL_STATES


def test_events_arrive_signed_with_their_details(hooks):
    stack, receivers = hooks
    main = receivers["main"]
    delivered = send(stack)
    deferred = stack.send(to=harness.address("defer-once"), subject="Hi", text="Hello",
                          org="acme", pool="default", metadata={"uid": "43"})
    bounced = stack.send(to=harness.address("bounce"), subject="Hi", text="Hello", org="acme",
                         pool="default")
    assert_all_arrived_in_order(stack, main, [delivered, deferred, bounced])
    assert main.types_for(delivered) == ["accepted", "delivered"]
    assert main.types_for(deferred) == ["accepted", "deferred", "delivered"]
    assert main.types_for(bounced) == ["accepted", "bounced"]

    events = {e["id"]: e for e in main.events()}
    for entry in stack.events(deferred):
        posted = events[entry.stream_id]
        assert posted["type"] == entry.event
        assert posted["data"] == entry.data
        assert posted["message_id"] == deferred and posted["org"] == "acme"
        assert posted["recipient"] == entry.data["to"]
        assert posted["data"]["metadata"] == {"uid": "43"}
    deferral = next(e for e in main.events() if e.get("message_id") == deferred
                    and e["type"] == "deferred")
    assert deferral["data"]["code"] == 451 and "next_attempt_at" in deferral["data"]
    assert main.rejected == []
    # An HTTP/1.1 receiver's connections carry several posts each.
    assert 0 < main.connections < len(main.received), (main.connections, len(main.received))

    # Only delivered events go to the endpoint that filters for them.
    audit = receivers["audit"]
    harness.wait_for(lambda: audit.types_for(deferred) == ["delivered"], 30)
    assert audit.types_for(bounced) == []
    assert {e["type"] for e in audit.events()} == {"delivered"}


def test_a_cancelled_message_posts_its_cancelled_event(hooks):
    stack, receivers = hooks
    org = "hook" + uuid.uuid4().hex[:8]
    assert stack.http("PUT", f"/v1/pauses/org/{org}").status in (200, 201)
    try:
        mid = stack.send(to=harness.address("cancel"), subject="Hi", text="Hello", org=org,
                         pool="default")
        harness.wait_for(lambda: any(h["event"] == "held" for h in stack.message(mid)[
            "history"]), 30, what="the message held by the pause")
        assert stack.http("POST", f"/v1/messages/{mid}/cancel").status == 200
        assert_all_arrived_in_order(stack, receivers["main"], [mid])
        assert receivers["main"].types_for(mid) == ["accepted", "cancelled"]
    finally:
        stack.http("DELETE", f"/v1/pauses/org/{org}")


def test_a_receiver_refuses_forged_and_replayed_posts(hooks):
    stack, receivers = hooks
    main = receivers["main"]
    mid = send(stack)
    assert_all_arrived_in_order(stack, main, [mid])
    event = next(e for e in main.events() if e["message_id"] == mid)
    body = json.dumps(event).encode()

    def post(field):
        conn = http.client.HTTPConnection("127.0.0.1", main.port, timeout=5)
        try:
            conn.request("POST", "/hooks/main", body=body,
                         headers={"Tern-Signature": field, "Tern-Event-Id": event["id"],
                                  "Content-Type": "application/json"})
            return conn.getresponse().status
        finally:
            conn.close()

    def signed(t, secret=main.secret):
        mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        return f"t={t},v1={mac}"

    before = len(main.rejected)
    old = int(time.time()) - 10 * 60
    assert post(signed(old)) == 401                         # a replay from ten minutes ago
    assert post(signed(int(time.time()), "wrong-secret")) == 401
    assert post(signed(int(time.time()))) == 200
    assert len(main.rejected) == before + 2
    assert not verify(main.secret, signed(old), body)
    assert verify(main.secret, signed(old), body, now=old + 10)


def test_a_flaky_receiver_gets_every_event_in_order(hooks):
    stack, receivers = hooks
    flaky = receivers["flaky"]
    flaky.fail_next = 5
    ids = [send(stack) for _ in range(5)]
    harness.wait_for(lambda: flaky.failed >= 5, 30, what="five failed posts")

    # Down for a while: the port is closed, so posts are refused.
    flaky.stop()
    ids += [send(stack) for _ in range(5)]
    ids.append(stack.send(to=harness.address("defer-once"), subject="Hi", text="Hello",
                          org="acme", pool="default"))
    time.sleep(3)
    flaky.start()
    assert_all_arrived_in_order(stack, flaky, ids)
    assert_all_arrived_in_order(stack, receivers["main"], ids)

    listing = stack.http("GET", "/v1/webhooks").json()["webhooks"]
    row = next(w for w in listing if w["name"] == "flaky")
    assert row["last_error"] and row["last_error_at"] and row["last_success"]
    assert row["failed"] == 0
    harness.wait_for(lambda: next(w for w in stack.http("GET", "/v1/webhooks").json()[
        "webhooks"] if w["name"] == "flaky")["pending"] == 0, 30, what="an empty backlog")

    metrics = stack.http("GET", "/metrics").body.decode()
    assert 'tern_webhook_deliveries_total{endpoint="flaky",outcome="failed"}' in metrics
    assert 'tern_webhook_deliveries_total{endpoint="flaky",outcome="delivered"}' in metrics
    assert 'tern_webhook_backlog{endpoint="flaky"} 0' in metrics
    assert "tern_webhook_delivery_duration_seconds_bucket" in metrics


def test_kill_9_of_the_api_while_posting_loses_nothing(hooks):
    stack, receivers = hooks
    main = receivers["main"]
    main.delay = 0.05
    try:
        ids = [send(stack) for _ in range(20)]
        harness.wait_for(lambda: len(main.types_for(ids[3])) >= 1, 30)
        stack.crash("tern-api")
        harness.wait_for(lambda: api_up(stack), 20, what="the API back")
        ids += [send(stack) for _ in range(5)]
        stack.crash("tern-api")
        harness.wait_for(lambda: api_up(stack), 20, what="the API back")
        assert_all_arrived_in_order(stack, main, ids, timeout=90)
        assert_all_arrived_in_order(stack, receivers["flaky"], ids, timeout=90)
        print(f"kill -9 twice: {len(main.events())} events at main, "
              f"{main.duplicates()} received twice")
    finally:
        main.delay = 0.0


def test_a_second_api_takes_over_what_a_killed_one_held(tmp_path, world):
    receiver = Receiver("main", delay=0.02).start()
    redis, stack = start_stack(tmp_path, world, [endpoint(receiver)])
    second_port = harness.free_port()
    second = []
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TERN_")}, **stack.env,
           "TERN_API_LISTEN": f"127.0.0.1:{second_port}", "TERN_INSTANCE": "second"}
    with open(tmp_path / "second-api.stderr", "ab") as err:
        harness.spawn(second.append, [str(stack.bin_dir / "tern-api")], env=env,
                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        ids = [send(stack) for _ in range(30)]
        harness.wait_for(lambda: len(receiver.events()) >= 5, 30, what="the first posts")
        # The first API dies for good, holding whatever it had read; the second carries on.
        first = stack.processes["tern-api"]
        first.kill()
        first.wait()
        for mid in ids:
            harness.wait_for(lambda m=mid: final_state(redis, m), 60, what=f"{mid} to end")

        def complete():
            return all(receiver.types_for(m) == stack.event_names(m) for m in ids)
        harness.wait_for(complete, 60, what="every event through the second API")
        groups = stack.redis.xinfo_groups(stack.key("stream:events"))
        assert next(g for g in groups if g["name"] == "webhooks")["pending"] == 0
        print(f"second API: {len(receiver.events())} events, "
              f"{receiver.duplicates()} received twice")
    finally:
        for process in second:
            harness.stop_process(process)
        stack.stop()
        redis.stop()
        receiver.stop()


def final_state(redis, message_id):
    client = redis.client()
    try:
        state = client("HGET", harness.PREFIX + "msg:" + message_id, "state")
    finally:
        client.close()
    return state in harness.FINAL_STATES


def test_operators_see_and_retry_given_up_deliveries(tmp_path, world):
    dead = Receiver("dead")
    redis, stack = start_stack(tmp_path, world, [endpoint(dead)],
                               TERN_WEBHOOK_RETRY_FOR="1s",
                               TERN_API_KEYS=f"{harness.API_KEY},orgkey:acme")
    try:
        mid = send(stack)
        stack.wait_for_state(mid, "delivered")

        def failed():
            listing = stack.http("GET", "/v1/webhooks/dead/failed").json()["failed"]
            return listing if len(listing) == 2 else None
        listing = harness.wait_for(failed, 30, what="two given-up deliveries")
        assert [f["type"] for f in listing] == ["accepted", "delivered"]
        assert all(f["message_id"] == mid and f["attempts"] >= 1 for f in listing)
        assert all("connect" in f["error"] for f in listing), listing
        row = stack.http("GET", "/v1/webhooks").json()["webhooks"][0]
        assert row["failed"] == 2 and row["failed_total"] == 2 and row["pending"] == 0

        # A key bound to an organisation may not look, nor retry.
        assert stack.http("GET", "/v1/webhooks", key="orgkey").status == 403
        assert stack.http("POST", "/v1/webhooks/dead/failed/retry", key="orgkey").status == 403
        assert stack.http("POST", "/v1/webhooks/nope/failed/retry").status == 404
        dead.start()
        one = listing[0]["event_id"]
        answer = stack.http("POST", f"/v1/webhooks/dead/failed/{one}/retry")
        assert answer.status == 200 and answer.json()["retried"] == 1
        harness.wait_for(lambda: dead.types_for(mid) == ["accepted"], 20)
        answer = stack.http("POST", "/v1/webhooks/dead/failed/retry")
        assert answer.status == 200 and answer.json()["retried"] == 1
        harness.wait_for(lambda: dead.types_for(mid) == ["accepted", "delivered"], 20)
        assert stack.http("GET", "/v1/webhooks/dead/failed").json()["failed"] == []
        assert stack.http("POST", f"/v1/webhooks/dead/failed/{one}/retry").status == 404
    finally:
        stack.stop()
        redis.stop()
        dead.stop()


class HostileReceiver:
    """Speaks HTTP/1.1 and lets connections stay open, then ends them every way a server can:
    connection i closes after its first answer (i % 4 == 0), resets after it (1), drops its
    second request unanswered (2) or answers until the API closes it (3). Records the ids of
    the events it answered 200."""

    def __init__(self):
        self.port = harness.free_port()
        self.lock = threading.Lock()
        self.ids = []
        self.connections = 0
        self.listener = None
        self.threads = []

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self):
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self.accept, daemon=True).start()
        return self

    def stop(self):
        self.listener.close()

    def accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                mode = self.connections % 4
                self.connections += 1
            threading.Thread(target=self.serve, args=(conn, mode), daemon=True).start()

    def serve(self, conn, mode):
        reader = conn.makefile("rb")
        try:
            for number in itertools.count():
                head = []
                while (line := reader.readline()) not in (b"\r\n", b""):
                    head.append(line)
                if not head:
                    return
                length = next(int(h.split(b":", 1)[1]) for h in head
                              if h.lower().startswith(b"content-length:"))
                body = reader.read(length)
                if mode == 2 and number == 1:
                    return
                with self.lock:
                    self.ids.append(json.loads(body)["id"])
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                if mode == 0:
                    return
                if mode == 1:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
                    return
        except OSError:
            pass
        finally:
            reader.close()
            conn.close()


def sockets_to(pid, port):
    """The sockets process `pid` holds open to 127.0.0.1:`port`."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[2].endswith(f":{port:04X}") and fields[9] in inodes:
                count += 1
    return count


def test_closing_receivers_leave_no_sockets_open_in_the_api(tmp_path, world):
    receiver = HostileReceiver().start()
    redis, stack = start_stack(tmp_path, world, [{"name": "main", "url": receiver.url,
                                                  "secret": SECRETS["main"]}],
                               TERN_WEBHOOK_CONCURRENCY="4")
    try:
        api = stack.processes["tern-api"].pid
        ids = [send(stack) for _ in range(30)]
        for mid in ids:
            harness.wait_for(lambda m=mid: stack.message(m)["state"] in harness.FINAL_STATES,
                             60, what=f"{mid} to end")
        wanted = {e.stream_id for m in ids for e in stack.events(m)}
        harness.wait_for(lambda: wanted <= set(receiver.ids), 60, what="every event")
        assert receiver.connections > 8, receiver.connections
        # At most TERN_WEBHOOK_CONCURRENCY kept, and none once idle for 4 s.
        kept = sockets_to(api, receiver.port)
        print(f"kept {kept}, connections {receiver.connections}, posts {len(receiver.ids)}")
        assert kept <= 4
        harness.wait_for(lambda: sockets_to(api, receiver.port) == 0, 6,
                         what="the idle connections closed")
    finally:
        stack.stop()
        redis.stop()
        receiver.stop()
