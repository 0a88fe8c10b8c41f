"""The reputation monitor end to end: the built tern-reputation checks the pool's IPs
through the test world's DNS (blocklist zones under .example, testworld/dnsbl.json) and
counts what the sender reports, beside the scheduler on the same streams."""

import uuid

from harness import POOL_IPS, PREFIX


def test_pool_ips_pass_their_checks_and_stay_active(tern, wait_for):
    redis = tern.redis
    everyone = ",".join(POOL_IPS)
    wait_for(lambda: redis("GET", f"{PREFIX}pool:default:active") == everyone,
             what="the pool's active IPs")
    for ip in POOL_IPS:
        state = wait_for(lambda: (s := redis.hgetall(f"{PREFIX}ip:{ip}"))
                         and s.get("identity") == "ok" and s, what=f"{ip} checked")
        assert state["status"] == "active"
        assert state["errors"] == "" and state["unknown"] == ""


def test_outcomes_are_counted_per_ip_and_the_scheduler_still_gets_them(tern, wait_for):
    redis = tern.redis
    to = f"alice+{uuid.uuid4().hex[:12]}@inbox.example"
    message_id = tern.send(to=to, subject="counted", text="hi", org="acme", pool="default")
    tern.wait_for_state(message_id, "delivered")
    groups = {g["name"] for g in redis.xinfo_groups(f"{PREFIX}stream:results")}
    assert groups == {"scheduler", "reputation"}

    def counted():
        # inbox.example has no provider profile: it counts under `*`, every other provider.
        keys = redis("KEYS", f"{PREFIX}stats:h:prov:\\*:*")
        return sum(int(redis.hgetall(k).get("delivered", 0)) for k in keys)

    assert wait_for(counted, what="a delivery counted for inbox.example under *") >= 1
    # Both groups have read everything, so nothing is left behind in the stream.
    wait_for(lambda: redis("XLEN", f"{PREFIX}stream:results") == 0,
             what="results trimmed once both groups acknowledged")
