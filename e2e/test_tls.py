"""STARTTLS end to end: the sender encrypts to tls.example and records it in the attempt,
and the built bounce receiver offers STARTTLS and takes a new certificate on SIGHUP
without dropping a session that is open.
"""

import os
import signal
import smtplib
import socket
import ssl
import subprocess
import uuid

from harness import REPO, free_port, stop_process, wait_for


def test_message_to_tls_example_arrives_over_tls(tern, world):
    to = f"secure+{uuid.uuid4().hex[:12]}@tls.example"
    message_id = tern.send(to=to, subject="over TLS", text="encrypted on the way")
    record = tern.wait_for_state(message_id, "delivered")

    [spooled] = world.spool_for(to)
    assert spooled.mx_host == "mx.tls.example"
    assert spooled.tls and spooled.tls.startswith("TLSv1.3 "), spooled.meta
    [attempt] = record["attempts"]
    assert attempt["outcome"] == "delivered"
    assert attempt["tls_version"] == "TLSv1.3"
    assert attempt["tls"] == spooled.tls            # "TLSv1.3 <cipher>", as the host saw
    assert spooled.tls.endswith(" " + attempt["tls_cipher"])
    assert attempt["tls_verified"] is True           # the harness trusts the world's cert


def test_clear_text_attempt_has_no_tls_fields(tern, world):
    to = f"plain+{uuid.uuid4().hex[:12]}@inbox.example"
    message_id = tern.send(to=to, subject="in clear", text="no STARTTLS offered")
    [attempt] = tern.wait_for_state(message_id, "delivered")["attempts"]
    assert attempt["tls"] == ""
    assert "tls_version" not in attempt and "tls_verified" not in attempt
    assert world.spool_for(to)[0].tls is None


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_ca(directory):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=Tern e2e CA", "-keyout", "ca.key",
            "-out", "ca.crt", cwd=directory)
    return directory / "ca.crt"


def make_leaf(directory, name):
    """A certificate for `name` signed by the CA, written over bounce.crt / bounce.key."""
    (directory / "leaf.ext").write_text(f"subjectAltName=DNS:{name}\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", f"/CN={name}", "-keyout", "bounce.key", "-out", "bounce.csr",
            cwd=directory)
    openssl("x509", "-req", "-in", "bounce.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "leaf.ext", "-out", "bounce.crt",
            cwd=directory)


def tls_session(port, ca, name):
    """An SMTP session after STARTTLS; its certificate must chain to `ca` and name `name`."""
    smtp = smtplib.SMTP("127.0.0.1", port, local_hostname="mx1.inbox.example", timeout=10)
    smtp.ehlo()
    assert smtp.has_extn("starttls")
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False     # we connect to 127.0.0.1; the name is checked below
    smtp.starttls(context=context)
    names = [v for k, v in smtp.sock.getpeercert()["subjectAltName"] if k == "DNS"]
    assert names == [name]
    return smtp


def test_bounce_receiver_reloads_its_certificate_on_sighup(redis_server, tmp_path):
    ca = make_ca(tmp_path)
    make_leaf(tmp_path, "old.tern.example")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERN_")}
    env.update({
        "TERN_REDIS_URL": redis_server.url, "TERN_REDIS_PREFIX": "tls-e2e:",
        "TERN_BOUNCE_LISTEN": f"127.0.0.1:{port}", "TERN_VERP_DOMAIN": "bounces.tern.example",
        "TERN_VERP_SECRET": "ab" * 32, "TERN_BOUNCE_GREET_DELAY": "0ms",
        "TERN_BOUNCE_TLS_CERT": str(tmp_path / "bounce.crt"),
        "TERN_BOUNCE_TLS_KEY": str(tmp_path / "bounce.key"),
    })
    binary = os.environ.get("TERN_BIN_DIR") or str(REPO / ".build" / "debug")
    log = open(tmp_path / "bounce.stderr", "wb")
    process = subprocess.Popen([os.path.join(binary, "tern-bounce-receiver")], env=env,
                               stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        def greets():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    return s.recv(100).startswith(b"220")
            except OSError:
                return False
        wait_for(greets, timeout=30, what="the bounce receiver's greeting")

        before = tls_session(port, ca, "old.tern.example")
        assert before.sock.version() == "TLSv1.3"
        make_leaf(tmp_path, "new.tern.example")
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: b"STARTTLS certificate reloaded" in
                 (tmp_path / "bounce.stderr").read_bytes(), timeout=10, what="the reload")

        after = tls_session(port, ca, "new.tern.example")
        assert after.noop()[0] == 250
        after.quit()
        # The session opened before SIGHUP is still there, over its TLS.
        assert before.ehlo()[0] == 250 and not before.has_extn("starttls")
        assert before.noop()[0] == 250
        before.quit()
        assert process.poll() is None
    finally:
        status = stop_process(process)        # SIGTERM, as systemd stops it
        log.close()
    assert status == 0, (tmp_path / "bounce.stderr").read_text()
