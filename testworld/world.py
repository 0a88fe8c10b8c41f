#!/usr/bin/env python3
"""The loopback test world: a small "Internet" of DNS and MX hosts for Tern to deliver to.

    python3 testworld/world.py [--config FILE] [--dns-port N] [--smtp-port N]
                               [--spool DIR] [--describe FILE] [--journal FILE] [-v]

Starts, all on loopback: one authoritative DNS server (UDP and TCP, dnslib) serving the
zone built by `build_zone`, and one aiosmtpd server per MX host, each on its own
127.0.0.x address and all on the one SMTP port (Tern's sender reaches them with
TERN_SMTP_PORT). When everything listens it writes the `--describe` JSON and prints the
single line `world ready` on stdout; SIGTERM or SIGINT stop it cleanly (exit 0), SIGHUP
re-reads the config file's "records" into the zone (the hosts and their listeners stay as
they are) and bumps the SOA serial. A port that cannot be bound exits with status 2 before
anything is announced, so a harness can pick other ports and try again; a configuration
that makes no sense exits with 78.

The config file is JSON with the same keys as the flags (dns_port, smtp_port, spool,
describe, journal, dns_addr, slow_seconds, verbose) plus "records" (merged over the zone,
see dnszone.py) and "hosts" (name -> MxHost fields, adds or overrides an MX host). Flags
win over the file. README.md beside this file lists the domains and the scripted replies.
"""

import argparse
import asyncio
import errno
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
from dataclasses import asdict, fields

from dnszone import Zone, DnsService, merge_records, reverse_name
from mx import Journal, MxHandler, MxHost, Scripts, Spool, smtp_factory

# Exit status when a listener cannot be set up (port taken, address missing).
EXIT_LISTEN = 2
# Exit status for a configuration that makes no sense (sysexits.h EX_CONFIG).
EXIT_CONFIG = 78
# How late slow.example answers the final dot; well under RFC 5321 section 4.5.3.2.6's
# 10 minutes, so a correct client waits for it.
DEFAULT_SLOW_SECONDS = 3.0
# Sending IPs of the default pool and their names (forward and reverse agree, FCrDNS).
SENDING_IPS = {"127.0.0.2": "out1.tern.example", "127.0.0.3": "out2.tern.example"}


def default_hosts(slow_seconds=DEFAULT_SLOW_SECONDS):
    """The MX hosts, one loopback address each."""
    return [
        MxHost("mx1.inbox.example", "127.0.0.11"),
        MxHost("mx.slow.example", "127.0.0.12", reply_delay=slow_seconds),
        MxHost("mx.reject.example", "127.0.0.13", reject_all=True),
        # Nothing listens on mx1.twomx.example: connections are refused.
        MxHost("mx1.twomx.example", "127.0.0.14", listen=False),
        MxHost("mx2.twomx.example", "127.0.0.15"),
        # A trap: nullmx.example has a null MX and an A record; mail arriving here
        # means the sender fell back to the A record, which RFC 7505 section 3 forbids.
        MxHost("nullmx.example", "127.0.0.16"),
        # No MX: the A record is the implicit MX (RFC 5321 section 5.1).
        MxHost("nomx.example", "127.0.0.17"),
        MxHost("mx.tls.example", "127.0.0.18", starttls=True),
        MxHost("mx.dual.example", "127.0.0.19", addr6="::1"),
    ]


def default_records():
    """Records other than the MX hosts' own A/AAAA records."""
    records = {
        "example": {"NS": ["ns.example"]},
        "ns.example": {"A": ["127.0.0.1"]},
        "inbox.example": {"MX": [[10, "mx1.inbox.example"]], "TXT": ["v=spf1 -all"]},
        "slow.example": {"MX": [[10, "mx.slow.example"]]},
        "reject.example": {"MX": [[10, "mx.reject.example"]]},
        "twomx.example": {"MX": [[10, "mx1.twomx.example"], [20, "mx2.twomx.example"]]},
        "nullmx.example": {"MX": [[0, "."]]},
        "tls.example": {"MX": [[10, "mx.tls.example"]]},
        "dual.example": {"MX": [[10, "mx.dual.example"]]},
        "servfail.example": {"_rcode": "SERVFAIL"},
        "tern.example": {
            "MX": [[10, "in.tern.example"]],
            "TXT": ["v=spf1 " + " ".join(f"ip4:{ip}" for ip in SENDING_IPS) + " -all"]},
        "_dmarc.tern.example": {"TXT": ["v=DMARC1; p=none"]},
        "bounces.tern.example": {"MX": [[10, "in.tern.example"]]},
        "in.tern.example": {"A": ["127.0.0.1"]},
    }
    for ip, name in SENDING_IPS.items():
        records[name] = {"A": [ip]}
        records[reverse_name(ip)] = {"PTR": [name]}
    return records


def build_zone(hosts, extra_records=None):
    """The zone dict: default records, each host's A/AAAA, then the extras on top."""
    records = default_records()
    for host in hosts:
        types = records.setdefault(host.name, {})
        types["A"] = [host.addr]
        if host.addr6:
            types["AAAA"] = [host.addr6]
    return merge_records(records, extra_records or {})


def merge_hosts(hosts, overrides):
    """Apply a config's "hosts" dict (name -> MxHost fields) to the host list."""
    by_name = {h.name: h for h in hosts}
    known = {f.name for f in fields(MxHost)}
    for name, spec in (overrides or {}).items():
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"host {name}: unknown fields {sorted(unknown)}")
        base = asdict(by_name[name]) if name in by_name else {"name": name}
        by_name[name] = MxHost(**{**base, **spec, "name": name})
    return list(by_name.values())


def load_settings(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="JSON file with settings, records and hosts")
    parser.add_argument("--dns-addr", help="DNS listen address (default 127.0.0.1)")
    parser.add_argument("--dns-port", type=int, help="DNS port, UDP and TCP (0: any)")
    parser.add_argument("--smtp-port", type=int, help="port of every MX host (0: any)")
    parser.add_argument("--spool", help="directory for accepted messages")
    parser.add_argument("--describe", help="write addresses and ports here as JSON")
    parser.add_argument("--journal", help="append every scripted reply here (JSON lines)")
    parser.add_argument("--slow-seconds", type=float, help="slow.example's delay")
    parser.add_argument("-v", "--verbose", action="store_true", default=None,
                        help="log DNS queries and SMTP replies on stderr")
    args = parser.parse_args(argv)
    settings = {"dns_addr": "127.0.0.1", "dns_port": 0, "smtp_port": 0, "spool": None,
                "describe": None, "journal": None, "verbose": False,
                "slow_seconds": DEFAULT_SLOW_SECONDS, "records": {}, "hosts": {}}
    if args.config:
        settings.update(read_config(args.config))
    for key, value in vars(args).items():
        if value is not None:
            settings[key] = value
    return settings


def read_config(path):
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: the config must be a JSON object")
    return config


def log(message):
    print(f"world: {message}", file=sys.stderr, flush=True)


def make_certificate(hosts, directory):
    """A throwaway self-signed certificate naming every STARTTLS host (via openssl)."""
    names = [h.name for h in hosts if h.starttls and h.listen]
    if not names:
        return None, None
    cert, key = os.path.join(directory, "mx.crt"), os.path.join(directory, "mx.key")
    san = ",".join(f"DNS:{n}" for n in names)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
         f"/CN={names[0]}", "-addext", f"subjectAltName={san}",
         "-keyout", key, "-out", cert],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return cert, key


class World:
    """Everything the process serves; `run` returns when a stop signal arrives."""

    def __init__(self, settings):
        self.settings = settings
        self.hosts = merge_hosts(default_hosts(settings["slow_seconds"]),
                                 settings["hosts"])
        self.serial = 1
        self.records = build_zone(self.hosts, settings["records"])
        self.scratch = None             # made by listen(), removed by close()
        self.spool_dir = settings["spool"]
        self.smtp_port = settings["smtp_port"]
        self.servers = []
        self.dns = None
        self.journal = None
        self.cert = None

    def dns_log(self):
        return log if self.settings["verbose"] else None

    async def listen(self):
        loop = asyncio.get_running_loop()
        self.scratch = tempfile.mkdtemp(prefix="tern-world-")
        self.spool_dir = self.spool_dir or os.path.join(self.scratch, "spool")
        self.dns = DnsService(Zone(self.records, serial=self.serial),
                              self.settings["dns_addr"], self.settings["dns_port"],
                              self.dns_log())
        cert, key = make_certificate(self.hosts, self.scratch)
        tls_context = None
        if cert:
            tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls_context.load_cert_chain(cert, key)
        self.cert = cert
        scripts, spool = Scripts(), Spool(self.spool_dir)
        self.journal = Journal(self.settings["journal"],
                               echo=log if self.settings["verbose"] else None)
        # Port 0: the first host picks a free port and every other one shares it. Another
        # world running at the same time may hold that port on a later address: start over.
        wanted = self.smtp_port
        for tries_left in range(20, -1, -1):
            try:
                await self.listen_smtp(loop, scripts, spool, tls_context)
                break
            except OSError as error:
                for server in self.servers:
                    server.close()
                self.servers, self.smtp_port = [], wanted
                if wanted != 0 or error.errno != errno.EADDRINUSE or tries_left == 0:
                    raise
        self.dns.start()

    async def listen_smtp(self, loop, scripts, spool, tls_context):
        for host in (h for h in self.hosts if h.listen):
            handler = MxHandler(host, scripts, spool, self.journal)
            for addr in filter(None, [host.addr, host.addr6]):
                # A deep accept queue: a sender that opens hundreds of sessions at once must
                # not meet dropped handshakes, which look like a host that never greets.
                server = await loop.create_server(
                    smtp_factory(host, handler, tls_context, loop), addr, self.smtp_port,
                    backlog=4096)
                self.servers.append(server)
                self.smtp_port = server.sockets[0].getsockname()[1]

    def description(self):
        return {
            "pid": os.getpid(),
            "dns": {"addr": self.settings["dns_addr"], "port": self.dns.port},
            "smtp_port": self.smtp_port,
            "spool": os.path.abspath(self.spool_dir),
            "journal": self.settings["journal"],
            "tls_cert": self.cert,
            "sending_ips": SENDING_IPS,
            "hosts": {h.name: h.describe() for h in self.hosts},
            "zone_serial": self.serial,
            "zone": self.records,
        }

    def write_description(self):
        path = self.settings["describe"]
        if not path:
            return
        temp = path + ".tmp"
        with open(temp, "w", encoding="utf-8") as f:
            json.dump(self.description(), f, indent=1)
        os.replace(temp, path)

    def reload(self):
        """SIGHUP: the config file's "records" again, over the same hosts and listeners."""
        try:
            config = read_config(self.settings["config"])
            records = build_zone(self.hosts, config.get("records", {}))
            zone = Zone(records, serial=self.serial + 1)
        except (OSError, ValueError, KeyError, TypeError) as error:
            log(f"reload failed, keeping the old zone: {error}")
            return
        self.serial, self.records = zone.serial, records
        self.dns.replace_zone(zone)
        self.write_description()
        log(f"zone reloaded, serial {self.serial}")

    async def run(self):
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        if self.settings.get("config"):
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            await self.listen()
        except OSError as error:
            log(f"cannot listen: {error}")
            self.close()
            return EXIT_LISTEN
        self.write_description()
        log(f"DNS on {self.settings['dns_addr']}:{self.dns.port}, SMTP port "
            f"{self.smtp_port}, spool {os.path.abspath(self.spool_dir)}")
        print("world ready", flush=True)
        await stop.wait()
        # Open sessions (a sender may keep its connection for reuse) are cancelled by
        # asyncio.run on the way out; waiting for them here could wait for ever.
        self.close()
        return 0

    def close(self):
        for server in self.servers:
            server.close()
        if self.dns:
            self.dns.stop()
        if self.journal:
            self.journal.close()
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)


def main(argv=None):
    try:
        settings = load_settings(argv)
        world = World(settings)
        Zone(world.records)             # fail on a bad record now, not when serving
    except (OSError, ValueError, TypeError, KeyError) as error:
        log(f"bad configuration: {error!r}")
        return EXIT_CONFIG
    return asyncio.run(world.run())


if __name__ == "__main__":
    sys.exit(main())
