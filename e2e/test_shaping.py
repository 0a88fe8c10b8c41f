"""The scheduler's shaping against real SMTP peers: a host that says "slow down" (the rate
for that IP drops, then climbs back), a host that refuses one sending IP (that IP pauses
for that destination only; the mail goes out from the other), and a burst of hard bounces
from one organisation (its breaker opens and holds its mail; another keeps sending).

Own stack, with a fast throttle so that recovery takes seconds, not hours."""

import uuid

import pytest

import harness
from harness import wait_for


@pytest.fixture(scope="module")
def shaping(tmp_path_factory, world):
    base = tmp_path_factory.mktemp("shaping")
    redis = harness.RedisServer(base / "redis")
    redis.start()
    providers = base / "providers.json"
    providers.write_text('{"providers": [{"name": "default", "messagesPerMinute": 600}]}')
    stack = harness.TernStack(base / "tern", redis, world, extra_env={
        "TERN_PROVIDERS_FILE": str(providers),
        "TERN_THROTTLE_BACKOFF": "1s",
        "TERN_THROTTLE_STEP": "3",
        "TERN_THROTTLE_BLOCK_PAUSE": "1h",
        "TERN_BREAKER_MIN_SAMPLE": "4",
        "TERN_BREAKER_COOL_DOWN": "1h",
        "TERN_RETRY_DELAYS": "1s",
        "TERN_LOG_LEVEL": "info",
    })
    stack.start()
    yield stack
    stack.stop()
    redis.stop()


def throttle(stack, ip, provider):
    listed = stack.http("GET", "/v1/throttles").json()["throttles"]
    return next((t for t in listed if t["ip"] == ip and t["provider"] == provider), None)


def test_slow_down_halves_the_rate_then_it_climbs_back(shaping, world):
    tag = uuid.uuid4().hex[:8]
    first = shaping.send(to=f"rate-once+{tag}@inbox.example", subject="rate", text="x")
    shaping.wait_for_state(first, "delivered")          # 421 first, delivered on the retry
    record = shaping.message(first)
    assert [a["code"] for a in record["attempts"]] == [421, 250]
    slowed_ip = record["attempts"][0]["ip"]
    # The 421's IP fell to half its 600/min; the scheduler says why.
    history = []
    def halved():
        t = throttle(shaping, slowed_ip, "default:inbox.example")
        history.append(t)
        return t if t and t["rate"] < 600 else None
    slowed = wait_for(halved, timeout=10, what="the rate to drop")
    assert slowed["rate"] == 300
    assert slowed["reason"].startswith("slow down: 4.7.0 Try again later")
    # Sustained success brings it back to the ceiling, a tenth at a time.
    for n in range(40):
        shaping.send(to=f"ok{n}+{tag}@inbox.example", subject="after", text="x")
    recovered = wait_for(
        lambda: (t := throttle(shaping, slowed_ip, "default:inbox.example"))
        and t["rate"] == 600 and t, timeout=60, what="the rate to climb back to 600")
    assert recovered["state"] == "steady"


def test_an_ip_refused_by_one_destination_pauses_there_only(shaping, world):
    tag = uuid.uuid4().hex[:8]
    ids = [shaping.send(to=f"block-127-0-0-2+{tag}{n}@tls.example", subject="b", text="x")
           for n in range(4)]
    for message_id in ids:
        record = shaping.wait_for_state(message_id, "delivered")
        # Never bounced for the IP's sake: whatever 127.0.0.2 was refused went from .3.
        assert record["attempts"][-1]["ip"] == "127.0.0.3"
        assert all(a["code"] in (250, 554) for a in record["attempts"])
    paused = throttle(shaping, "127.0.0.2", "default:tls.example")
    assert paused["state"] == "paused"
    assert "blocked using zen.dnsbl.example" in paused["reason"]
    events = [f for _, f in shaping.redis.xrange(shaping.key("stream:events"))
              if f.get("event") == "ip_paused"]
    assert any('"ip":"127.0.0.2"' in e["json"] and "default:tls.example" in e["json"]
               for e in events)
    assert shaping.redis("SCARD", shaping.key("supp:default")) in (0, None)
    # The same IP still sends elsewhere.
    others = [shaping.send(to=f"other{n}+{tag}@inbox.example", subject="o", text="x")
              for n in range(6)]
    ips = {shaping.wait_for_state(i, "delivered")["attempts"][-1]["ip"] for i in others}
    assert "127.0.0.2" in ips


def test_a_burst_of_hard_bounces_opens_that_organisations_breaker(shaping, world):
    tag = uuid.uuid4().hex[:8]
    for n in range(4):
        bounced = shaping.send(to=f"bounce+{tag}{n}@inbox.example", subject="b", text="x",
                               org="spammy")
        shaping.wait_for_state(bounced, "bounced")
    opened = wait_for(
        lambda: [f for _, f in shaping.redis.xrange(shaping.key("stream:events"))
                 if f.get("event") == "breaker_opened" and '"org":"spammy"' in f["json"]],
        timeout=20, what="the breaker to open")
    assert "bounce rate 100.00%" in opened[0]["json"]
    held = shaping.send(to=f"fine+{tag}@inbox.example", subject="held", text="x", org="spammy")
    clean = shaping.send(to=f"fine+{tag}@inbox.example", subject="goes", text="x", org="clean")
    shaping.wait_for_state(clean, "delivered")
    def held_in_history():
        record = shaping.message(held)
        return record if any(h["event"] == "held" for h in record["history"]) else None
    record = wait_for(held_in_history, timeout=20, what="the held entry")
    assert record["state"] == "queued"
    breakers = shaping.http("GET", "/v1/breakers").json()["breakers"]
    assert {b["org"]: b["state"] for b in breakers}.get("spammy") == "open"
