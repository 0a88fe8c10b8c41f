#!/usr/bin/env python3
"""A small SMTP peer for sender tests and benchmarks: one asyncio server per loopback
address, each with a profile, and counters a test can read.

    python3 testworld/peer.py --port N --stats FILE 127.0.0.41=size:100 127.0.0.42=noutf8 ...

Profiles (comma-joined options after "="): `plain`; `size:N` (advertise SIZE N);
`noutf8` (no SMTPUTF8); `nopipe` (no PIPELINING); `close421` (after the first message on a
connection, answer the next MAIL with 421 and close); `stall` (greet, then never answer);
`delay:S` (answer the final dot S seconds late, holding the session); `dropdot` (close the
connection after the final dot without a reply: the outcome is ambiguous); `greet554` (greet
with 554 and then answer only QUIT); `badtls` (offer STARTTLS, answer it with 220 and then
garbage instead of a TLS handshake, and close); `twice` (answer the final dot twice, the
second right after the first: it answers nothing the client asked); `quitstall` (take QUIT
and never answer it, holding the connection until the client closes it). Recipients whose
local part starts with "reject" get 550 5.1.1 at RCPT.

Counters per address go to --stats as JSON about every 100 ms when they change:
connections, open (now), max_open, messages, rsets, quits, tls_broken (handshakes broken),
mail_options (last 50), rcpts, per_connection (messages accepted on each closed connection,
last 50).
`peer ready` is printed on stdout once every address listens. Loopback addresses only.
"""

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import sys


class Stats:
    def __init__(self, addrs):
        self.by_addr = {a: {"connections": 0, "open": 0, "max_open": 0, "messages": 0,
                            "rsets": 0, "quits": 0, "tls_broken": 0, "mail_options": [],
                            "rcpts": [], "per_connection": []} for a in addrs}
        self.dirty = True

    def bump(self, addr, key, n=1):
        s = self.by_addr[addr]
        s[key] += n
        if key == "open":
            s["max_open"] = max(s["max_open"], s["open"])
        self.dirty = True

    def note(self, addr, key, value):
        items = self.by_addr[addr][key]
        items.append(value)
        del items[:-50]
        self.dirty = True


def parse_profile(text):
    profile = {"size": 0, "utf8": True, "pipe": True, "close421": False, "stall": False,
               "delay": 0.0, "dropdot": False, "greet554": False, "badtls": False,
               "twice": False, "quitstall": False}
    for opt in filter(None, text.split(",")):
        name, _, value = opt.partition(":")
        if name == "size":
            profile["size"] = int(value)
        elif name == "noutf8":
            profile["utf8"] = False
        elif name == "nopipe":
            profile["pipe"] = False
        elif name in ("close421", "stall", "dropdot", "greet554", "badtls", "twice",
                      "quitstall"):
            profile[name] = True
        elif name == "delay":
            profile["delay"] = float(value)
        elif name != "plain":
            raise ValueError(f"unknown profile option {opt}")
    return profile


async def session(reader, writer, addr, profile, stats):
    stats.bump(addr, "connections")
    stats.bump(addr, "open")

    def say(line):
        writer.write((line + "\r\n").encode())

    delivered = 0
    try:
        if profile["greet554"]:
            say("554 5.7.1 peer.test has no service for you")
            await writer.drain()
            if (await reader.readline()).upper().startswith(b"QUIT"):
                stats.bump(addr, "quits")
                say("221 2.0.0 bye")
                await writer.drain()
            return
        say("220 peer.test ESMTP test peer")
        await writer.drain()
        if profile["stall"]:
            await reader.read()          # until the client gives up
            return
        delivered, rcpts = 0, 0
        while True:
            raw = await reader.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb = line[:4].upper()
            if verb == "EHLO":
                caps = ["peer.test"]
                if profile["pipe"]:
                    caps.append("PIPELINING")
                caps.append(f"SIZE {profile['size']}" if profile["size"] else "SIZE")
                caps.append("8BITMIME")
                if profile["utf8"]:
                    caps.append("SMTPUTF8")
                caps.append("ENHANCEDSTATUSCODES")
                if profile["badtls"]:
                    caps.append("STARTTLS")
                for c in caps[:-1]:
                    say("250-" + c)
                say("250 " + caps[-1])
            elif verb == "MAIL":
                if profile["close421"] and delivered >= 1:
                    say("421 4.7.0 peer.test closing")
                    await writer.drain()
                    return
                stats.note(addr, "mail_options", line.partition(">")[2].strip())
                rcpts = 0
                say("250 2.1.0 ok")
            elif verb == "RCPT":
                address = line.partition("<")[2].partition(">")[0]
                stats.note(addr, "rcpts", address)
                if address.lower().startswith("reject"):
                    say("550 5.1.1 no such user")
                else:
                    rcpts += 1
                    say("250 2.1.5 ok")
            elif verb == "DATA":
                if rcpts == 0:
                    say("554 5.5.1 no valid recipients")
                else:
                    say("354 go ahead")
                    await writer.drain()
                    while True:
                        text = await reader.readline()
                        if not text:
                            return
                        if text in (b".\r\n", b".\n"):
                            break
                    if profile["dropdot"]:
                        stats.bump(addr, "messages")
                        return
                    if profile["delay"]:
                        await asyncio.sleep(profile["delay"])
                    delivered += 1
                    stats.bump(addr, "messages")
                    say("250 2.0.0 ok")
                    if profile["twice"]:
                        say("250 2.0.0 ok again")
            elif verb == "RSET":
                stats.bump(addr, "rsets")
                rcpts = 0
                say("250 2.0.0 ok")
            elif verb == "STAR" and profile["badtls"]:
                stats.bump(addr, "tls_broken")
                say("220 2.0.0 go ahead")
                await writer.drain()
                await reader.read(4096)      # the ClientHello
                writer.write(b"this is no TLS handshake \x01\x02\x03\r\n")
                await writer.drain()
                return
            elif verb == "NOOP":
                say("250 2.0.0 ok")
            elif verb == "QUIT":
                stats.bump(addr, "quits")
                if profile["quitstall"]:
                    await reader.read()      # until the client gives up
                    return
                say("221 2.0.0 bye")
                await writer.drain()
                return
            else:
                say("502 5.5.2 not implemented")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
        pass
    finally:
        stats.note(addr, "per_connection", delivered)
        stats.bump(addr, "open", -1)
        writer.close()


async def write_stats(path, stats):
    while True:
        if stats.dirty:
            stats.dirty = False
            temp = path + ".tmp"
            with open(temp, "w", encoding="utf-8") as f:
                json.dump(stats.by_addr, f)
            os.replace(temp, path)
        await asyncio.sleep(0.1)


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stats", required=True)
    parser.add_argument("hosts", nargs="+", help="ADDR=PROFILE")
    args = parser.parse_args()
    profiles = {}
    for spec in args.hosts:
        addr, _, text = spec.partition("=")
        if not ipaddress.ip_address(addr).is_loopback:
            sys.exit(f"{addr}: loopback addresses only")
        profiles[addr] = parse_profile(text)
    stats = Stats(profiles)
    servers = []
    for addr, profile in profiles.items():
        servers.append(await asyncio.start_server(
            lambda r, w, a=addr, p=profile: session(r, w, a, p, stats),
            addr, args.port, backlog=4096, reuse_address=True))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    writer = asyncio.create_task(write_stats(args.stats, stats))
    print("peer ready", flush=True)
    await stop.wait()
    writer.cancel()
    for s in servers:
        s.close()


if __name__ == "__main__":
    asyncio.run(main())
