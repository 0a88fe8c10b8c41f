"""The systemd units: they load without complaint and their sandbox rates well.

`systemd-analyze verify` checks every unit with ExecStart pointed at the built binaries
(the units name /usr/local/bin, where nothing is installed on a test machine), and
`systemd-analyze security --offline` rates the exposure of of each service. Running the
daemons under a real systemd is not tested here.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import REPO

UNITS = REPO / "systemd"
SERVICES = ["tern-api", "tern-scheduler", "tern-sender@1", "tern-bounce-receiver",
            "tern-reputation"]
MAX_EXPOSURE = 2  # out of 10; systemd calls up to 2 "OK"


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    binaries = REPO / ".build" / "debug"
    out = tmp_path_factory.mktemp("units")
    for unit in UNITS.iterdir():
        if unit.suffix in (".service", ".socket", ".target"):
            text = re.sub(r"/usr/local/bin/(tern-[a-z-]+)",
                          lambda m: str(binaries / m.group(1)), unit.read_text())
            (out / unit.name).write_text(text)
    return out


def analyze(*args, cwd):
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing (apt-get install systemd)"
    return subprocess.run(["systemd-analyze", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def test_every_unit_verifies(staged):
    names = [p.name for p in staged.iterdir()]
    assert {"tern.target", "tern-sender@.service", "tern-bounce-receiver.socket"} <= set(names)
    names = [n if n != "tern-sender@.service" else "tern-sender@1.service" for n in names]
    result = analyze("verify", "--man=no", *sorted(names), cwd=staged)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_sandbox_exposure(staged, service):
    result = analyze("security", "--offline=true", f"{service}.service", cwd=staged)
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert score, result.stdout + result.stderr
    assert float(score.group(1)) <= MAX_EXPOSURE, result.stdout


def test_units_are_notify_with_watchdog_and_target():
    for service in ["tern-api", "tern-scheduler", "tern-sender@", "tern-bounce-receiver",
                    "tern-reputation"]:
        text = (UNITS / f"{service}.service").read_text()
        assert "Type=notify" in text and "WatchdogSec=" in text, service
        assert "WantedBy=tern.target" in text, service
    socket = (UNITS / "tern-bounce-receiver.socket").read_text()
    assert "ListenStream=25" in socket


def test_api_with_the_dkim_drop_in(staged, tmp_path):
    """The DKIM drop-in's credentials load without complaint and keep the sandbox score."""
    drop_in = (UNITS / "tern-api.service.d" / "dkim.conf.example").read_text()
    settings = [line for line in drop_in.splitlines()
                if line and not line.startswith("#") and line != "[Service]"]
    assert "Environment=TERN_DKIM_KEYS=%d/keys" in settings
    assert any(line.startswith("LoadCredential=keys:/etc/tern/dkim/keys") for line in settings)
    unit = (staged / "tern-api.service").read_text()
    (tmp_path / "tern-api.service").write_text(
        unit.replace("[Service]\n", "[Service]\n" + "\n".join(settings) + "\n", 1))
    result = analyze("verify", "--man=no", "tern-api.service", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    result = analyze("security", "--offline=true", "tern-api.service", cwd=tmp_path)
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert score and float(score.group(1)) <= MAX_EXPOSURE, result.stdout
