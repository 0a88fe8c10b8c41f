"""The test world's DNS: a zone built from a plain Python dict, served by dnslib.

The zone is a dict of owner name -> record type -> list of values, e.g.

    {"inbox.example": {"MX": [[10, "mx1.inbox.example"]], "TXT": ["v=spf1 -all"]},
     "mx1.inbox.example": {"A": ["127.0.0.11"]}}

so a test can add or replace records by merging a dict of its own (`merge_records`).
Value shapes per type: A/AAAA an address string; MX `[preference, host]` (`[0, "."]` is
the RFC 7505 null MX); TXT a string, or a list of strings for one record made of several
character-strings; PTR/CNAME/NS a host name. A name may also carry `"_rcode": "SERVFAIL"`
(or any RCODE name) to answer every query for it with that code, or `"_rcode": "DROP"`
to answer nothing at all (the client times out).

The server answers authoritatively: NOERROR with the records, NODATA (NOERROR, no answer,
SOA in authority) for a name that exists without the asked type, NXDOMAIN with the SOA
for a name that does not exist (RFC 2308 section 3). A name that only has names below it
("tern.example" above "bounces.tern.example") exists: RFC 8020 says NXDOMAIN would deny
everything below it.
"""

import socket
import threading

from dnslib import (AAAA, CNAME, EDNS0, MX, NS, PTR, QTYPE, RCODE, RR, SOA, TXT, A,
                    DNSError, DNSRecord)
from dnslib.server import DNSHandler, DNSLogger, DNSServer

# RFC 1035 section 2.3.4 / 4.2.1: a UDP answer without EDNS fits in 512 octets.
CLASSIC_UDP_LIMIT = 512
# What we offer an EDNS client (RFC 6891 section 6.2.5; 1232 is the DNS Flag Day value).
EDNS_UDP_LIMIT = 1232
# RFC 1035 section 3.3.14: one character-string holds at most 255 octets.
TXT_CHUNK = 255

# Zones the world is authoritative for; any other name falls under the root.
DEFAULT_APEXES = ("example", "in-addr.arpa", "ip6.arpa")


def canonical(name):
    """Lowercase, no trailing dot; the root is ""."""
    return str(name).strip().rstrip(".").lower()


def merge_records(zone, extra):
    """Return a copy of `zone` with `extra` merged in; a type given in `extra` replaces
    that type's list for the name, other types of the name are kept."""
    merged = {canonical(n): dict(types) for n, types in zone.items()}
    for name, types in extra.items():
        merged.setdefault(canonical(name), {}).update(types)
    return merged


def reverse_name(address):
    """The PTR owner name of an IPv4 or IPv6 address."""
    if ":" in address:
        packed = socket.inet_pton(socket.AF_INET6, address).hex()
        return ".".join(reversed(packed)) + ".ip6.arpa"
    return ".".join(reversed(address.split("."))) + ".in-addr.arpa"


def _txt_strings(value):
    if isinstance(value, (list, tuple)):
        return [v.encode() if isinstance(v, str) else bytes(v) for v in value]
    raw = value.encode() if isinstance(value, str) else bytes(value)
    return [raw[i:i + TXT_CHUNK] for i in range(0, len(raw), TXT_CHUNK)] or [b""]


def _rdata(rtype, value):
    if rtype == "A":
        return A(value)
    if rtype == "AAAA":
        return AAAA(value)
    if rtype == "MX":
        preference, host = value
        return MX(canonical(host) + ".", int(preference))
    if rtype == "TXT":
        return TXT(_txt_strings(value))
    if rtype in ("PTR", "CNAME", "NS"):
        return {"PTR": PTR, "CNAME": CNAME, "NS": NS}[rtype](canonical(value) + ".")
    raise ValueError(f"record type {rtype} is not supported by the test world")


class Zone:
    """A compiled, read-only view of a zone dict. Build a new one to change records;
    swapping the resolver's reference is atomic, so a reload needs no lock."""

    def __init__(self, records, apexes=DEFAULT_APEXES, ttl=60, serial=1):
        self.ttl = ttl
        self.serial = serial
        self.apexes = sorted((canonical(a) for a in apexes), key=len, reverse=True)
        self.rrsets = {}
        self.rcodes = {}
        self.dropped = set()
        for name, types in records.items():
            owner = canonical(name)
            for rtype, values in types.items():
                if rtype == "_rcode" and values.upper() == "DROP":
                    self.dropped.add(owner)
                    continue
                if rtype == "_rcode":
                    self.rcodes[owner] = getattr(RCODE, values.upper())
                    continue
                values = values if isinstance(values, list) else [values]
                self.rrsets.setdefault(owner, {})[rtype.upper()] = [
                    _rdata(rtype.upper(), v) for v in values]
        # Every ancestor of an owner exists too (empty non-terminals, RFC 8020).
        self.names = set()
        for owner in self.rrsets:
            labels = owner.split(".")
            self.names.update(".".join(labels[i:]) for i in range(len(labels)))
        self.names.update(self.apexes)

    def apex_of(self, name):
        for apex in self.apexes:
            if name == apex or name.endswith("." + apex):
                return apex
        return ""

    def soa(self, name):
        apex = self.apex_of(name)
        mname = ("ns." + apex if apex else "ns.example") + "."
        rname = ("hostmaster." + apex if apex else "hostmaster.example") + "."
        # refresh, retry, expire, minimum: the minimum is the negative-caching TTL
        # (RFC 2308 section 4); kept short so a test that adds a record sees it soon.
        rdata = SOA(mname, rname, (self.serial, 3600, 600, 86400, 5))
        return RR(apex + ".", QTYPE.SOA, rdata=rdata, ttl=5)

    def answer(self, request):
        """Build the reply to one parsed query; None for a name that answers nothing."""
        if canonical(request.q.qname) in self.dropped:
            return None
        reply = request.reply()
        # dnslib copies the query's flags; AD would claim DNSSEC-validated data that we
        # never sign (RFC 4035 section 3.2.3).
        reply.header.ad = 0
        if request.header.opcode != 0:
            reply.header.rcode = RCODE.NOTIMP
            return reply
        qname = canonical(request.q.qname)
        qtype = QTYPE[request.q.qtype]
        if qname in self.rcodes:
            reply.header.rcode = self.rcodes[qname]
            return reply
        if qtype == "SOA" and qname in self.apexes:
            reply.add_answer(self.soa(qname))
            return reply
        # Follow CNAMEs inside the zone (RFC 1034 section 4.3.2), a few links at most.
        for _ in range(8):
            rrsets = self.rrsets.get(qname, {})
            if "CNAME" in rrsets and qtype != "CNAME":
                target = rrsets["CNAME"][0]
                reply.add_answer(RR(qname + ".", QTYPE.CNAME, rdata=target, ttl=self.ttl))
                qname = canonical(target.label)
                continue
            break
        rrsets = self.rrsets.get(qname, {})
        wanted = list(rrsets) if qtype == "ANY" else [qtype]
        for rtype in wanted:
            for rdata in rrsets.get(rtype, []):
                reply.add_answer(RR(qname + ".", getattr(QTYPE, rtype), rdata=rdata,
                                    ttl=self.ttl))
        if not any(r.rtype != QTYPE.CNAME for r in reply.rr):
            if qname not in self.names and not reply.rr:
                reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(self.soa(qname))
        return reply


class ZoneResolver:
    """dnslib resolver over a `Zone` that can be swapped while serving."""

    def __init__(self, zone, log=None):
        self.zone = zone
        self.log = log

    def resolve(self, request, handler):
        reply = self.zone.answer(request)
        if self.log:
            outcome = (f"{RCODE[reply.header.rcode]} {len(reply.rr)} answers" if reply
                       else "dropped")
            self.log(f"dns {handler.protocol} {handler.client_address[0]} "
                     f"{request.q.qname} {QTYPE[request.q.qtype]} -> {outcome}")
        return reply


class SizedHandler(DNSHandler):
    """Truncates UDP answers to what the client can take (TC bit, RFC 1035 section
    4.2.1; RFC 7766 says the client then retries over TCP) and echoes EDNS."""

    def get_reply(self, data):
        request = DNSRecord.parse(data)
        reply = self.server.resolver.resolve(request, self)
        if reply is None:
            # dnslib's handler sends nothing when get_reply raises DNSError.
            raise DNSError("dropped on purpose")
        limit = CLASSIC_UDP_LIMIT
        if any(rr.rtype == QTYPE.OPT for rr in request.ar):
            # RFC 6891 section 7: answer an EDNS query with an OPT record of our own.
            reply.add_ar(EDNS0(udp_len=EDNS_UDP_LIMIT))
            client_limit = max(rr.rclass for rr in request.ar if rr.rtype == QTYPE.OPT)
            limit = max(CLASSIC_UDP_LIMIT, min(client_limit, EDNS_UDP_LIMIT))
        packed = reply.pack()
        if self.protocol == "udp" and len(packed) > limit:
            packed = reply.truncate().pack()
        return packed


class QuietLogger(DNSLogger):
    """dnslib logs to stdout by default; stdout belongs to the readiness line."""

    def __init__(self):
        super().__init__(log="-request,-reply,-truncated,error", prefix=False,
                         logf=lambda s: None)


class DnsService:
    """UDP and TCP listeners on one address and port, each on its own thread. Port 0
    takes a free UDP port and then the same port for TCP. Binding happens here, so a
    port in use raises OSError before anything is announced as ready."""

    def __init__(self, zone, address, port, log=None):
        self.resolver = ZoneResolver(zone, log)
        for tries_left in range(20, -1, -1):
            udp = self._server(address, port, tcp=False)
            self.port = udp.server.server_address[1]
            try:
                self.servers = [udp, self._server(address, self.port, tcp=True)]
                return
            except OSError:
                # Port 0 and someone else holds that TCP port: take another pair.
                udp.server.server_close()
                if port != 0 or tries_left == 0:
                    raise

    def _server(self, address, port, tcp):
        return DNSServer(self.resolver, address=address, port=port, tcp=tcp,
                         logger=QuietLogger(), handler=SizedHandler)

    def start(self):
        # A short poll interval makes stop() (socketserver's shutdown) return quickly.
        for server in self.servers:
            server.thread = threading.Thread(target=server.server.serve_forever,
                                             kwargs={"poll_interval": 0.1}, daemon=True)
            server.thread.start()

    def replace_zone(self, zone):
        # One reference swap: handler threads see either the old zone or the new one.
        self.resolver.zone = zone

    def stop(self):
        for server in self.servers:
            server.stop()
            server.server.server_close()
