"""The test world on its own: its DNS answers and its MX hosts' scripted replies.

These need no Tern daemon. They pin down what test_pipeline.py relies on, so that a
failure there is Tern's and not the world's.
"""

import smtplib
import ssl
import uuid

import pytest
from dnslib import QTYPE, RCODE

from harness import SpoolMessage

MESSAGE = (b"From: sender@tern.example\r\nTo: someone@inbox.example\r\n"
           b"Subject: world check\r\n\r\nfirst line\r\n.a line that starts with a dot\r\n"
           b"last line\r\n")


def tag():
    return uuid.uuid4().hex[:12]


def answers(reply, qtype):
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == getattr(QTYPE, qtype)]


def connect(world, addr, source="127.0.0.2", helo="out1.tern.example"):
    smtp = smtplib.SMTP(addr, world.smtp_port, local_hostname=helo,
                        source_address=(source, 0), timeout=10)
    smtp.ehlo()
    return smtp


def deliver(world, addr, rcpt, source="127.0.0.2", data=MESSAGE):
    """One transaction; returns the (code, text) of RCPT and of DATA (None if skipped)."""
    with connect(world, addr, source) as smtp:
        assert smtp.mail("b.x.y@bounces.tern.example")[0] == 250
        rcpt_reply = smtp.rcpt(rcpt)
        data_reply = smtp.data(data) if rcpt_reply[0] == 250 else None
        return rcpt_reply, data_reply


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_mx_records(world, tcp):
    reply = world.query("inbox.example", "MX", tcp=tcp)
    assert reply.header.rcode == RCODE.NOERROR and reply.header.aa == 1
    assert answers(reply, "MX") == ["10 mx1.inbox.example."]
    assert answers(world.query("twomx.example", "MX", tcp=tcp), "MX") == [
        "10 mx1.twomx.example.", "20 mx2.twomx.example."]


def test_null_mx_and_implicit_mx(world):
    assert answers(world.query("nullmx.example", "MX"), "MX") == ["0 ."]
    nomx = world.query("nomx.example", "MX")
    assert nomx.header.rcode == RCODE.NOERROR and nomx.rr == []
    assert [rr.rtype for rr in nomx.auth] == [QTYPE.SOA]
    assert answers(world.query("nomx.example", "A"), "A") == ["127.0.0.17"]


def test_sending_ips_resolve_both_ways(world):
    for ip, name in {"127.0.0.2": "out1.tern.example", "127.0.0.3": "out2.tern.example"}.items():
        reverse = ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
        assert answers(world.query(reverse, "PTR"), "PTR") == [name + "."]
        assert answers(world.query(name, "A"), "A") == [ip]
    assert answers(world.query("mx.dual.example", "AAAA"), "AAAA") == ["::1"]
    spf = answers(world.query("tern.example", "TXT"), "TXT")
    assert spf == ['"v=spf1 ip4:127.0.0.2 ip4:127.0.0.3 -all"']


def test_unknown_names_are_nxdomain_with_soa(world):
    reply = world.query(f"nosuch-{tag()}.example", "A")
    assert reply.header.rcode == RCODE.NXDOMAIN
    assert [str(rr.rname) for rr in reply.auth if rr.rtype == QTYPE.SOA] == ["example."]
    assert reply.header.ad == 0


def test_added_records_and_empty_non_terminals(world):
    name = f"added-{tag()}.example"
    world.set_records({f"mail.{name}": {"A": ["127.0.0.11"]},
                       name: {"MX": [[5, "mx1.inbox.example"]]}})
    assert answers(world.query(name, "MX"), "MX") == ["5 mx1.inbox.example."]
    # Only a name below it exists: NOERROR without answers, not NXDOMAIN (RFC 8020).
    world.set_records({f"a.b.{name}": {"TXT": ["x"]}})
    between = world.query(f"b.{name}", "A")
    assert between.header.rcode == RCODE.NOERROR and between.rr == []
    assert world.query(f"c.{name}", "A").header.rcode == RCODE.NXDOMAIN


def test_ehlo_reply_is_multiline(world):
    with connect(world, "127.0.0.11") as smtp:
        code, text = smtp.ehlo("out1.tern.example")
    lines = text.decode().splitlines()
    assert code == 250 and len(lines) > 3
    assert lines[0] == "mx1.inbox.example greets out1.tern.example"
    assert "PIPELINING" in lines and "ENHANCEDSTATUSCODES" in lines


def test_accepted_message_is_spooled_exactly(world):
    rcpt = f"someone+{tag()}@inbox.example"
    rcpt_reply, data_reply = deliver(world, "127.0.0.11", rcpt, source="127.0.0.3")
    assert rcpt_reply[0] == 250 and data_reply[0] == 250
    [spooled] = world.spool_for(rcpt)
    assert isinstance(spooled, SpoolMessage)
    assert spooled.raw == MESSAGE            # dot-unstuffed, CRLF kept
    assert spooled.mail_from == "b.x.y@bounces.tern.example"
    assert spooled.rcpt_tos == [rcpt]
    assert spooled.peer_ip == "127.0.0.3"
    assert spooled.helo == "out1.tern.example"
    assert (spooled.mx_host, spooled.mx_addr) == ("mx1.inbox.example", "127.0.0.11")
    assert spooled.tls is None
    assert spooled.message["Subject"] == "world check"


def test_defer_once_then_accept(world):
    rcpt = f"defer-once+{tag()}@inbox.example"
    first, _ = deliver(world, "127.0.0.11", rcpt)
    assert first == (451, b"4.3.0 Temporary failure, please try again")
    assert world.spool_for(rcpt) == []
    second, data = deliver(world, "127.0.0.11", rcpt)
    assert second[0] == 250 and data[0] == 250
    assert len(world.spool_for(rcpt)) == 1
    rcpt_replies = [e["reply"][:3] for e in world.journal()
                    if e["stage"] == "rcpt" and e["arg"] == rcpt]
    assert rcpt_replies == ["451", "250"]


def test_scripted_failures(world):
    bounce, _ = deliver(world, "127.0.0.11", f"bounce+{tag()}@inbox.example")
    assert bounce[0] == 550
    assert bounce[1].splitlines()[0].startswith(b"5.1.1 ")
    assert bounce[1].splitlines()[-1].endswith(b"user unknown")
    for _ in range(2):
        assert deliver(world, "127.0.0.11", "defer-always@inbox.example")[0][0] == 451
    rejected = f"data-reject+{tag()}@inbox.example"
    rcpt_reply, data_reply = deliver(world, "127.0.0.11", rejected)
    assert rcpt_reply[0] == 250
    assert data_reply == (554, b"5.6.0 Message content rejected")
    assert world.spool_for(rejected) == []
    policy, _ = deliver(world, "127.0.0.13", f"anyone+{tag()}@reject.example")
    assert policy[0] == 550 and policy[1].startswith(b"5.7.1")


def test_first_twomx_host_refuses_second_accepts(world):
    with pytest.raises(ConnectionRefusedError):
        connect(world, "127.0.0.14")
    rcpt = f"someone+{tag()}@twomx.example"
    assert deliver(world, "127.0.0.15", rcpt)[1][0] == 250
    assert world.spool_for(rcpt)[0].mx_host == "mx2.twomx.example"


def test_starttls_host(world):
    rcpt = f"someone+{tag()}@tls.example"
    with connect(world, "127.0.0.18") as smtp:
        assert smtp.has_extn("starttls")
        # Opportunistic TLS between MTAs does not authenticate the server (RFC 3207
        # section 4.1 leaves it to local policy); the world's certificate is self-signed.
        context = ssl.create_default_context(cafile=world.describe["tls_cert"])
        context.check_hostname = False
        smtp.starttls(context=context)
        smtp.ehlo()
        assert smtp.sendmail("b.x.y@bounces.tern.example", [rcpt], MESSAGE) == {}
    [spooled] = world.spool_for(rcpt)
    assert spooled.tls.startswith("TLSv1.")
