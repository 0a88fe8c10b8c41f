"""Tern's main job, end to end, on an embedded default: a private Redis, a loopback test
world standing in for the Internet (DNS + MX hosts on 127.0.0.x), and the five daemons.

Sends three messages through the HTTP API (one delivered, one deferred then delivered, one
bounced), shows each one arriving at its MX host and every event it produces, then, with
--keep-running, leaves everything up until Ctrl-C. Everything it starts is stopped on exit,
interrupt included; its directory (logs, delivered mail) is kept and named at the end.
Nothing leaves 127.0.0.0/8.
"""

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
import harness  # noqa: E402  (the same process management the end-to-end tests use)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--keep-running", action="store_true",
                        help="leave the stack running after the demo, until Ctrl-C")
    parser.add_argument("--dir", help="where logs and the MX spool go (default: a temp dir)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))

    work = Path(args.dir or tempfile.mkdtemp(prefix="tern-demo-"))
    print(f"demo directory: {work} (daemon logs in tern/, delivered mail in world/spool/)")
    # Each part is known to the cleanup below before it starts anything: a SIGTERM in the
    # middle of a start still finds the processes it had begun (harness.spawn).
    parts = []
    # Ctrl-C is how --keep-running is meant to end (exit 0); before that it cuts the demo short.
    interrupted_code = 130
    try:
        redis = harness.RedisServer(work / "redis")
        parts.append(redis)
        redis.start()
        print(f"redis        127.0.0.1:{redis.port}")
        world = harness.WorldProcess(work / "world")
        parts.append(world)
        world.start()
        print(f"test world   DNS 127.0.0.1:{world.dns_port}, MX hosts 127.0.0.11-.19 "
              f"port {world.smtp_port}")
        stack = harness.TernStack(work / "tern", redis, world,
                                  extra_env={"TERN_RETRY_DELAYS": "3s", "TERN_LOG_LEVEL": "info"})
        parts.append(stack)
        stack.start()
        print(f"tern         API http://127.0.0.1:{stack.api_port}, bounce receiver "
              f"127.0.0.1:{stack.bounce_port}, senders from 127.0.0.2 and 127.0.0.3, "
              f"host name {stack.env['TERN_HOSTNAME']}\n")
        run_demo(stack, world)
        if args.keep_running:
            print(try_it(stack), flush=True)
            print("\nTern is running; press Ctrl-C to stop everything.", flush=True)
            interrupted_code = 0
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("\ninterrupted")
        sys.exit(interrupted_code)
    finally:
        for part in reversed(parts):
            part.stop()
        print("stopped everything the demo started", flush=True)
        # The logs are what a user looks at after a surprise, so the directory stays.
        print(f"logs and delivered mail are kept in {work}; remove it with: rm -rf {work}",
              flush=True)


def try_it(stack):
    """What to paste into another terminal while the demo keeps running."""
    api = f"http://127.0.0.1:{stack.api_port}"
    body = json.dumps({"from": harness.SENDER, "to": "alice@inbox.example",
                       "subject": "Hello", "text": "Hi Alice"})
    return "\n".join([
        f"\nAPI {api}, key {harness.API_KEY}. Try it:",
        f"  curl -s {api}/v1/send -H 'Authorization: Bearer {harness.API_KEY}' "
        f"-H 'Content-Type: application/json' -d '{body}'",
        f"  curl -s {api}/v1/messages/ID -H 'Authorization: Bearer {harness.API_KEY}'",
        f"Delivered mail lands in {stack.world.spool}/.",
        "The operators' tool, with the daemons' own settings:",
        f"  {stack.bin_dir / 'ternctl'} status --env-file {env_file(stack)}",
    ])


def env_file(stack):
    """The daemons' settings as KEY=VALUE lines, for ternctl's --env-file."""
    path = stack.directory / "tern.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in sorted(stack.env.items())))
    return path


def run_demo(stack, world):
    messages = {
        "delivered": "alice@inbox.example",
        "deferred, then delivered": "defer-once+demo@inbox.example",
        "bounced": "bounce+demo@inbox.example",
    }
    ids = {}
    for story, rcpt in messages.items():
        message_id = stack.send(to=rcpt, subject=f"Tern demo: {story}",
                                text=f"This message should end up {story}.\n",
                                metadata={"story": story})
        ids[message_id] = rcpt
        print(f"POST /v1/send  to={rcpt:32} -> 202 id={message_id}")
    print()

    finals = {}
    shown_events, shown_spool = set(), set()
    deadline = time.monotonic() + 60
    while len(finals) < len(ids) and time.monotonic() < deadline:
        for message_id, rcpt in ids.items():
            for event in stack.events(message_id):
                if event.stream_id in shown_events:
                    continue
                shown_events.add(event.stream_id)
                data = event.data
                said = data.get("reply") or data.get("status") or ""
                said = " ".join(said.split())
                print(f"event {event.event:10} id={message_id} to={rcpt}"
                      + (f"  remote said: {said}" if said else ""))
                if event.event in harness.FINAL_STATES:
                    finals[message_id] = event.event
        for spooled in world.spool_messages():
            if spooled.path in shown_spool:
                continue
            shown_spool.add(spooled.path)
            print(f"arrived at {spooled.mx_host} ({spooled.mx_addr}) from {spooled.peer_ip} "
                  f"helo={spooled.helo} MAIL FROM:<{spooled.mail_from}> "
                  f"RCPT TO:<{', '.join(spooled.rcpt_tos)}> {spooled.size} bytes")
        time.sleep(0.2)

    print("\nfinal states, from GET /v1/messages/{id}:")
    ok = True
    for message_id, rcpt in ids.items():
        record = stack.message(message_id)
        attempts = "; ".join(f"{a['outcome']} {a['code']} via {a['mx']} from {a['ip']}"
                             for a in record.get("attempts", []))
        print(f"  {message_id} {rcpt:32} {record['state']:10} attempts: {attempts}")
    expected = ["delivered", "delivered", "bounced"]
    got = [finals.get(message_id) for message_id in ids]
    if got != expected:
        ok = False
        print(f"\nunexpected outcome: {got}, wanted {expected}; see the logs under "
              f"{stack.directory}")
    if not ok:
        sys.exit(1)
    print("\nall three messages reached the state their story promised")


if __name__ == "__main__":
    main()
