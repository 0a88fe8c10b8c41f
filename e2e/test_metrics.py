"""Every daemon's /metrics, read as Prometheus would and checked by a strict parser of the
text exposition format 0.0.4; and /health on every daemon's metrics port.

The parser (`parse`) refuses anything the format does not allow: a sample before its
family's TYPE, a family split in two, a TYPE or HELP given twice, a bad metric or label
name, an escape other than \\\\, \\" and \\n, a duplicate series, a value that is not a
float, a counter not ending in _total, histogram buckets that are not cumulative or whose
+Inf bucket differs from _count.
"""

import math
import re
import uuid

import pytest

import harness

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
CONTENT_TYPE = "text/plain; version=0.0.4"


class FormatError(AssertionError):
    pass


def parse_value(text, where):
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?)", text):
        raise FormatError(f"{where}: {text!r} is not a float")
    return float(text)


def parse_labels(text, where):
    """`a="x",b="y"` (the part inside braces) -> tuple of pairs, in order."""
    labels, i = [], 0
    while i < len(text):
        m = LABEL.match(text, i)
        if not m:
            raise FormatError(f"{where}: bad label name at {text[i:]!r}")
        name, i = m.group(), m.end()
        if text[i:i + 2] != '="':
            raise FormatError(f"{where}: label {name} has no quoted value")
        i += 2
        value = []
        while True:
            if i >= len(text):
                raise FormatError(f"{where}: unterminated value of {name}")
            c = text[i]
            if c == "\\":
                escaped = text[i + 1:i + 2]
                if escaped not in ("\\", '"', "n"):
                    raise FormatError(f"{where}: bad escape \\{escaped} in {name}")
                value.append("\n" if escaped == "n" else escaped)
                i += 2
            elif c == '"':
                i += 1
                break
            elif c == "\n":
                raise FormatError(f"{where}: raw line feed in {name}")
            else:
                value.append(c)
                i += 1
        if name in dict(labels):
            raise FormatError(f"{where}: label {name} given twice")
        labels.append((name, "".join(value)))
        if i < len(text):
            if text[i] != ",":
                raise FormatError(f"{where}: expected ',' after {name}")
            i += 1
    return tuple(labels)


def family_of(sample_name, types):
    for suffix in ("_bucket", "_sum", "_count"):
        base = sample_name[:-len(suffix)] if sample_name.endswith(suffix) else None
        if base and types.get(base) == "histogram":
            return base
    return sample_name


def parse(text):
    """Exposition text -> {family: {"type", "help", "samples": {(name, labels): value}}}."""
    if not text.endswith("\n"):
        raise FormatError("the text must end with a line feed")
    families, types, finished, current = {}, {}, set(), None
    for number, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {number} {line!r}"
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not NAME.fullmatch(name):
                    raise FormatError(f"{where}: bad metric name")
                if name in finished:
                    raise FormatError(f"{where}: family {name} appears twice")
                if current and current != name:
                    finished.add(current)
                current = name
                family = families.setdefault(name, {"type": None, "help": None,
                                                    "samples": {}})
                key = parts[1].lower()
                if family[key] is not None:
                    raise FormatError(f"{where}: second {parts[1]} for {name}")
                if key == "type":
                    if family["samples"]:
                        raise FormatError(f"{where}: TYPE after samples of {name}")
                    if len(parts) != 4 or parts[3] not in TYPES:
                        raise FormatError(f"{where}: unknown type")
                    types[name] = parts[3]
                    family["type"] = parts[3]
                else:
                    family["help"] = parts[3] if len(parts) == 4 else ""
            continue
        m = re.fullmatch(r"([^{ ]+)(?:\{(.*)\})? ([^ ]+)(?: (-?\d+))?", line)
        if not m:
            raise FormatError(f"{where}: not a sample line")
        name, raw_labels, raw_value = m.group(1), m.group(2), m.group(3)
        if not NAME.fullmatch(name):
            raise FormatError(f"{where}: bad metric name")
        base = family_of(name, types)
        if base != current:
            raise FormatError(f"{where}: sample outside its family's block "
                              f"(TYPE must come first, families must not interleave)")
        family = families[base]
        if family["type"] is None:
            raise FormatError(f"{where}: sample of {base} before its TYPE")
        labels = parse_labels(raw_labels or "", where)
        key = (name, labels)
        if key in family["samples"]:
            raise FormatError(f"{where}: duplicate series")
        family["samples"][key] = parse_value(raw_value, where)
    for name, family in families.items():
        check_family(name, family)
    return families


def check_family(name, family):
    if family["type"] == "counter":
        if not name.endswith("_total"):
            raise FormatError(f"counter {name} does not end in _total")
        for (_, _), value in family["samples"].items():
            if value < 0 or math.isnan(value):
                raise FormatError(f"counter {name} has value {value}")
    if family["type"] != "histogram":
        return
    series = {}
    for (sample, labels), value in family["samples"].items():
        rest = tuple(p for p in labels if p[0] != "le")
        entry = series.setdefault(rest, {"buckets": [], "count": None, "sum": None})
        if sample == name + "_bucket":
            le = dict(labels).get("le")
            if le is None:
                raise FormatError(f"{name}: bucket without le")
            entry["buckets"].append((parse_value(le, name), value))
        elif sample == name + "_count":
            entry["count"] = value
        elif sample == name + "_sum":
            entry["sum"] = value
    for rest, entry in series.items():
        bounds = [b for b, _ in entry["buckets"]]
        counts = [c for _, c in entry["buckets"]]
        if bounds != sorted(bounds) or not bounds or bounds[-1] != math.inf:
            raise FormatError(f"{name}{rest}: buckets unordered or without +Inf")
        if counts != sorted(counts):
            raise FormatError(f"{name}{rest}: buckets are not cumulative")
        if entry["count"] != counts[-1] or entry["sum"] is None:
            raise FormatError(f"{name}{rest}: _count differs from the +Inf bucket or no _sum")


def value(families, name, **labels):
    """The sample `name` whose labels include `labels`, summed over the rest."""
    base = family_of(name, {n: f["type"] for n, f in families.items()})
    total, found = 0.0, False
    for (sample, got), v in families.get(base, {"samples": {}})["samples"].items():
        if sample == name and all(dict(got).get(k) == w for k, w in labels.items()):
            total, found = total + v, True
    return total if found else None


def scrape(tern, daemon):
    response = tern.scrape(daemon)
    assert response.status == 200, (daemon, response.status, response.body)
    assert response.headers.get("Content-Type") == CONTENT_TYPE, response.headers
    return parse(response.body.decode("utf-8"))


# --- the parser itself ---------------------------------------------------------------------

GOOD = ('# HELP a_total A "count".\n# TYPE a_total counter\na_total{x="q\\"\\\\\\n"} 1\n'
        '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3.5\nh_count 2\n')


def test_parser_reads_good_text():
    families = parse(GOOD)
    assert value(families, "a_total", x='q"\\\n') == 1
    assert value(families, "h_count") == 2


@pytest.mark.parametrize("bad", [
    "a_total 1\n",                                           # no TYPE
    "# TYPE a_total counter\na_total 1",                     # no final line feed
    "# TYPE a_total counter\na_total{x=\"\\t\"} 1\n",        # bad escape
    "# TYPE a_total counter\na_total one\n",                 # not a float
    "# TYPE a counter\na 1\n",                               # counter without _total
    "# TYPE g gauge\ng 1\n# TYPE h gauge\nh 1\ng 2\n",       # interleaved family
    "# TYPE g gauge\ng 1\ng 2\n",                            # duplicate series
    '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
])
def test_parser_refuses_bad_text(bad):
    with pytest.raises(FormatError):
        parse(bad)


# --- the daemons ---------------------------------------------------------------------------

def test_every_daemon_serves_health_on_its_metrics_port(tern):
    for daemon in harness.DAEMONS:
        if daemon == "tern-api":
            continue
        response = tern.scrape(daemon, "/health")
        assert response.status == 200, (daemon, response.body)
        assert response.json() == {"status": "ok"}


def test_metrics_of_every_daemon_after_one_delivery(tern):
    before = {d: scrape(tern, d) for d in harness.DAEMONS}
    message_id = tern.send(to=f"metrics+{uuid.uuid4().hex[:12]}@inbox.example",
                           subject="metrics", text="counted\n")
    tern.wait_for_state(message_id, "delivered")

    def delta(daemon, after, name, **labels):
        return (value(after, name, **labels) or 0) - (value(before[daemon], name, **labels)
                                                      or 0)

    def scheduler_counted():
        after = scrape(tern, "tern-scheduler")
        return after if delta("tern-scheduler", after, "tern_scheduler_attempts_total",
                              outcome="delivered", reply_class="2xx") == 1 else None
    scheduler = harness.wait_for(scheduler_counted, timeout=10, what="the delivered attempt")
    assert delta("tern-scheduler", scheduler, "tern_scheduler_releases_total") == 1
    assert value(scheduler, "tern_stream_length", stream="submit") is not None
    assert value(scheduler, "tern_stream_pending", stream="results", group="scheduler") == 0
    assert value(scheduler, "tern_throttle_rate_per_minute") > 0

    api = scrape(tern, "tern-api")
    assert delta("tern-api", api, "tern_api_messages_accepted_total") == 1
    # From sender@tern.example: the session's DKIM keys sign it.
    assert delta("tern-api", api, "tern_api_dkim_messages_total", result="signed") == 1
    assert value(api, "tern_counters_total", counter="dkim.signed") >= 1

    sender = scrape(tern, "tern-sender")
    assert delta("tern-sender", sender, "tern_sender_deliveries_total") == 1
    assert delta("tern-sender", sender, "tern_dns_lookups_total", type="MX", result="ok") >= 1
    assert value(sender, "tern_dns_lookup_duration_seconds_count", type="MX") >= 1
    assert value(sender, "tern_sender_deliveries_in_flight") is not None

    bounce = scrape(tern, "tern-bounce-receiver")
    assert value(bounce, "tern_bounce_sessions_active") is not None
    assert value(bounce, "tern_stream_length", stream="inbound") is not None

    def reputation_checked():
        after = scrape(tern, "tern-reputation")
        return after if value(after, "tern_reputation_ip_listed", ip="127.0.0.3",
                              list="zen-test") is not None else None
    reputation = harness.wait_for(reputation_checked, timeout=15, what="a blocklist round")
    assert value(reputation, "tern_reputation_ip_listed", ip="127.0.0.3", list="zen-test") == 0
    assert value(reputation, "tern_reputation_dnsbl_lookups_total") >= 1
    assert value(reputation, "tern_reputation_pool_active_ips", pool="default") is not None

    for daemon, families in [("tern-api", api), ("tern-scheduler", scheduler),
                             ("tern-sender", sender), ("tern-bounce-receiver", bounce),
                             ("tern-reputation", reputation)]:
        assert value(families, "process_resident_memory_bytes") > 1_000_000, daemon
        # An idle daemon may not have used one clock tick yet; a counter never goes back.
        assert delta(daemon, families, "process_cpu_seconds_total") >= 0, daemon
    # The scheduler's release loop polls every 20 ms: it has spent some CPU by now.
    assert value(scheduler, "process_cpu_seconds_total") > 0
