"""scripts/demo and scripts/demo.py: a SIGTERM in the middle of the start leaves nothing
running, --keep-running prints curl and ternctl commands that work as pasted, and a failed build
stops the demo with the compiler's errors."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

import harness

DEMO = harness.REPO / "scripts" / "demo.py"


def children(pid):
    """Pids of the processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces; the parent pid follows.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_leftovers(pids):
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def sleeper(path):
    path.write_text("#!/bin/sh\nexec sleep 300\n")
    path.chmod(0o755)


@pytest.mark.parametrize("stage,children_then", [("redis", 1), ("daemons", 7)])
def test_sigterm_during_start_stops_every_child(tmp_path, stage, children_then):
    # A part that never becomes ready holds the demo inside its start(): a redis-server
    # that does not answer, or daemons that never listen (after redis-server and the world).
    fake = tmp_path / "bin"
    fake.mkdir()
    env = {**os.environ, "TERN_E2E_START_TIMEOUT": "120"}
    if stage == "redis":
        sleeper(fake / "redis-server")
        env["PATH"] = f"{fake}:{env['PATH']}"
    else:
        for daemon in harness.DAEMONS:
            sleeper(fake / daemon)
        env["TERN_BIN_DIR"] = str(fake)
    demo = subprocess.Popen([sys.executable, "-u", str(DEMO), "--dir", str(tmp_path / "w")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    started = []
    try:
        started = harness.wait_for(
            lambda: (lambda c: c if len(c) >= children_then else None)(children(demo.pid)),
            timeout=60, what=f"the demo's {children_then} children")
        demo.send_signal(signal.SIGTERM)
        output = demo.communicate(timeout=60)[0].decode()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        leaked = [pid for pid in started if alive(pid)]
        stop_leftovers(started)
    assert leaked == [], output
    assert "stopped everything the demo started" in output
    # The directory stays, and the demo says where it is and how to remove it.
    work = tmp_path / "w"
    assert f"logs and delivered mail are kept in {work}; remove it with: rm -rf {work}" \
        in output, output
    assert work.is_dir()


def test_keep_running_prints_curl_and_ternctl_commands_that_work(tmp_path):
    demo = subprocess.Popen([sys.executable, "-u", str(DEMO), "--keep-running",
                             "--dir", str(tmp_path / "w")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, started = [], []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "press Ctrl-C" in line:
                break
        output = "".join(lines)
        assert "press Ctrl-C" in output, output
        assert f"key {harness.API_KEY}" in output, output
        assert "host name mta.tern.example" in output, output
        [send] = [l.strip() for l in lines if l.strip().startswith("curl") and "/v1/send" in l]
        done = subprocess.run(["bash", "-c", send + " -w '\\n%{http_code}'"],
                              capture_output=True, text=True, timeout=30)
        body, _, status = done.stdout.rpartition("\n")
        assert status == "202", (send, done.stdout, done.stderr)
        assert re.fullmatch(r'\{"id":"[0-9a-z]{26}"\}', body), body
        # The ternctl line reads the daemons' settings: it sees the scheduler lead.
        [ctl] = [l.strip() for l in lines if l.strip().split(" ")[0].endswith("/ternctl")]
        shown = subprocess.run(ctl.split(), capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0 and "leader: scheduler-" in shown.stdout, shown

        started = children(demo.pid)
        demo.send_signal(signal.SIGTERM)
        rest = demo.communicate(timeout=60)[0]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        leaked = [pid for pid in started if alive(pid)]
        stop_leftovers(started)
    assert leaked == []
    assert "stopped everything the demo started" in rest


def test_a_failed_build_stops_the_demo_with_the_compiler_errors(tmp_path):
    # A `swift` that fails the way the compiler does; nothing else on PATH changes.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "swift").write_text(
        "#!/bin/sh\n"
        "echo '[1/9] Compiling TernMail EmailAddress.swift'\n"
        "echo '/src/Sources/TernMail/EmailAddress.swift:12:5: error: cannot find x in scope'\n"
        "echo '    x = 1'\n"
        "exit 1\n")
    (fake / "swift").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    done = subprocess.run([str(harness.REPO / "scripts" / "demo")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "error: cannot find x in scope" in done.stderr, (done.stdout, done.stderr)
    assert "swift build failed" in done.stderr
    assert "demo directory" not in done.stdout
