"""Helpers for Tern's end-to-end tests: real processes on loopback, driven from Python.

`RedisServer` runs a private redis-server, `WorldProcess` runs testworld/world.py (the
DNS server and MX hosts), `TernStack` runs the five built daemons against both with the
environment below (`TernStack.env`), and `Resp` is a small Redis client over a socket.
Nothing here talks to an address outside 127.0.0.0/8 or ::1: the daemons' resolver is the
world's DNS server, and every listener binds a loopback address.

conftest.py turns these into pytest fixtures; the tests use only what is listed in
e2e/README.md, so the harness can change underneath them.
"""

import base64
import datetime
import email
import http.client
import json
import os
import re
import secrets
import signal
import smtplib
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from email import policy, utils
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from json import dumps as json_dumps
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORLD_SCRIPT = REPO / "testworld" / "world.py"
DAEMONS = ("tern-api", "tern-scheduler", "tern-sender", "tern-bounce-receiver",
           "tern-reputation")

PREFIX = "tern:"
API_KEY = "testkey"
API_MAX_BODY = 100_000
SENDER = "sender@tern.example"
VERP_DOMAIN = "bounces.tern.example"
FBL_ADDRESS = "fbl@tern.example"
POOL_IPS = {"127.0.0.2": "out1.tern.example", "127.0.0.3": "out2.tern.example"}
POOLS = "default=" + ",".join(f"{ip}/{name}" for ip, name in POOL_IPS.items())
# The daemons' own name (Message-ID right-hand side, the bounce receiver's greeting), so
# that nothing shows the name of the machine the tests run on.
HOSTNAME = "mta.tern.example"

# The session's DKIM keys: every message From tern.example is signed with both.
DKIM_DOMAIN = "tern.example"
DKIM_SELECTORS = {"r1": "rsa-sha256", "e1": "ed25519-sha256"}

# A message id: 26 lowercase base32 characters (a ULID-style sortable id).
MESSAGE_ID = re.compile(r"^[0-9a-z]{26}$")
# The VERP return path b.<id>.<signature>@bounces.tern.example; the signature is kept
# lowercase alphanumeric because receiving MTAs may fold the case of a local part.
VERP_ADDRESS = re.compile(
    r"^b\.(?P<id>[0-9a-z]{26})\.(?P<sig>[0-9a-z]+)@" + re.escape(VERP_DOMAIN) + r"$")
EVENT_KINDS = {"accepted", "deferred", "delivered", "bounced", "expired", "complained",
               "suppressed", "cancelled"}
FINAL_STATES = {"delivered", "bounced", "expired", "suppressed", "cancelled"}

START_TIMEOUT = float(os.environ.get("TERN_E2E_START_TIMEOUT", "30"))
STOP_TIMEOUT = 10.0


class HarnessError(RuntimeError):
    """A process of the harness could not be started; the message says why."""


def free_port(address="127.0.0.1"):
    """A port that was free a moment ago; callers retry if someone takes it first."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=30.0, interval=0.1, what=None):
    """Call `predicate` until it returns something truthy and return that; fail with
    the last value it returned after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            name = what or getattr(predicate, "__name__", "condition")
            raise AssertionError(f"timed out after {timeout}s waiting for {name}; "
                                 f"last value: {value!r}")
        time.sleep(interval)


def address(local, domain="inbox.example"):
    """A fresh address ("local+TAG@domain") for one test, so tests can share a stack and a
    world and still tell their mail apart."""
    return f"{local}+{uuid.uuid4().hex[:12]}@{domain}"


def delivered_once(tern, world, message_id, to):
    """Waits for `message_id` to be delivered and returns the one message the world's MX
    holds for `to`."""
    tern.wait_for_state(message_id, "delivered")
    spooled = world.spool_for(to)
    assert len(spooled) == 1, [m.meta for m in spooled]
    return spooled[0]


def tail(path, lines=60):
    try:
        with open(path, "rb") as f:
            text = f.read()[-64_000:].decode("utf-8", "replace")
    except OSError as error:
        return f"({error})"
    return "\n".join(text.splitlines()[-lines:])


HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _unhold_signals():
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)


def spawn(track, argv, **popen_args):
    """Starts `argv` and hands the process to `track` with SIGINT and SIGTERM held back, so
    an interruption (say the demo's SIGTERM) cannot fall between the child's start and
    its owner knowing about it: whoever cleans up afterwards finds every child. The child
    itself starts with the signals unblocked."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    try:
        process = subprocess.Popen(argv, preexec_fn=_unhold_signals, **popen_args)
        track(process)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return process


def stop_process(process, timeout=STOP_TIMEOUT):
    """SIGTERM by pid, then SIGKILL after `timeout`; returns the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


# --- Redis -------------------------------------------------------------------------------

class RedisError(Exception):
    """An error reply from Redis."""


class Resp:
    """A minimal RESP2 client: `r("XLEN", key)`; bulk strings come back as str."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = self.sock.makefile("rb")

    def __call__(self, *args):
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))
        return self._reply()

    def _reply(self):
        line = self.reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            if int(rest) < 0:
                return None
            data = self.reader.read(int(rest) + 2)[:-2]
            return data.decode("utf-8", "surrogateescape")
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._reply() for _ in range(count)]
        raise ConnectionError(f"unexpected reply from redis: {line!r}")

    def hgetall(self, key):
        flat = self("HGETALL", key)
        return dict(zip(flat[::2], flat[1::2]))

    def xrange(self, key, start="-", end="+"):
        """[(entry id, {field: value})] oldest first."""
        return [(entry_id, dict(zip(fields[::2], fields[1::2])))
                for entry_id, fields in self("XRANGE", key, start, end)]

    def xinfo_groups(self, key):
        try:
            groups = self("XINFO", "GROUPS", key)
        except RedisError:
            return []          # no such stream yet
        return [dict(zip(g[::2], g[1::2])) for g in groups]

    def last_generated_id(self, key):
        """The id of the stream's newest XADD ever: unlike XLEN it never goes back
        when entries are trimmed or deleted. None when the stream does not exist."""
        try:
            info = self("XINFO", "STREAM", key)
        except RedisError:
            return None
        return dict(zip(info[::2], info[1::2]))["last-generated-id"]

    def close(self):
        self.reader.close()
        self.sock.close()


class RedisServer:
    """A private redis-server on 127.0.0.1 (daemonize no), stopped by its pid."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log = self.directory / "redis.log"
        self.process = None
        self.port = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        for _ in range(3):
            self.port = free_port()
            spawn(lambda p: setattr(self, "process", p),
                  ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
                   "--dir", str(self.directory), "--daemonize", "no", "--save", "",
                   "--appendonly", "no", "--logfile", str(self.log)],
                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                  stderr=subprocess.STDOUT)
            if self._wait_ready():
                return self
            stop_process(self.process)
        raise HarnessError(f"redis-server did not start:\n{tail(self.log)}")

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                client = Resp(self.port, timeout=1)
                try:
                    # Ours, not another run's that took the port first (ours then exits).
                    info = client("INFO", "server")
                    if f"\nprocess_id:{self.process.pid}\r" in info:
                        return True
                    time.sleep(0.05)
                finally:
                    client.close()
            except (OSError, RedisError):
                time.sleep(0.05)
        return False

    def client(self):
        return Resp(self.port)

    def stop(self):
        return stop_process(self.process) if self.process else None


# --- The test world ----------------------------------------------------------------------

@dataclass
class SpoolMessage:
    """One message an MX host of the world accepted."""
    meta: dict
    raw: bytes
    path: Path

    def __getattr__(self, name):
        # mail_from, rcpt_tos, peer_ip, helo, mx_host, mx_addr, tls, time, ...
        try:
            return self.__dict__["meta"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def message(self):
        return email.message_from_bytes(self.raw, policy=policy.default)


class WorldProcess:
    """testworld/world.py in a child process, on free ports, with its own spool."""

    def __init__(self, directory, records=None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.spool = self.directory / "spool"
        self.config_path = self.directory / "world.json"
        self.describe_path = self.directory / "describe.json"
        self.journal_path = self.directory / "journal.jsonl"
        self.stdout_path = self.directory / "world.stdout"
        self.stderr_path = self.directory / "world.stderr"
        self.config = {"records": records or {}}
        self.process = None
        self.describe = None

    @property
    def dns_port(self):
        return self.describe["dns"]["port"]

    @property
    def smtp_port(self):
        return self.describe["smtp_port"]

    def start(self):
        for _ in range(3):
            self.config.update(
                dns_port=free_port(), smtp_port=free_port(), spool=str(self.spool),
                describe=str(self.describe_path), journal=str(self.journal_path))
            self._write_config()
            with open(self.stdout_path, "wb") as out, open(self.stderr_path, "ab") as err:
                spawn(lambda p: setattr(self, "process", p),
                      [sys.executable, str(WORLD_SCRIPT), "--config", str(self.config_path)],
                      stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            if self._wait_ready():
                with open(self.describe_path, encoding="utf-8") as f:
                    self.describe = json.load(f)
                return self
            # Exit status 2 means a port was taken between free_port() and the bind.
            if stop_process(self.process) != 2:
                break
        raise HarnessError(f"the test world did not start:\n{tail(self.stderr_path)}")

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if b"world ready" in self.stdout_path.read_bytes():
                return True
            if self.process.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def _write_config(self):
        temp = self.config_path.with_suffix(".tmp")
        temp.write_text(json.dumps(self.config, indent=1), encoding="utf-8")
        temp.replace(self.config_path)

    def set_records(self, records):
        """Merge `records` (dnszone.py's dict form) into the zone of the running world:
        rewrite the config, SIGHUP, and wait until the SOA serial shows the reload."""
        serial = self.soa_serial()
        self.config["records"] = {**self.config["records"], **records}
        self._write_config()
        self.process.send_signal(signal.SIGHUP)
        wait_for(lambda: self.soa_serial() > serial, timeout=10, what="zone reload")

    def query(self, name, qtype="A", tcp=False):
        """Ask the world's DNS server directly; returns a parsed dnslib DNSRecord."""
        from dnslib import DNSRecord
        packet = DNSRecord.question(name, qtype).send(
            "127.0.0.1", self.dns_port, tcp=tcp, timeout=5)
        return DNSRecord.parse(packet)

    def soa_serial(self):
        return self.query("example", "SOA").rr[0].rdata.times[0]

    def spool_messages(self):
        """Every accepted message so far, oldest first."""
        messages = []
        for meta_path in sorted(self.spool.glob("*.json")):
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            raw_path = meta_path.with_suffix(".eml")
            messages.append(SpoolMessage(meta, raw_path.read_bytes(), raw_path))
        return messages

    def spool_for(self, recipient):
        return [m for m in self.spool_messages() if recipient in m.rcpt_tos]

    def journal(self):
        """Every scripted reply so far: [{time, mx_host, mx_addr, peer_ip, stage, arg,
        reply}]; stage is ehlo, mail, rcpt or data."""
        if not self.journal_path.exists():
            return []
        with open(self.journal_path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def stop(self):
        return stop_process(self.process) if self.process else None


# --- Tern's daemons ----------------------------------------------------------------------

@dataclass
class Response:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Event:
    """One entry of tern:stream:events for a message."""
    stream_id: str
    event: str
    raw_json: str

    @property
    def data(self):
        return json.loads(self.raw_json)


class TernStack:
    """The five daemons, started from TERN_BIN_DIR (default .build/debug) with `env`."""

    def __init__(self, directory, redis, world, extra_env=None, bin_dir=None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.bin_dir = Path(bin_dir or os.environ.get("TERN_BIN_DIR")
                            or REPO / ".build" / "debug")
        self.redis_server = redis
        self.world = world
        self.api_port = free_port()
        self.bounce_port = free_port()
        # Each daemon serves /metrics and /health on a port of its own (TERN_METRICS_LISTEN,
        # set per daemon in _spawn); the API serves them on its own port.
        self.metrics_ports = {d: free_port() for d in DAEMONS if d != "tern-api"}
        self.metrics_ports["tern-api"] = self.api_port
        self.env = {
            "TERN_REDIS_URL": redis.url,
            "TERN_REDIS_PREFIX": PREFIX,
            "TERN_API_LISTEN": f"127.0.0.1:{self.api_port}",
            "TERN_API_KEYS": API_KEY,
            "TERN_API_MAX_BODY": str(API_MAX_BODY),
            "TERN_DNS_RESOLVER": f"127.0.0.1:{world.dns_port}",
            # Blocklist zones under .example, answered by the world (never the real lists).
            "TERN_DNSBL_FILE": str(REPO / "testworld" / "dnsbl.json"),
            "TERN_DNSBL_INTERVAL": "2s",
            "TERN_SMTP_PORT": str(world.smtp_port),
            "TERN_POOLS": POOLS,
            "TERN_VERP_DOMAIN": VERP_DOMAIN,
            "TERN_VERP_SECRET": secrets.token_hex(32),
            "TERN_BOUNCE_LISTEN": f"127.0.0.1:{self.bounce_port}",
            "TERN_HOSTNAME": HOSTNAME,
            # The world's STARTTLS host has a self-signed certificate: trusting it makes
            # deliveries to tls.example verified.
            "TERN_TLS_CA_FILE": world.describe["tls_cert"],
            "TERN_FBL_ADDRESSES": FBL_ADDRESS,
            "TERN_RETRY_DELAYS": "1s,2s,4s",
            "TERN_MAX_AGE": "60s",
            "TERN_LOG_LEVEL": "debug",
            **(extra_env or {}),
        }
        self.processes = {}
        self.exit_codes = {}
        self.redis = None

    def log_path(self, daemon, stream="stderr"):
        return self.directory / f"{daemon}.{stream}"

    def start(self):
        missing = [d for d in DAEMONS if not os.access(self.bin_dir / d, os.X_OK)]
        if missing:
            raise HarnessError(
                f"not built: {', '.join(missing)} in {self.bin_dir} "
                "(run `swift build`, or point TERN_BIN_DIR at the binaries)")
        for daemon in DAEMONS:
            self._spawn(daemon)
        self.redis = self.redis_server.client()
        try:
            self._wait_ready()
        except Exception:
            self.stop()
            raise
        return self

    def _spawn(self, daemon):
        # The daemons see none of the runner's own Tern or systemd settings.
        base = {k: v for k, v in os.environ.items()
                if not k.startswith("TERN_") and k not in (
                    "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
                    "WATCHDOG_USEC", "WATCHDOG_PID")}
        with open(self.log_path(daemon, "stdout"), "ab") as out, \
                open(self.log_path(daemon), "ab") as err:
            own = {} if daemon == "tern-api" else {
                "TERN_METRICS_LISTEN": f"127.0.0.1:{self.metrics_ports[daemon]}"}
            spawn(lambda p, d=daemon: self.processes.__setitem__(d, p),
                  [str(self.bin_dir / daemon)], env={**base, **self.env, **own},
                  cwd=self.directory, stdin=subprocess.DEVNULL, stdout=out, stderr=err)

    def crash(self, daemon):
        """SIGKILL one daemon, as a crash at any moment would, and start it again at once
        with the same settings (and so the same consumer name)."""
        process = self.processes[daemon]
        process.kill()
        process.wait()
        self._spawn(daemon)

    def _wait_ready(self):
        """Ready means: every daemon runs, /health says 200, the bounce receiver greets,
        and the contract's consumer groups exist on the streams the scheduler and the
        sender read, so that nothing appended from now on can be missed. (Redis lists a
        consumer only once it has been handed an entry, so a group is all there is to
        see before the first message.)"""
        checks = [("GET /health is 200", self._health_ok),
                  ("the bounce receiver greets with 220", self._bounce_greets)]
        for stream, group in (("submit", "scheduler"), ("results", "scheduler"),
                              ("inbound", "scheduler"), ("ready", "sender")):
            checks.append((f"group {group} on {PREFIX}stream:{stream}",
                           lambda s=stream, g=group: self._group_exists(s, g)))
        deadline = time.monotonic() + START_TIMEOUT
        pending = list(checks)
        while pending:
            dead = {d: p.returncode for d, p in self.processes.items()
                    if p.poll() is not None}
            if dead:
                raise HarnessError(self._explain(f"daemons exited during start: {dead}"))
            pending = [(name, check) for name, check in pending if not check()]
            if pending and time.monotonic() > deadline:
                names = "; ".join(name for name, _ in pending)
                raise HarnessError(self._explain(f"not ready after {START_TIMEOUT}s: "
                                                 f"{names}"))
            time.sleep(0.1)

    def _explain(self, headline):
        logs = [f"--- {d} stderr ({self.log_path(d)}):\n{tail(self.log_path(d), 30)}"
                for d in DAEMONS]
        return "\n".join([headline, *logs])

    def _health_ok(self):
        try:
            return self.http("GET", "/health", key=None, timeout=2).status == 200
        except OSError:
            return False

    def _bounce_greets(self):
        try:
            with smtplib.SMTP("127.0.0.1", self.bounce_port, timeout=2) as smtp:
                return smtp.noop()[0] == 250
        except (OSError, smtplib.SMTPException):
            return False

    def _group_exists(self, stream, group):
        groups = self.redis.xinfo_groups(self.key("stream:" + stream))
        return any(g["name"] == group for g in groups)

    def stop(self):
        """SIGTERM every daemon by pid (SIGKILL after 10 s); returns their exit codes."""
        for daemon, process in self.processes.items():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for daemon, process in self.processes.items():
            self.exit_codes[daemon] = stop_process(process)
        if self.redis:
            self.redis.close()
            self.redis = None
        return self.exit_codes

    # --- API ---

    def http(self, method, path, json=None, key=API_KEY, body=None, headers=None,
             timeout=10.0):
        """One HTTP request to the API. `json` is encoded for you; `body` sends bytes as
        they are (malformed input); `key=None` sends no Authorization header."""
        sent = dict(headers or {})
        if json is not None:
            body = json_dumps(json).encode()
        if body is not None:
            sent.setdefault("Content-Type", "application/json")
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        conn = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=timeout)
        try:
            try:
                conn.request(method, path, body=body, headers=sent)
            except (BrokenPipeError, ConnectionResetError):
                # A server may answer an over-large body (413) and close before reading
                # it all (RFC 9110 section 15.5.14); its answer is still there to read.
                # Unless http.client dropped the socket: then there is no answer at all
                # (the server died), and that is the error to report.
                if conn.sock is None:
                    raise
            reply = conn.getresponse()
            return Response(reply.status, dict(reply.getheaders()), reply.read())
        finally:
            conn.close()

    def scrape(self, daemon, path="/metrics", timeout=5.0):
        """GET `path` from `daemon`'s metrics port; returns a Response."""
        conn = http.client.HTTPConnection("127.0.0.1", self.metrics_ports[daemon],
                                          timeout=timeout)
        try:
            conn.request("GET", path)
            reply = conn.getresponse()
            return Response(reply.status, dict(reply.getheaders()), reply.read())
        finally:
            conn.close()

    def send(self, **fields):
        """POST /v1/send with `fields` (from defaults to SENDER); asserts 202 and returns
        the message id."""
        payload = {"from": SENDER, **fields}
        response = self.http("POST", "/v1/send", json=payload)
        assert response.status == 202, (response.status, response.body)
        message_id = response.json()["id"]
        assert MESSAGE_ID.match(message_id), message_id
        return message_id

    def message(self, message_id):
        response = self.http("GET", f"/v1/messages/{message_id}")
        assert response.status == 200, (response.status, response.body)
        return response.json()

    def wait_for_state(self, message_id, state, timeout=30.0):
        """Poll GET /v1/messages/{id} until the message is in `state`; fails at once
        if it reaches another final state."""
        def reached():
            record = self.message(message_id)
            if record["state"] != state and record["state"] in FINAL_STATES:
                raise AssertionError(f"message {message_id} ended {record['state']}, "
                                     f"not {state}: {record}")
            return record if record["state"] == state else None
        return wait_for(reached, timeout, what=f"{message_id} to be {state}")

    # --- Redis ---

    def key(self, name):
        return PREFIX + name

    def events(self, message_id):
        """The message's entries on tern:stream:events, oldest first."""
        return [Event(entry_id, fields.get("event"), fields.get("json"))
                for entry_id, fields in self.redis.xrange(self.key("stream:events"))
                if fields.get("id") == message_id]

    def event_names(self, message_id):
        return [e.event for e in self.events(message_id)]

    def wait_for_event(self, message_id, event, timeout=30.0):
        def found():
            return next((e for e in self.events(message_id) if e.event == event), None)
        return wait_for(found, timeout, what=f"a {event} event for {message_id}")

    def counter(self, name):
        value = self.redis("HGET", self.key("counters"), name)
        return int(value) if value is not None else 0

    def submit_last_id(self):
        return self.redis.last_generated_id(self.key("stream:submit"))

    def bounce_smtp(self, source="127.0.0.11", helo="mx1.inbox.example"):
        """An SMTP client connected to the bounce receiver, as a remote MTA would be."""
        smtp = smtplib.SMTP("127.0.0.1", self.bounce_port, local_hostname=helo,
                            source_address=(source, 0), timeout=10)
        smtp.ehlo()
        return smtp


# --- DKIM --------------------------------------------------------------------------------

def make_dkim_keys(directory, domain=DKIM_DOMAIN, selectors=None):
    """Makes a private key per selector with `openssl genpkey` (RSA-2048 or Ed25519) and
    a TERN_DKIM_KEYS file naming them. Returns (keys file path, the TXT records in the
    world's dict form), the records derived by openssl, not by Tern."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines, records = [], {}
    for selector, algorithm in (selectors or DKIM_SELECTORS).items():
        key = directory / f"{selector}.pem"
        kind = ["-algorithm", "ED25519"] if algorithm.startswith("ed25519") else \
            ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
        subprocess.run(["openssl", "genpkey", *kind, "-out", str(key)], check=True,
                       capture_output=True)
        der = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-outform",
                              "DER"], check=True, capture_output=True).stdout
        if algorithm.startswith("ed25519"):
            # RFC 8463 section 4.2: the raw key, the last 32 octets of its SPKI.
            p, k = base64.b64encode(der[-32:]).decode(), "ed25519"
        else:
            p, k = base64.b64encode(der).decode(), "rsa"
        lines.append(f"{domain} {selector} {algorithm} {key.name}")
        records[f"{selector}._domainkey.{domain}"] = {"TXT": [f"v=DKIM1; k={k}; p={p}"]}
    keys = directory / "keys"
    keys.write_text("# domain selector algorithm key\n" + "\n".join(lines) + "\n")
    return keys, records


def dkim_verify(raw, world):
    """dkimpy's verdict on each DKIM-Signature of `raw`, top first: "pass", "fail", or
    the error's text. The public keys come from the test world's DNS server."""
    import dkim
    from dnslib import QTYPE

    def dnsfunc(name, timeout=5):
        reply = world.query(name.decode().rstrip("."), "TXT", tcp=True)
        texts = [b"".join(rr.rdata.data) for rr in reply.rr if rr.rtype == QTYPE.TXT]
        return texts[0] if texts else None

    count = sum(1 for name, _ in dkim.DKIM(raw).headers if name.lower() == b"dkim-signature")
    verdicts = []
    for index in range(count):
        try:
            ok = dkim.DKIM(raw).verify(idx=index, dnsfunc=dnsfunc)
            verdicts.append("pass" if ok else "fail")
        except dkim.DKIMException as error:
            verdicts.append(f"fail: {error}")
    return verdicts


def dkim_tags(raw):
    """The tags of each DKIM-Signature field of `raw`, top first, whitespace removed."""
    message = email.message_from_bytes(raw, policy=policy.compat32)
    out = []
    for value in message.get_all("DKIM-Signature") or []:
        tags = {}
        for part in re.sub(r"\s+", "", value).split(";"):
            if "=" in part:
                name, _, tag_value = part.partition("=")
                tags[name] = tag_value
        out.append(tags)
    return out


# --- Mail builders -----------------------------------------------------------------------

def build_dsn(verp, recipient, original_headers, status="5.1.1",
              diagnostic="smtp; 550 5.1.1 user unknown", reporting_mta="mx1.inbox.example"):
    """A delivery status notification as RFC 3464 defines it: multipart/report with a
    human part, a message/delivery-status part (per-message fields, a blank line, then
    per-recipient fields, section 2) and the original headers (text/rfc822-headers)."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    report["To"] = verp
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Date"] = rfc5322_now()
    report["Message-ID"] = utils.make_msgid(domain=reporting_mta)
    report["Auto-Submitted"] = "auto-replied"            # RFC 3834 section 5
    human = MIMEText(f"Your message could not be delivered to {recipient}.\n"
                     f"The remote server said: {diagnostic.partition(';')[2].strip()}\n")
    del human["MIME-Version"]
    report.attach(human)

    per_message = Message()
    per_message["Reporting-MTA"] = f"dns; {reporting_mta}"
    per_message["Arrival-Date"] = rfc5322_now()
    per_recipient = Message()
    per_recipient["Final-Recipient"] = f"rfc822; {recipient}"
    per_recipient["Action"] = "failed"
    per_recipient["Status"] = status
    per_recipient["Remote-MTA"] = f"dns; {reporting_mta}"
    per_recipient["Diagnostic-Code"] = diagnostic
    delivery_status = MIMEBase("message", "delivery-status")
    del delivery_status["MIME-Version"]
    delivery_status.set_payload([per_message, per_recipient])
    report.attach(delivery_status)

    headers = MIMEBase("text", "rfc822-headers")
    del headers["MIME-Version"]
    headers.set_payload(original_headers)
    report.attach(headers)
    return report.as_bytes(policy=policy.SMTP)


def build_arf(original, recipient, feedback_type="abuse", reporting_mta="fbl.inbox.example"):
    """A feedback report as RFC 5965 defines it: multipart/report with a human part, a
    message/feedback-report part (Feedback-Type, User-Agent, Version; section 3.1) and the
    complained-of message whole (message/rfc822)."""
    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = f"Feedback Loop <fbl@{reporting_mta}>"
    report["To"] = FBL_ADDRESS
    report["Subject"] = "FW: abuse report"
    report["Date"] = rfc5322_now()
    report["Message-ID"] = utils.make_msgid(domain=reporting_mta)
    human = MIMEText("A recipient reported this message as spam.\n")
    del human["MIME-Version"]
    report.attach(human)
    fields = MIMEBase("message", "feedback-report")
    del fields["MIME-Version"]
    fields.set_payload(f"Feedback-Type: {feedback_type}\r\nUser-Agent: TestFBL/1.0\r\n"
                       f"Version: 1\r\nOriginal-Rcpt-To: <{recipient}>\r\n"
                       f"Reporting-MTA: dns; {reporting_mta}\r\n")
    report.attach(fields)
    attached = MIMEBase("message", "rfc822")
    del attached["MIME-Version"]
    attached.set_payload(original.decode("utf-8", "replace"))
    report.attach(attached)
    return report.as_bytes(policy=policy.SMTP)


def rfc5322_now():
    """The current time as an RFC 5322 date with a real zone ("+0000", not "-0000")."""
    return utils.format_datetime(datetime.datetime.now(datetime.timezone.utc))


def header_block(raw):
    """The header section of a raw message, LF line ends, for text/rfc822-headers."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    return head.replace("\r\n", "\n") + "\n"


def forge_signature(verp):
    """The same VERP address with one signature character changed, staying inside the
    signature's alphabet so that only the signature check can tell."""
    match = VERP_ADDRESS.match(verp)
    assert match, verp
    sig = match["sig"]
    alphabet = "0123456789abcdef" if re.fullmatch("[0-9a-f]+", sig) else \
        "0123456789abcdefghijklmnopqrstuvwxyz"
    changed = alphabet[(alphabet.index(sig[0]) + 1) % len(alphabet)] + sig[1:]
    return f"b.{match['id']}.{changed}@{VERP_DOMAIN}"
