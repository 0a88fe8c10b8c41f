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
