"""The test budget (tests/budget.py): a session slower than its budget plus the noise margin fails,
shown on a deliberately slow test in a pytest run of its own, not by slowing CI."""

from __future__ import annotations

import pytest

from budget import SCALE_ENV, verdict

pytest_plugins = ["pytester"]

SLOW_TEST = """
import time

def test_deliberately_slow():
    time.sleep(0.3)
"""
CONFTEST = ("from budget import pytest_addoption, pytest_sessionfinish, pytest_sessionstart, "
            "pytest_terminal_summary  # noqa: F401\n")


@pytest.fixture
def slow_suite(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_slow=SLOW_TEST)
    return pytester


def test_verdict_fails_only_above_the_budget_plus_its_margin():
    assert not verdict(100, budget=100, margin=0.15).over
    assert not verdict(114, budget=100, margin=0.15).over  # over its budget, within the noise margin
    assert "within the noise margin" in verdict(114, budget=100, margin=0.15).line("'slow'")
    assert verdict(116, budget=100, margin=0.15).over
    assert "OVER BUDGET" in verdict(116, budget=100, margin=0.15).line("'slow'")
    assert not verdict(160, budget=100, margin=0.15, scale=1.5).over  # a slower machine kind raises it
    assert verdict(160, budget=100, margin=0.15, scale=1.5).budget == 150
    with pytest.raises(ValueError, match="budget must be > 0"):
        verdict(1, budget=0)


def test_a_deliberately_slow_test_fails_the_session_over_its_budget(slow_suite):
    res = slow_suite.runpytest("--budget", "0.05", "--budget-margin", "0.5")
    res.assert_outcomes(passed=1)  # the test itself passed: the session fails on its time alone
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    res.stdout.fnmatch_lines(["test budget: the suite took * s of 0 s: OVER BUDGET (fails above 0 s)*"])


def test_within_budget_the_session_passes_and_says_its_share(slow_suite):
    res = slow_suite.runpytest("--budget", "60")
    assert res.ret == pytest.ExitCode.OK
    res.stdout.fnmatch_lines(["test budget: the suite took * s of 60 s (*%)"])


def test_the_scale_raises_the_budget_on_a_slower_machine_kind(slow_suite, monkeypatch):
    monkeypatch.setenv(SCALE_ENV, "100")
    assert slow_suite.runpytest("--budget", "0.05").ret == pytest.ExitCode.OK


def test_a_bad_scale_is_a_usage_error_before_any_test(slow_suite, monkeypatch):
    monkeypatch.setenv(SCALE_ENV, "fast")
    res = slow_suite.runpytest("--budget", "60")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines([f"*{SCALE_ENV} must be a number, not 'fast'*"])
    assert "test_deliberately_slow" not in res.stdout.str()
