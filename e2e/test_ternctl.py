"""ternctl against the running system: the built binary, run with the daemons' own
environment (TERN_REDIS_*, TERN_API_*), on the session's stack and test world.

status, queues, pause and resume, cancel, suppressions, pools, config check (also with
broken files), send-test end to end, and --json output that parses."""

import csv
import io
import json
import os
import re
import subprocess
import uuid

import pytest

from harness import address, wait_for


def ternctl(tern, *args, env=None, timeout=60, text=True):
    """Runs the built ternctl with the stack's environment (plus `env`); `text=False`
    keeps the output as bytes, line ends and all."""
    full = {**os.environ, **tern.env, **(env or {})}
    return subprocess.run([str(tern.bin_dir / "ternctl"), *args], env=full,
                          capture_output=True, text=text, timeout=timeout)


def ternctl_json(tern, *args, code=0, env=None):
    done = ternctl(tern, *args, "--json", env=env)
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    return json.loads(done.stdout)


def held_by_pause(tern, message_id):
    record = tern.message(message_id)
    return any(h["event"] == "held" and "pause" in h for h in record["history"])


def test_every_command_has_help(tern):
    listed = ternctl(tern, "--help")
    assert listed.returncode == 0
    names = re.findall(r"^  ([a-z-]+) ", listed.stdout, re.M)
    for name in ("status", "queues", "message", "pause", "resume", "cancel", "suppressions",
                 "ips", "pools", "config", "send-test", "classify", "providers"):
        assert name in names, listed.stdout
        helped = ternctl(tern, name, "--help")
        assert helped.returncode == 0, (name, helped.stderr)
        assert helped.stdout.startswith("usage: ternctl " + name), (name, helped.stdout)
    assert ternctl(tern, "status", "--bogus").returncode == 64


def test_status_sees_the_daemons_the_leader_and_the_streams(tern):
    report = ternctl_json(tern, "status")
    names = [d["name"] for d in report["daemons"]]
    assert any(n.startswith("scheduler-") for n in names), names
    assert any(n.startswith("sender-") for n in names), names
    assert any(n.startswith("reputation-") for n in names), names
    assert report["leader"]["instance"].startswith("scheduler-")
    streams = {s["stream"]: s for s in report["streams"]}
    assert set(streams) == {"submit", "ready", "results", "inbound", "events"}
    assert [g["group"] for g in streams["ready"]["groups"]] == ["sender"]
    assert report["problems"] == []
    text = ternctl(tern, "status")
    assert text.returncode == 0, text.stderr
    assert "leader: scheduler-" in text.stdout


def test_a_paused_group_waits_shows_in_queues_and_goes_on_resume(tern):
    group = "default:dual.example"
    paused = ternctl(tern, "pause", "group", group, "--reason", "e2e maintenance")
    assert paused.returncode == 0, paused.stderr
    try:
        message_id = tern.send(to=address("paused", "dual.example"), subject="paused",
                               text="waits")
        wait_for(lambda: held_by_pause(tern, message_id), what="a held entry")
        held = [h for h in tern.message(message_id)["history"] if h["event"] == "held"][0]
        assert held["pause"] == "group:" + group
        assert "e2e maintenance" in held["reason"]
        assert tern.message(message_id)["state"] == "queued"

        queues = ternctl_json(tern, "queues")
        mine = [g for g in queues["groups"] if g["group"] == group]
        assert mine and mine[0]["paused"] == ["group:" + group], queues["groups"]
        assert mine[0]["queued"] >= 1 and mine[0]["provider"] == "default"
        listed = ternctl_json(tern, "pause", "--list")["pauses"]
        assert [p["name"] for p in listed if p["kind"] == "group"] == [group]
        metrics = tern.scrape("tern-scheduler").body.decode()
        assert 'tern_pauses_active{kind="group"} 1' in metrics
        shown = ternctl(tern, "message", message_id)
        assert shown.returncode == 0 and "held: pause" in shown.stdout, shown.stdout
    finally:
        resumed = ternctl(tern, "resume", "group", group)
    assert resumed.returncode == 0, resumed.stderr
    tern.wait_for_state(message_id, "delivered")
    assert ternctl(tern, "resume", "group", group).returncode == 1


def test_a_pause_holds_across_a_scheduler_crash(tern):
    org = "ctl" + uuid.uuid4().hex[:8]
    assert ternctl(tern, "pause", "org", org, "--reason", "restart").returncode == 0
    try:
        message_id = tern.send(to=address("restart"), subject="held", text="x", org=org)
        wait_for(lambda: held_by_pause(tern, message_id), what="a held entry")
        tern.crash("tern-scheduler")
        # The restarted scheduler leads again and releases other mail, not this.
        other = tern.send(to=address("other"), subject="goes", text="x")
        tern.wait_for_state(other, "delivered")
        assert tern.message(message_id)["state"] == "queued"
        assert ternctl_json(tern, "pause", "--list")["pauses"][0]["reason"] == "restart"
    finally:
        assert ternctl(tern, "resume", "org", org).returncode == 0
    tern.wait_for_state(message_id, "delivered")


def test_cancel_ends_a_held_message_and_refuses_a_final_one(tern):
    org = "ctl" + uuid.uuid4().hex[:8]
    assert ternctl(tern, "pause", "org", org).returncode == 0
    try:
        message_id = tern.send(to=address("cancel"), subject="cancel me", text="x", org=org)
        wait_for(lambda: held_by_pause(tern, message_id), what="a held entry")
        done = ternctl_json(tern, "cancel", message_id)
        assert done == {"id": message_id, "cancelled": True, "state": "cancelled"}
        assert tern.message(message_id)["state"] == "cancelled"
        assert tern.event_names(message_id) == ["accepted", "cancelled"]
        again = ternctl(tern, "cancel", message_id)
        assert again.returncode == 1 and "it is cancelled" in again.stdout
    finally:
        assert ternctl(tern, "resume", "org", org).returncode == 0
    # A delivered message cannot be cancelled, through ternctl or the API.
    sent = tern.send(to=address("sent"), subject="sent", text="x")
    tern.wait_for_state(sent, "delivered")
    refused = ternctl_json(tern, "cancel", sent, code=1)
    assert refused["state"] == "delivered" and refused["cancelled"] is False
    answer = tern.http("POST", f"/v1/messages/{sent}/cancel")
    assert answer.status == 409
    assert "delivered" in answer.json()["detail"]


def test_suppressions_are_added_listed_exported_and_removed(tern):
    org = "ctl" + uuid.uuid4().hex[:8]
    assert ternctl(tern, "suppressions", "add", org, "Gone@Inbox.Example").returncode == 0
    assert ternctl_json(tern, "suppressions", "list", org)["addresses"] == ["gone@inbox.example"]
    export = ternctl(tern, "suppressions", "export", org, text=False)
    assert export.stdout == b"address\r\ngone@inbox.example\r\n"
    api = tern.http("GET", f"/v1/suppressions/{org}")
    assert api.json()["addresses"] == ["gone@inbox.example"]
    assert ternctl(tern, "suppressions", "remove", org, "gone@inbox.example").returncode == 0
    assert ternctl(tern, "suppressions", "remove", org, "gone@inbox.example").returncode == 1


def test_pools_and_ips(tern):
    pools = ternctl_json(tern, "pools")["pools"]
    default = [p for p in pools if p["pool"] == "default"][0]
    assert sorted(ip["ip"] for ip in default["ips"]) == ["127.0.0.2", "127.0.0.3"]
    assert default["active"] == 2 and default["listed"] == 0
    ips = ternctl_json(tern, "ips")["ips"]
    assert {ip["ip"]: ip["pools"] for ip in ips} == {"127.0.0.2": ["default"],
                                                     "127.0.0.3": ["default"]}
    api = tern.http("GET", "/v1/pools").json()["pools"]
    assert [p["pool"] for p in api] == ["default"]


def test_config_check_accepts_the_running_setup_and_names_what_is_broken(tern, tmp_path):
    good = ternctl_json(tern, "config", "check")
    assert good["ok"] is True, good
    providers = tmp_path / "providers.json"
    providers.write_text('{"providers": [{"name": "gmail", "messagesPerMinute": "x"}]}')
    dnsbl = tmp_path / "dnsbl.json"
    dnsbl.write_text("not json")
    broken = {"TERN_PROVIDERS_FILE": str(providers), "TERN_DNSBL_FILE": str(dnsbl)}
    done = ternctl(tern, "config", "check", env=broken)
    assert done.returncode == 1, done.stdout
    # The API reads the provider file too, to name each group's provider as the scheduler.
    assert "scheduler: WRONG: TERN_PROVIDERS_FILE" in done.stdout
    assert "api: WRONG: TERN_PROVIDERS_FILE" in done.stdout
    assert "reputation: WRONG: TERN_DNSBL_FILE" in done.stdout
    # The sender holds sessions to the profiles' connection limits, so it reads it as well.
    assert "sender: WRONG: TERN_PROVIDERS_FILE" in done.stdout
    assert "bounce-receiver: ok" in done.stdout
    report = ternctl_json(tern, "config", "check", code=1, env=broken)
    files = {f["setting"]: f for f in report["files"]}
    assert files["TERN_PROVIDERS_FILE"]["ok"] is False
    assert files["TERN_PROVIDERS_FILE"]["file"] == str(providers)
    assert files["TERN_DNSBL_FILE"]["ok"] is False


def test_config_check_parses_the_redis_url_and_the_api_keys_as_the_daemons_do(tern):
    """A TERN_REDIS_URL the daemons refuse (exit 78) and a mistyped sha256= key are named,
    and the Redis password is never shown."""
    done = ternctl(tern, "config", "check", env={"TERN_REDIS_URL": "http://:pw-secret@x"})
    assert done.returncode == 1, done.stdout
    for daemon in ("api", "scheduler", "sender", "bounce-receiver", "reputation"):
        assert f"{daemon}: WRONG: TERN_REDIS_URL: 'http://:***@x' is not" in done.stdout
    assert "pw-secret" not in done.stdout + done.stderr
    short = "sha256=" + "a" * 63 + ":acme"
    report = ternctl_json(tern, "config", "check", "--daemon", "api", code=1,
                          env={"TERN_API_KEYS": short})
    problem = report["daemons"][0]["problem"]
    assert problem.startswith("TERN_API_KEYS: an entry starts with sha256= but"), problem


def test_a_daemon_logs_its_redis_url_without_the_password(tern, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERN_")}
    port = tern.env["TERN_REDIS_URL"].rsplit(":", 1)[1].split("/")[0]
    env.update(TERN_REDIS_URL=f"redis://:pw-secret@127.0.0.1:{port}",
               TERN_INSTANCE="masktest", TERN_REDIS_PREFIX="masktest:")
    log = tmp_path / "scheduler.log"
    with open(log, "w") as out:
        daemon = subprocess.Popen([str(tern.bin_dir / "tern-scheduler")], env=env,
                                  stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        try:
            wait_for(lambda: "starting" in log.read_text(), timeout=30)
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
    text = log.read_text()
    assert "pw-secret" not in text, text
    assert f"redis=redis://:***@127.0.0.1:{port}" in text, text


def test_a_mistyped_sha256_key_stops_the_api_with_exit_78(tern):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERN_")}
    env.update(TERN_API_KEYS="sha256=" + "a" * 63 + ":acme", TERN_API_LISTEN="127.0.0.1:0",
               TERN_REDIS_URL=tern.env["TERN_REDIS_URL"])
    done = subprocess.run([str(tern.bin_dir / "tern-api")], env=env, capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 78, done.stderr
    assert "TERN_API_KEYS: an entry starts with sha256= but" in done.stderr


def test_send_test_follows_a_message_to_its_final_event(tern):
    done = ternctl(tern, "send-test", "--to", address("sendtest"), "--timeout", "30s")
    assert done.returncode == 0, (done.stdout, done.stderr)
    lines = done.stdout.splitlines()
    assert lines[0].startswith("accepted as ")
    assert any(" delivered " in line for line in lines), lines
    assert lines[-1] == "final: delivered"
    steps = ternctl(tern, "send-test", "--to", address("sendtest"), "--json")
    assert steps.returncode == 0, steps.stderr
    parsed = [json.loads(line) for line in steps.stdout.splitlines()]
    assert parsed[0]["step"] == "accepted" and parsed[-1] == {
        "step": "final", "id": parsed[0]["id"], "state": "delivered"}
    assert "delivered" in [p.get("event") for p in parsed if p["step"] == "history"]
    bounced = ternctl(tern, "send-test", "--to", address("x", "reject.example"))
    assert bounced.returncode == 1 and bounced.stdout.splitlines()[-1] == "final: bounced"


def test_pauses_say_who_set_them_and_an_org_key_cannot_lift_an_operators(tern):
    org = "who" + uuid.uuid4().hex[:8]
    assert ternctl(tern, "pause", "org", org, "--reason", "--help").returncode == 0
    try:
        listed = ternctl_json(tern, "pause", "--list")["pauses"]
        mine = [p for p in listed if p["name"] == org]
        assert mine and mine[0]["by"] == "ternctl" and mine[0]["reason"] == "--help", listed
        text = ternctl(tern, "pause", "--list").stdout
        assert re.search(rf"^org +{org} .* ternctl +--help$", text, re.M), text
    finally:
        assert ternctl(tern, "resume", "org", org).returncode == 0
    assert ternctl(tern, "pause", "provider", "nosuchprovider").returncode == 64
    refused = ternctl(tern, "pause", "org", org, "--reason", "line\nbreak")
    assert refused.returncode == 64 and "--reason" in refused.stderr, refused.stderr
    normalised = ternctl_json(tern, "pause", "group", "default:DUAL.example.")
    assert normalised["name"] == "default:dual.example"
    assert ternctl(tern, "resume", "group", "default:dual.example").returncode == 0


def test_text_output_escapes_controls_stored_in_redis(tern):
    # Data written before reasons were checked, or by hand, must not reach the terminal raw.
    org = "esc" + uuid.uuid4().hex[:8]
    hostile = "\x1b[2J\x1b]0;owned\x07\rforged line\u202e"
    pause = {"kind": "org", "name": org, "reason": hostile, "by": "old\x1b[31m",
             "since_ms": 1764800000000}
    tern.redis("HSET", tern.key("pauses"), "org:" + org, json.dumps(pause))
    try:
        text = ternctl(tern, "pause", "--list", text=False).stdout
        assert b"\x1b" not in text and b"\r" not in text and b"\x07" not in text
        assert "\u202e".encode() not in text
        assert rb"\x1b[2J\x1b]0;owned\x07\x0dforged line\u202e" in text, text
    finally:
        tern.redis("HDEL", tern.key("pauses"), "org:" + org)
    message_id = tern.send(to=address("esc"), subject="escapes", text="x")
    tern.wait_for_state(message_id, "delivered")
    tern.redis("RPUSH", tern.key("hist:" + message_id),
               json.dumps({"at": "2026-12-04T00:00:00Z", "event": "note", "detail": hostile}))
    shown = ternctl(tern, "message", message_id, text=False)
    assert shown.returncode == 0, shown.stderr
    assert b"\x1b" not in shown.stdout and b"\r" not in shown.stdout
    assert rb"detail=\x1b[2J" in shown.stdout, shown.stdout


def test_the_suppression_export_is_csv_that_reads_back(tern):
    org = "csv" + uuid.uuid4().hex[:8]
    odd = '"a,b"@inbox.example'
    assert tern.http("PUT", f"/v1/suppressions/{org}/%22a%2Cb%22%40inbox.example").status == 201
    assert ternctl(tern, "suppressions", "add", org, "plain@inbox.example").returncode == 0
    api = tern.http("GET", f"/v1/suppressions/{org}?format=csv").body.decode()
    export = ternctl(tern, "suppressions", "export", org, text=False).stdout.decode()
    assert api == export
    for text in (api, export):
        rows = list(csv.reader(io.StringIO(text, newline="")))
        assert rows == [["address"], [odd], ["plain@inbox.example"]], text
    bad = tern.http("GET", f"/v1/suppressions/{org}?format=xml")
    assert bad.status == 400 and bad.json()["field"] == "format"
