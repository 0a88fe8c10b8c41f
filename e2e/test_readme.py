"""The README's examples work as written: its curl commands, pointed at the session's API
with its key, send a message and look it up."""

import json
import re
import subprocess

import harness

EXAMPLE_ID = "01kbx4f1vqd7k8n3p2w9c6t5ya"


def readme_commands():
    """The indented `curl` commands of the README, each with its continuation lines (after
    a backslash, or inside an open single quote)."""
    text = (harness.REPO / "README.md").read_text(encoding="utf-8")
    commands, current = [], None
    for line in text.splitlines():
        if current is not None:
            joined = "\n".join(current)
            if joined.endswith("\\") or joined.count("'") % 2 == 1:
                current.append(line.strip())
                continue
            current = None
        if line.startswith("    curl "):
            current = [line.strip()]
            commands.append(current)
    return ["\n".join(c) for c in commands]


def run(command, tern, message_id=EXAMPLE_ID):
    command = (command.replace("http://127.0.0.1:8025", f"http://127.0.0.1:{tern.api_port}")
               .replace("Bearer KEY", f"Bearer {harness.API_KEY}")
               .replace(EXAMPLE_ID, message_id))
    done = subprocess.run(["bash", "-c", command + " -w '\\n%{http_code}'"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


def test_the_readme_send_example_is_accepted_and_can_be_looked_up(tern):
    commands = readme_commands()
    send = [c for c in commands if "/v1/send" in c]
    lookup = [c for c in commands if "/v1/messages/" in c]
    assert len(send) == 1 and len(lookup) == 1, commands
    assert re.search(r"-d '\{.*\}'", send[0], re.S), send[0]

    status, body = run(send[0], tern)
    assert status == 202, body
    message_id = json.loads(body)["id"]
    assert harness.MESSAGE_ID.match(message_id)

    status, body = run(lookup[0], tern, message_id)
    assert status == 200, body
    record = json.loads(body)
    assert record["id"] == message_id
    assert record["to"] == "alice@example.net"
