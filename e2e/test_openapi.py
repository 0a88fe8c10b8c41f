"""docs/openapi.yaml against the running API: every documented path and method exists, the
API offers no method the document leaves out (its 405 answers list the methods in Allow),
and real answers, with a key and without, have documented status codes, media types,
required headers and the required fields of their documented schemas.

The API runs on its own here, on the session's Redis under a prefix of its own
(`openapi:`), so that what this test writes (a suppression, a warm-up plan) touches no
other test's data.
"""

import re

import pytest
import yaml

import harness

SPEC = yaml.safe_load((harness.REPO / "docs" / "openapi.yaml").read_text())
METHODS = ("get", "put", "post", "delete", "patch")
PATH_VALUES = {"org": "acme", "address": "someone@inbox.example", "ip": "127.0.0.2",
               "kind": "org", "name": "acme"}


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
    stack = harness.TernStack(e2e_dir / "openapi", redis_server, world, extra_env={
        "TERN_REDIS_PREFIX": "openapi:",
        "TERN_API_KEYS": f"{harness.API_KEY},acme-key:acme,ops-key:@ops"})
    stack._spawn("tern-api")
    try:
        harness.wait_for(stack._health_ok, timeout=harness.START_TIMEOUT,
                         what="the API answers /health")
        sent = stack.http("POST", "/v1/send", json={
            "from": harness.SENDER, "to": "alice@inbox.example", "text": "hi"})
        assert sent.status == 202, sent.body
        PATH_VALUES["id"] = sent.json()["id"]
        # State for every operation to answer 2xx, whatever order they run in.
        assert stack.http("POST", "/v1/ips/127.0.0.2/warmup",
                          json={"action": "start"}).status == 201
        assert stack.http("PUT", "/v1/suppressions/acme/someone@inbox.example").status == 201
        assert stack.http("PUT", "/v1/pauses/org/acme").status == 201
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
    url = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)
    content = operation.get("requestBody", {}).get("content", {})
    example = content.get("application/json", {}).get("example")
    return url, example


@pytest.mark.parametrize("path,method,operation", OPERATIONS,
                         ids=[f"{m.upper()} {p}" for p, m, _ in OPERATIONS])
def test_each_operation_answers_as_documented(api, path, method, operation):
    url, example = request_for(path, operation)
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
