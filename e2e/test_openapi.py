"""docs/openapi.yaml against the running API: every documented path and method exists, the
API offers no method the document leaves out (its 405 answers list the methods in Allow),
serves no path the document leaves out, and real answers, with a key and without, have
documented status codes, media types, required headers and the required fields of their
documented schemas.

The API runs on its own here, on the session's Redis under a prefix of its own
(`openapi:`), so that what this test writes (a suppression, a warm-up plan, engagement
scores) touches no other test's data. Its one webhook endpoint, `crm`, points at a closed
loopback port, so that its deliveries are given up within seconds and the failed list and
its retries have something to show.
"""

import http.client
import json
import re
import socket

import pytest
import yaml

import harness


class StrictLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping: PyYAML keeps the last silently,
    and a property described twice is described wrongly once."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        twice = sorted({str(k) for k in keys if keys.count(k) > 1})
        if twice:
            raise yaml.constructor.ConstructorError(
                None, None, f"{twice} given twice", node.start_mark)
        return super().construct_mapping(node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                             StrictLoader.construct_mapping)
SPEC = yaml.load((harness.REPO / "docs" / "openapi.yaml").read_text(), Loader=StrictLoader)
METHODS = ("get", "put", "post", "delete", "patch")
# Path parameters known only once the API runs (a message id, a failed delivery's id); the
# others take their documented `example`, so the examples are real values too.
RUNTIME_VALUES = {}
API_SOURCES = harness.REPO / "Sources" / "TernAPI"


def resolve(node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = SPEC
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def operations():
    for path, item in SPEC["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


OPERATIONS = list(operations())


def path_values(path):
    """Each path parameter of `path`: its runtime value, else its documented example."""
    item = SPEC["paths"][path]
    values = {}
    declared = list(item.get("parameters", []))
    for method in METHODS:
        declared += item.get(method, {}).get("parameters", [])
    for parameter in map(resolve, declared):
        if parameter["in"] == "path" and "example" in parameter:
            values[parameter["name"]] = parameter["example"]
    values.update(RUNTIME_VALUES)
    return values


def failed_ids(stack):
    answer = stack.http("GET", "/v1/webhooks/crm/failed")
    assert answer.status == 200, answer.body
    return [f["event_id"] for f in answer.json()["failed"]]


def check(value, schema, where):
    """The documented shape, as far as the document pins it: types, enums, required
    members, items; recursively."""
    schema = resolve(schema)
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        python = {"object": dict, "array": list, "string": str, "boolean": bool,
                  "integer": int, "number": (int, float), "null": type(None)}
        assert any(isinstance(value, python[n]) and not (n in ("integer", "number")
                   and isinstance(value, bool)) for n in names), (where, value, names)
    if "const" in schema:
        assert value == schema["const"], (where, value)
    if "enum" in schema:
        assert value in schema["enum"], (where, value)
    if "pattern" in schema and isinstance(value, str):
        assert re.search(schema["pattern"], value), (where, value)
    if isinstance(value, dict):
        for name in schema.get("required", []):
            assert name in value, (where, name, value)
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                check(value[name], sub, f"{where}.{name}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            check(item, schema["items"], f"{where}[{i}]")


def check_answer(response, operation, where):
    documented = operation["responses"]
    assert str(response.status) in documented, (where, response.status, response.body)
    answer = resolve(documented[str(response.status)])
    headers = {k.lower(): v for k, v in response.headers.items()}
    for name, header in answer.get("headers", {}).items():
        if resolve(header).get("required"):
            assert headers.get(name.lower()), (where, name)
    content = answer.get("content", {})
    media = headers.get("content-type", "").split(";")[0].strip()
    assert media in content, (where, media, list(content))
    if media.endswith("json"):
        check(response.json(), content[media]["schema"], where)


@pytest.fixture(scope="module")
def api(e2e_dir, redis_server, world):
    # Nothing listens on the endpoint's port: every post fails at once.
    closed = harness.free_port()
    stack = harness.TernStack(e2e_dir / "openapi", redis_server, world, extra_env={
        "TERN_REDIS_PREFIX": "openapi:",
        "TERN_API_KEYS": f"{harness.API_KEY},acme-key:acme,ops-key:@ops",
        "TERN_WEBHOOKS": json.dumps([{"name": "crm", "url": f"http://127.0.0.1:{closed}/",
                                      "secret": "openapi-secret-0123456789"}]),
        "TERN_WEBHOOK_BACKOFF": "200ms", "TERN_WEBHOOK_BACKOFF_MAX": "500ms",
        "TERN_WEBHOOK_RETRY_FOR": "1s", "TERN_WEBHOOK_TIMEOUT": "2s"})
    stack._spawn("tern-api")
    try:
        harness.wait_for(stack._health_ok, timeout=harness.START_TIMEOUT,
                         what="the API answers /health")
        sent = stack.http("POST", "/v1/send", json={
            "from": harness.SENDER, "to": "alice@inbox.example", "text": "hi"})
        assert sent.status == 202, sent.body
        RUNTIME_VALUES["id"] = sent.json()["id"]
        # State for every operation to answer 2xx, whatever order they run in.
        assert stack.http("POST", "/v1/ips/127.0.0.2/warmup",
                          json={"action": "start"}).status == 201
        assert stack.http("PUT", "/v1/suppressions/acme/someone@inbox.example").status == 201
        assert stack.http("PUT", "/v1/pauses/org/acme").status == 201
        assert stack.http("PUT", "/v1/engagement/acme",
                          json={"someone@inbox.example": 80}).status == 200
        # The message's `accepted` event, given up after TERN_WEBHOOK_RETRY_FOR.
        RUNTIME_VALUES["event_id"] = harness.wait_for(
            lambda: (failed_ids(stack) or [None])[0], 30, what="a given-up webhook delivery")
        yield stack
    finally:
        for process in stack.processes.values():
            harness.stop_process(process)


def test_the_document_is_openapi_3_1_and_every_reference_resolves():
    assert SPEC["openapi"].startswith("3.1.")

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                resolve(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(SPEC)
    for path, method, operation in OPERATIONS:
        assert operation.get("responses"), (path, method)


def request_for(path, operation):
    values = path_values(path)
    url = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
    content = operation.get("requestBody", {}).get("content", {})
    example = content.get("application/json", {}).get("example")
    return url, example


@pytest.mark.parametrize("path,method,operation", OPERATIONS,
                         ids=[f"{m.upper()} {p}" for p, m, _ in OPERATIONS])
def test_each_operation_answers_as_documented(api, path, method, operation):
    url, example = request_for(path, operation)
    if path == "/v1/webhooks/{name}/failed/{event_id}/retry":
        # A retry of them all, or an earlier run, may have put it back in line; it is given
        # up again within seconds.
        harness.wait_for(lambda: RUNTIME_VALUES["event_id"] in failed_ids(api), 30,
                         what="the delivery back in the failed list")
    response = api.http(method.upper(), url, json=example)
    check_answer(response, operation, f"{method.upper()} {url}")
    assert 200 <= response.status < 300, (method, url, response.status, response.body)

    secured = operation.get("security", SPEC.get("security")) != []
    if secured:
        for key, status in ((None, 401), ("not-a-key", 403)):
            refused = api.http(method.upper(), url, json=example, key=key)
            assert refused.status == status, (url, key, refused.body)
            check_answer(refused, operation, f"{method.upper()} {url} key={key}")


@pytest.mark.parametrize("path", list(SPEC["paths"]))
def test_the_api_offers_no_undocumented_method(api, path):
    url, _ = request_for(path, {})
    response = api.http("PATCH", url)
    documented = {m.upper() for m in METHODS if m in SPEC["paths"][path]}
    if "GET" in documented:
        documented.add("HEAD")
    assert response.status == 405, (url, response.status)
    allow = {m.strip() for m in response.headers.get("Allow", "").split(",")}
    assert allow == documented, (url, allow)


def test_scoped_keys_are_refused_as_documented(api):
    by_key = [("ops-key", "POST", "/v1/send"), ("acme-key", "GET", "/v1/throttles"),
              ("acme-key", "GET", "/v1/ips")]
    for key, method, path in by_key:
        operation = SPEC["paths"][path][method.lower()]
        url, example = request_for(path, operation)
        response = api.http(method, url, json=example, key=key)
        assert response.status == 403, (key, path, response.body)
        check_answer(response, operation, f"{method} {path} key={key}")


# Undocumented routes. Reading the route table out of the Swift sources would break with any
# rewrite of the router, and a fixed list of probes here would go stale with the first new
# route. What does not change is that a route is matched on text written in Sources/TernAPI.
# So the test takes its vocabulary from there: (1) every path-shaped string literal there
# ("/v1/engagement/", "/cancel") must be part of a documented path; (2) a GET of every
# documented path, of each of its ancestors and of each path literal, and of each of those
# with every word-shaped literal of the sources ("failed", "retry", ...) appended as one more
# segment, must answer 404 unless the document describes that path. A new endpoint fails
# one or the other until it is documented; one hidden two new segments under a documented
# path, or that answers 404 to a GET, escapes.
def source_literals():
    text = "\n".join(f.read_text() for f in sorted(API_SOURCES.rglob("*.swift")))
    literals = set(re.findall(r'"((?:[^"\\\n]|\\.)*)"', text))
    paths = {s for s in literals if re.fullmatch(r"/[a-z0-9/_.-]+", s)}
    words = {s for s in literals if re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", s)}
    return sorted(paths), sorted(words)


def template_pattern(path, greedy_last=False):
    parts = re.split(r"(\{\w+\})", path)
    last = max((i for i, p in enumerate(parts) if p.startswith("{")), default=None)
    return re.compile("".join(
        (".+" if greedy_last and i == last else "[^/]+") if p.startswith("{")
        else re.escape(p) for i, p in enumerate(parts)) + "$")


def documented_methods(path):
    methods = {m.upper() for m in METHODS if m in SPEC["paths"][path]}
    return methods | {"HEAD"} if "GET" in methods else methods


def documents(url, response):
    """Whether the document describes what answered `url`. A path parameter is one segment;
    a last one may take the rest only when the API says (405 and Allow) that the resource is
    that documented one: a pause's name may hold '/'."""
    if any(template_pattern(p).match(url) for p in SPEC["paths"]):
        return True
    allow = {m.strip() for m in response.headers.get("Allow", "").split(",") if m.strip()}
    return response.status == 405 and any(
        template_pattern(p, greedy_last=True).match(url) and allow == documented_methods(p)
        for p in SPEC["paths"])


def test_every_path_the_api_sources_name_is_documented():
    paths, _ = source_literals()
    assert "/v1/send" in paths and "/v1/webhooks" in paths, paths
    templates = list(SPEC["paths"])
    missing = [p for p in paths if p != "/" and not any(p in t for t in templates)]
    assert not missing, f"named in Sources/TernAPI but not in docs/openapi.yaml: {missing}"


def test_the_api_serves_no_undocumented_path(api):
    paths, words = source_literals()
    bases = {"/"}
    for template in SPEC["paths"]:
        url, _ = request_for(template, {})
        bases.add(url)
    bases |= {p.rstrip("/") for p in paths if p != "/"}
    for base in list(bases):
        parts = base.strip("/").split("/")
        bases |= {"/" + "/".join(parts[:n]) for n in range(1, len(parts))}
    probes = sorted(bases | {b.rstrip("/") + "/" + w for b in bases for w in words})

    # One kept-alive connection: thousands of probes, each a small GET (which changes
    # nothing, whatever route it reaches).
    conn = http.client.HTTPConnection("127.0.0.1", api.api_port, timeout=10)
    undocumented = []
    try:
        for url in probes:
            conn.request("GET", url, headers={"Authorization": f"Bearer {harness.API_KEY}"})
            reply = conn.getresponse()
            reply.read()
            response = harness.Response(reply.status, dict(reply.getheaders()), b"")
            if reply.status != 404 and not documents(url, response):
                undocumented.append((url, reply.status))
    finally:
        conn.close()
    assert len(probes) > 1000, len(probes)
    assert not undocumented, f"answered but not in docs/openapi.yaml: {undocumented[:20]}"
