"""The bounce receiver under hostile load: thousands of malformed, slow (slowloris),
oversized and early-talking sessions come from six loopback addresses while real DSNs to
signed VERP addresses keep arriving from a fifth. The receiver must stay up, take every
real DSN (each on the `inbound` stream exactly once) and keep its memory bounded.

Runs its own `tern-bounce-receiver` (short idle and session timeouts, its own Redis key
prefix) against the session's redis-server, so nothing else consumes what it writes.
About a minute on a loaded machine; TERN_LOAD_SESSIONS changes the number of hostile sessions."""

import asyncio
import hashlib
import hmac
import os
import random
import secrets
import smtplib
import time

import pytest

import harness

HOSTILE_SESSIONS = int(os.environ.get("TERN_LOAD_SESSIONS", "2000"))
GENUINE_DSNS = 100
ATTACKERS = tuple(f"127.0.0.{n}" for n in range(1, 7))
GENUINE_PEER = "127.0.0.9"
PER_CLIENT = 40
PREFIX = "load:"
RSS_LIMIT_KB = 200 * 1024
CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def base32(data):
    """Lowercase Crockford base32, as VERP.swift writes signatures."""
    bits = int.from_bytes(data, "big")
    count = len(data) * 8 // 5
    return "".join(CROCKFORD[(bits >> (5 * (count - 1 - i))) & 31] for i in range(count))


def verp_address(secret, message_id):
    tag = hmac.new(secret, message_id.encode(), hashlib.sha256).digest()[:10]
    return f"b.{message_id}.{base32(tag)}@{harness.VERP_DOMAIN}"


def new_id():
    return "".join(random.choice(CROCKFORD) for _ in range(26))


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def receiver(tmp_path, redis_server):
    secret = secrets.token_bytes(32)
    port = harness.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERN_")}
    env.update({
        "TERN_REDIS_URL": redis_server.url, "TERN_REDIS_PREFIX": PREFIX,
        "TERN_BOUNCE_LISTEN": f"127.0.0.1:{port}", "TERN_HOSTNAME": harness.HOSTNAME,
        "TERN_VERP_DOMAIN": harness.VERP_DOMAIN, "TERN_VERP_SECRET": secret.hex(),
        "TERN_BOUNCE_IDLE_TIMEOUT": "2s", "TERN_BOUNCE_SESSION_TIMEOUT": "6s",
        "TERN_BOUNCE_GREET_DELAY": "200ms", "TERN_BOUNCE_MAX_SIZE": "100000",
        "TERN_BOUNCE_MAX_SESSIONS": "400",
        "TERN_BOUNCE_MAX_SESSIONS_PER_CLIENT": str(PER_CLIENT),
        "TERN_LOG_LEVEL": "warning",
    })
    bin_dir = os.environ.get("TERN_BIN_DIR") or harness.REPO / ".build" / "debug"
    processes = []
    with open(tmp_path / "bounce.stderr", "ab") as err:
        harness.spawn(processes.append, [str(harness.Path(bin_dir) / "tern-bounce-receiver")],
                      env=env, cwd=tmp_path, stdin=harness.subprocess.DEVNULL,
                      stdout=err, stderr=err)
    process = processes[0]

    def greets():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=2):
                return True
        except OSError:
            return False
    harness.wait_for(greets, timeout=harness.START_TIMEOUT, what="the receiver to greet")
    yield process, port, secret
    harness.stop_process(process)


# --- Hostile sessions -----------------------------------------------------------------

async def connect(port, source):
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def drain(reader, limit=30.0):
    """Reads until the server closes; a server that never does fails the test."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        chunk = await asyncio.wait_for(reader.read(65536), end - time.monotonic())
        if not chunk:
            return
    raise AssertionError("the receiver kept a hostile session open")


async def malformed(port, source, verp):
    reader, writer = await connect(port, source)
    await reader.readline()
    junk = [b"\x00\x01\x02garbage", b"MAIL FROM:<<<>>>", b"RCPT TO:<" + b"a" * 700 + b">",
            b"EHLO " + b"\xff" * 40, b"DATA", b"BDAT 10 LAST", b"AUTH PLAIN AAAA",
            b"RCPT TO:<" + verp.encode() + b">", b"\r\r\r", b"HELO"]
    for _ in range(30):
        writer.write(random.choice(junk) + b"\r\n")
    await writer.drain()
    await drain(reader)
    writer.close()


async def slowloris(port, source, verp):
    reader, writer = await connect(port, source)
    await reader.readline()
    # One octet at a time, slower than nothing but never a whole line in time.
    for octet in b"EHLO slow.example\r\nMAIL FROM:<>\r\n":
        writer.write(bytes([octet]))
        await writer.drain()
        await asyncio.sleep(0.4)
        if reader.at_eof():
            break
    await drain(reader)
    writer.close()


async def oversized(port, source, verp):
    reader, writer = await connect(port, source)
    await reader.readline()
    writer.write(f"EHLO big.example\r\nMAIL FROM:<>\r\nRCPT TO:<{verp}>\r\nDATA\r\n".encode())
    await writer.drain()
    if random.random() < 0.5:
        # Over TERN_BOUNCE_MAX_SIZE in many lines: 552 after the dot, the session goes on.
        line = b"x" * 998 + b"\r\n"
        for _ in range(120):
            writer.write(line)
        writer.write(b".\r\nQUIT\r\n")
    else:
        # One line past the line buffer cap: 554 and the session ends.
        writer.write(b"y" * 200_000)
    await writer.drain()
    await drain(reader)
    writer.close()


async def early_talker(port, source, verp):
    reader, writer = await connect(port, source)
    writer.write(b"EHLO early.example\r\nMAIL FROM:<>\r\n")
    await writer.drain()
    await drain(reader)
    writer.close()


async def hostile(port, verp, count):
    kinds = (malformed, slowloris, oversized, early_talker)
    limits = {source: asyncio.Semaphore(PER_CLIENT - 5) for source in ATTACKERS}
    done = {kind.__name__: 0 for kind in kinds}

    async def one(i):
        source = ATTACKERS[i % len(ATTACKERS)]
        kind = kinds[i % len(kinds)]
        async with limits[source]:
            try:
                await kind(port, source, verp)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass                 # the receiver may reset a session it gave up on
            done[kind.__name__] += 1
    await asyncio.gather(*(one(i) for i in range(count)))
    return done


# --- Genuine DSNs ---------------------------------------------------------------------

def send_dsn(port, verp, recipient):
    """One DSN as a real MTA sends it: retried on a temporary refusal."""
    dsn = harness.build_dsn(verp, recipient, "From: news@tern.example\nSubject: hi\n")
    for attempt in range(5):
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=20,
                              source_address=(GENUINE_PEER, 0)) as smtp:
                assert smtp.ehlo("mx1.inbox.example")[0] == 250
                assert smtp.mail("")[0] == 250
                assert smtp.rcpt(verp)[0] == 250
                code, reply = smtp.data(dsn)
            if code == 250:
                return attempt
            assert code // 100 == 4, (code, reply)
        except smtplib.SMTPServerDisconnected:
            pass
        time.sleep(1)
    raise AssertionError(f"DSN to {verp} never accepted")


async def genuine(port, secret, ids):
    retries = 0
    for message_id in ids:
        verp = verp_address(secret, message_id)
        retries += await asyncio.to_thread(send_dsn, port, verp, f"{message_id}@inbox.example")
        await asyncio.sleep(0.05)
    return retries


def test_receiver_survives_hostile_load(receiver, redis_server):
    process, port, secret = receiver
    ids = [new_id() for _ in range(GENUINE_DSNS)]
    before = rss_kb(process.pid)

    async def run():
        target = verp_address(secret, new_id())
        attack = asyncio.create_task(hostile(port, target, HOSTILE_SESSIONS))
        retries = await genuine(port, secret, ids)
        genuine_done = time.monotonic()
        return await attack, retries, genuine_done
    start = time.monotonic()
    done, retries, genuine_done = asyncio.run(run())
    elapsed = time.monotonic() - start
    after = rss_kb(process.pid)

    assert process.poll() is None, "the receiver died under load"
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        assert smtp.ehlo()[0] == 250
    redis = redis_server.client()
    entries = redis.xrange(PREFIX + "stream:inbound")
    recorded = [fields["id"] for _, fields in entries]
    assert sorted(recorded) == sorted(ids)
    assert sum(done.values()) == HOSTILE_SESSIONS
    print(f"\nhostile sessions {done}; genuine DSNs {len(ids)} ({retries} retried); "
          f"VmRSS {before} kB before, {after} kB after; DSNs done at "
          f"{genuine_done - start:.0f} s, all at {elapsed:.0f} s")
    assert after < RSS_LIMIT_KB, f"VmRSS {after} kB"
