"""DKIM verification of feedback reports end to end: an ARF report signed by dkimpy (the
independent implementation), with its key served by the test world's DNS, reaches the
running bounce receiver at the feedback address; the report is recorded with dkim=pass
and the signing domain. The same report altered after signing says dkim=fail."""

import hashlib
import hmac
import base64
import random
import re
import subprocess

import dkim

import harness

CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
PROVIDER = "fbl-signer.example"


def verp_address(secret_hex, message_id):
    """A VERP address signed like VERP.swift: HMAC-SHA256, 10 octets, Crockford base32."""
    tag = hmac.new(bytes.fromhex(secret_hex), message_id.encode(), hashlib.sha256).digest()
    bits = int.from_bytes(tag[:10], "big")
    sig = "".join(CROCKFORD[(bits >> (5 * (15 - i))) & 31] for i in range(16))
    return f"b.{message_id}.{sig}@{harness.VERP_DOMAIN}"


def provider_key(tmp_path, world):
    """An RSA key for the provider, its public half published at fbl._domainkey."""
    pem = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                          "rsa_keygen_bits:2048"], check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubout", "-outform", "DER"], input=pem,
                         check=True, capture_output=True).stdout
    world.set_records({f"fbl._domainkey.{PROVIDER}": {
        "TXT": ["v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()]}})
    return pem


def recorded(tern, message_id):
    """The receiver's log line for the recorded report, as key=value fields. (Its
    inbound entry carries the same fields, but the scheduler trims entries it applied,
    often before a test can read them.)"""
    for line in tern.log_path("tern-bounce-receiver").read_text(errors="replace").splitlines():
        if f"message_id={message_id} " in line and " complaint " in line:
            return dict(re.findall(r'(\w+)=("[^"]*"|\S*)', line))
    return None


def test_dkimpy_signed_report_verifies(tern, world, tmp_path):
    pem = provider_key(tmp_path, world)
    for canonicalize, tamper, verdict in [((b"simple", b"simple"), False, "pass"),
                                          ((b"relaxed", b"relaxed"), False, "pass"),
                                          ((b"relaxed", b"simple"), True, "fail")]:
        message_id = "".join(random.choice(CROCKFORD) for _ in range(26))
        verp = verp_address(tern.env["TERN_VERP_SECRET"], message_id)
        original = (f"Return-Path: <{verp}>\r\nFrom: news@tern.example\r\n"
                    f"To: reader@inbox.example\r\nSubject: Sale\r\n\r\nBuy.\r\n").encode()
        report = harness.build_arf(original, "reader@inbox.example",
                                   reporting_mta=PROVIDER)
        signature = dkim.sign(report, b"fbl", PROVIDER.encode(), pem,
                              canonicalize=canonicalize,
                              include_headers=[b"from", b"to", b"subject", b"date"])
        signed = signature + report
        if tamper:
            signed = signed.replace(b"A recipient reported", b"Somebody reported")
        with tern.bounce_smtp() as smtp:
            assert smtp.mail("feedback@" + PROVIDER)[0] == 250
            assert smtp.rcpt(harness.FBL_ADDRESS)[0] == 250
            code, reply = smtp.data(signed)
            assert code == 250, reply
        entry = harness.wait_for(lambda: recorded(tern, message_id), timeout=10,
                                 what="the report to be recorded")
        assert entry["dkim"] == verdict, (canonicalize, entry)
        assert entry["dkim_domain"] == PROVIDER
