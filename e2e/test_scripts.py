"""scripts/quiet-test-output, the filter scripts/test puts after `swift test`: results
stay, announcements and empty banners go."""

import subprocess

import harness

FILTER = harness.REPO / "scripts" / "quiet-test-output"


def quiet(text):
    done = subprocess.run([str(FILTER)], input=text.encode(), capture_output=True,
                          timeout=30, check=True)
    return done.stdout.decode()


def test_drops_started_lines_even_when_arguments_span_lines():
    noisy = (
        "[3/9] Compiling TernMail Punycode.swift\n"
        "◇ Test run started.\n"
        "◇ Suite EmailAddressTests started.\n"
        "◇ Test case passing 2 arguments input → \"a\n"
        "b\n"
        "✔ not a result\n"
        "\", expected → \"a\n"
        "\" to unstuff(_:_:) started.\n"
        "◇ Test case passing 1 argument text → \"x\" to decode(_:) started.\n"
        "✔ Test decode(_:) with 6 test cases passed after 0.4 seconds.\n"
        "✘ Test rejects(_:_:) recorded an issue with 1 argument input → \"a\n"
        "b\" at EmailAddressTests.swift:9:9: Expectation failed\n"
        "✘ Test run with 3 tests in 1 suite failed after 0.5 seconds with 1 issue.\n")
    assert quiet(noisy) == (
        "✔ Test decode(_:) with 6 test cases passed after 0.4 seconds.\n"
        "✘ Test rejects(_:_:) recorded an issue with 1 argument input → \"a\n"
        "b\" at EmailAddressTests.swift:9:9: Expectation failed\n"
        "✘ Test run with 3 tests in 1 suite failed after 0.5 seconds with 1 issue.\n")


def test_drops_xctest_banners_only_when_xctest_ran_nothing():
    empty = ("Test Suite 'All tests' started at 2026-12-04 15:53:53.190\n"
             "Test Suite 'debug.xctest' started at 2026-12-04 15:53:53.191\n"
             "Test Suite 'debug.xctest' passed at 2026-12-04 15:53:53.191\n"
             "\t Executed 0 tests, with 0 failures (0 unexpected) in 0.0 (0.0) seconds\n"
             "Test Suite 'All tests' passed at 2026-12-04 15:53:53.195\n"
             "\t Executed 0 tests, with 0 failures (0 unexpected) in 0.0 (0.0) seconds\n")
    result = "✔ Test run with 1 test passed.\n"
    assert quiet(empty + result) == result
    ran = ("Test Suite 'All tests' started at 2026-12-04 15:53:53.190\n"
           "Test Suite 'All tests' passed at 2026-12-04 15:53:53.195\n"
           "\t Executed 2 tests, with 0 failures (0 unexpected) in 0.1 (0.1) seconds\n")
    assert quiet(ran) == ran


def run_test_script(tmp_path, build_output, build_status):
    """scripts/test in a copy of the repository's scripts, with stand-ins for swift,
    python3 and install-deps on PATH: only its own logic runs."""
    scripts = tmp_path / "repo" / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "test").write_bytes((harness.REPO / "scripts" / "test").read_bytes())
    (scripts / "install-deps").write_text("#!/bin/sh\nexit 0\n")
    (scripts / "quiet-test-output").write_text("#!/bin/sh\ncat\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "swift").write_text(
        "#!/bin/sh\nif [ \"$1\" = build ]; then printf '%s\\n' \"$BUILD_OUTPUT\"; "
        "exit \"$BUILD_STATUS\"; fi\necho swift-test-ran\n")
    (bin_dir / "python3").write_text("#!/bin/sh\necho pytest-ran\n")
    for f in [*scripts.iterdir(), *bin_dir.iterdir()]:
        f.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "BUILD_OUTPUT": build_output,
           "BUILD_STATUS": str(build_status)}
    return subprocess.run(["bash", str(scripts / "test")], env=env, capture_output=True,
                          text=True, timeout=60)


def test_the_test_script_fails_on_a_failed_build_and_on_warnings(tmp_path):
    link = run_test_script(tmp_path / "link", "ld.lld: error: undefined symbol: tern_x\n"
                           "clang: error: linker command failed with exit code 1", 1)
    assert link.returncode == 1, link.stdout
    assert "swift build failed (exit 1)" in link.stderr
    assert "swift-test-ran" not in link.stdout
    warned = run_test_script(tmp_path / "warn", "/src/A.swift:1:1: warning: unused\n"
                             "Build complete!", 0)
    assert warned.returncode == 1 and "errors or warnings" in warned.stderr
    clean = run_test_script(tmp_path / "clean", "Build complete!", 0)
    assert clean.returncode == 0, clean.stderr
    assert "swift-test-ran" in clean.stdout and "pytest-ran" in clean.stdout
