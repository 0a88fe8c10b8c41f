"""The test world's MX hosts: aiosmtpd servers whose replies are scripted by recipient.

Each MX host is one aiosmtpd server on its own 127.0.0.x address. What a recipient gets
depends on its local part before any "+TAG" (see README.md for the table); a host can also
refuse every recipient (`reject_all`), answer the final dot late (`reply_delay`) or offer
STARTTLS. Every accepted message lands in the spool as `<stem>.eml` (the bytes after DATA,
dot-unstuffed per RFC 5321 section 4.5.2) plus `<stem>.json` (envelope and peer). The JSON
is renamed into place last, so a reader that sees it also sees the whole message. Every
command the scripts answer is also appended to an optional JSON-lines journal, so a test
can see attempts that left no message behind (a 451, a 550).
"""

import asyncio
import datetime
import itertools
import json
import os
import time
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP

GREETING_IDENT = "ESMTP Tern test world"
# RFC 5321 section 4.5.3.1.7 sets no upper bound; 32 MiB is what aiosmtpd defaults to.
DATA_SIZE_LIMIT = 32 * 1024 * 1024


@dataclass
class MxHost:
    """One MX host: its DNS name, its loopback address and how it behaves."""
    name: str
    addr: str
    addr6: str = ""              # also listen on this IPv6 address (and publish AAAA)
    listen: bool = True          # False: nothing listens, so connections are refused
    starttls: bool = False       # offer STARTTLS (RFC 3207) with the world's certificate
    reply_delay: float = 0.0     # seconds to wait before answering the final dot
    reject_all: bool = False     # 550 5.7.1 for every recipient

    def describe(self):
        return {"addr": self.addr, "addr6": self.addr6 or None, "listening": self.listen,
                "starttls": self.starttls, "reply_delay": self.reply_delay,
                "reject_all": self.reject_all}


def local_base(address):
    """The scripted behaviour's key: the local part before "+", lowercased."""
    local = address.rpartition("@")[0] or address
    return local.split("+", 1)[0].lower()


@dataclass
class Scripts:
    """Per-world memory of the "-once" behaviours, keyed by the exact address."""
    seen: dict = field(default_factory=dict)

    def first_time(self, behaviour, address):
        done = self.seen.setdefault(behaviour, set())
        if address in done:
            return False
        done.add(address)
        return True


class Journal:
    """JSON lines, one per scripted reply (a no-op without a path), echoed if asked."""

    def __init__(self, path, echo=None):
        self.file = open(path, "a", encoding="utf-8", buffering=1) if path else None
        self.echo = echo

    def record(self, host, server, session, stage, arg, reply):
        peer = session.peer[0] if session.peer else None
        if self.echo:
            self.echo(f"smtp {host.name} {peer} {stage} {arg} -> {reply.splitlines()[-1]}")
        if self.file is None:
            return
        entry = {"time": time.time(), "mx_host": host.name, "mx_addr": local_addr(server),
                 "peer_ip": peer, "stage": stage, "arg": arg, "reply": reply}
        self.file.write(json.dumps(entry) + "\n")

    def close(self):
        if self.file is not None:
            self.file.close()


class Spool:
    """One `.eml` + `.json` pair per accepted message."""

    def __init__(self, directory):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self._counter = itertools.count(1)

    def store(self, host, server, session, envelope):
        stem = f"{time.time_ns()}-{next(self._counter):06d}"
        raw = envelope.original_content
        with open(os.path.join(self.directory, stem + ".eml"), "wb") as f:
            f.write(raw)
        now = time.time()
        meta = {
            "id": stem,
            "file": stem + ".eml",
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "mail_options": list(envelope.mail_options),
            "rcpt_options": list(envelope.rcpt_options),
            "peer_ip": session.peer[0],
            "peer_port": session.peer[1],
            "helo": session.host_name,
            "mx_host": host.name,
            "mx_addr": local_addr(server),
            "tls": tls_description(session),
            "size": len(raw),
            "time": now,
            "received_at": datetime.datetime.fromtimestamp(
                now, datetime.timezone.utc).isoformat(timespec="milliseconds"),
        }
        temp = os.path.join(self.directory, "." + stem + ".json.tmp")
        with open(temp, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
        os.rename(temp, os.path.join(self.directory, stem + ".json"))
        return stem


def local_addr(server):
    """The address the client connected to (mx.dual.example has two)."""
    return server.transport.get_extra_info("sockname")[0]


def tls_description(session):
    """"TLSv1.3 TLS_AES_256_GCM_SHA384" when the session ran STARTTLS, else None."""
    cipher = session.ssl.get("cipher") if session.ssl else None
    if not cipher:
        return None
    name, version, _bits = cipher
    return f"{version} {name}"


class MxHandler:
    """aiosmtpd hooks for one host. Replies carry RFC 3463 enhanced codes."""

    def __init__(self, host, scripts, spool, journal):
        self.host = host
        self.scripts = scripts
        self.spool = spool
        self.journal = journal

    def note(self, server, session, stage, arg, reply):
        self.journal.record(self.host, server, session, stage, arg, reply)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        # The EHLO reply is multi-line on purpose (RFC 5321 section 4.2.1), so clients
        # must read continuation lines. aiosmtpd leaves host_name to a hook that exists.
        session.host_name = hostname
        lines = [f"250-{self.host.name} greets {hostname}"]
        lines += [r for r in responses[1:-1] if not r.startswith("250-AUTH")]
        lines += ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"]
        self.note(server, session, "ehlo", hostname, lines[0][4:])
        return lines

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        reply = "250 2.1.0 Sender OK"
        self.note(server, session, "mail", address, reply)
        return reply

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.rcpt_reply(address, session.peer[0] if session.peer else "")
        if reply is None:
            # drop-once: the connection goes away mid-transaction, no reply at all.
            self.note(server, session, "rcpt", address, "(connection dropped)")
            server.transport.abort()
            return "421 4.4.2 connection dropped"
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        self.note(server, session, "rcpt", address, reply)
        return reply

    def rcpt_reply(self, address, peer=""):
        base = local_base(address)
        if self.host.reject_all:
            return "550 5.7.1 Delivery not authorized, message refused by policy"
        if base == "bounce":
            # Multi-line on purpose: a client must keep every line of the reply.
            return ("550-5.1.1 The email account that you tried to reach does not exist.\r\n"
                    f"550 5.1.1 <{address}>: Recipient address rejected: user unknown")
        if base == "defer-always":
            return "451 4.3.0 Temporary failure, try again later"
        if base == "defer-once" and self.scripts.first_time("defer-once", address):
            return "451 4.3.0 Temporary failure, please try again"
        if base == "drop-once" and self.scripts.first_time("drop-once", address):
            return None
        if base == "rate-once" and self.scripts.first_time("rate-once", address):
            return "421 4.7.0 Try again later, closing connection (rate limited)"
        if base.startswith("block-") and peer == base[len("block-"):].replace("-", "."):
            return (f"554 5.7.1 Service unavailable; client host [{peer}] blocked using "
                    "zen.dnsbl.example")
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server, session, envelope):
        if self.host.reply_delay:
            await asyncio.sleep(self.host.reply_delay)
        reply = self.data_reply(envelope)
        if reply is None:
            stem = self.spool.store(self.host, server, session, envelope)
            reply = f"250 2.0.0 Ok: queued as {stem}"
        self.note(server, session, "data", ",".join(envelope.rcpt_tos), reply)
        return reply

    def data_reply(self, envelope):
        bases = [(local_base(r), r) for r in envelope.rcpt_tos]
        if any(b == "data-reject" for b, _ in bases):
            return "554 5.6.0 Message content rejected"
        once = [r for b, r in bases if b == "data-defer-once"]
        if once and any([self.scripts.first_time("data-defer-once", r) for r in once]):
            return "451 4.3.0 Message content deferred, try again"
        return None


def smtp_factory(host, handler, tls_context, loop):
    """A protocol factory for `loop.create_server`."""
    def make():
        return SMTP(handler, hostname=host.name, ident=GREETING_IDENT,
                    tls_context=tls_context if host.starttls else None,
                    require_starttls=False, enable_SMTPUTF8=True,
                    data_size_limit=DATA_SIZE_LIMIT, loop=loop)
    return make
