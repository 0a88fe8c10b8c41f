"""pytest fixtures for Tern's end-to-end tests (the harness itself is harness.py).

Session-wide, started on first use and stopped at the end: `redis_server` (a private
redis-server), `world` (testworld/world.py: DNS and MX hosts) and `tern` (the five built
daemons against both). Per test: `redis` (a Resp client), `http`, `wait_for`,
`spool_messages`. Tests that need only the world (test_world.py) never start the daemons.
When a test fails, the tail of every log it touched is attached to its report.
"""

import warnings

import pytest

import harness

# Logs of whatever the session started, shown under a failed test.
_LOGS = {}


def start(thing):
    """Start a harness process; a failure fails the test with the harness's own words
    (outside the except block, so pytest shows no chained traceback)."""
    try:
        thing.start()
        return
    except harness.HarnessError as error:
        message = str(error)
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def redis_server(e2e_dir):
    server = harness.RedisServer(e2e_dir / "redis")
    start(server)
    _LOGS["redis-server"] = server.log
    yield server
    server.stop()


@pytest.fixture(scope="session")
def world(e2e_dir):
    process = harness.WorldProcess(e2e_dir / "world")
    start(process)
    _LOGS["world"] = process.stderr_path
    yield process
    status = process.stop()
    if status != 0:
        warnings.warn(f"the test world exited with status {status} on SIGTERM")


@pytest.fixture(scope="session")
def tern(e2e_dir, redis_server, world):
    # Every message From tern.example is DKIM-signed with an RSA and an Ed25519 key whose
    # records the world serves.
    keys, records = harness.make_dkim_keys(e2e_dir / "dkim")
    world.set_records(records)
    stack = harness.TernStack(e2e_dir / "tern", redis_server, world,
                              extra_env={"TERN_DKIM_KEYS": str(keys)})
    start(stack)      # a failure's message holds the tail of every daemon's stderr
    for daemon in harness.DAEMONS:
        _LOGS[daemon] = stack.log_path(daemon)
    yield stack
    codes = stack.stop()
    unclean = {d: c for d, c in codes.items() if c != 0}
    if unclean:
        warnings.warn(f"daemons did not exit 0 on SIGTERM: {unclean}")


@pytest.fixture
def redis(tern):
    return tern.redis


@pytest.fixture
def http(tern):
    return tern.http


@pytest.fixture
def wait_for():
    return harness.wait_for


@pytest.fixture
def spool_messages(world):
    return world.spool_messages


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        for name, path in _LOGS.items():
            report.sections.append((f"{name}: {path}", harness.tail(path)))
