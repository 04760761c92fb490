"""The test budget (tests/budget.py): a session slower than its budget plus the noise margin fails
where CI enforces the budget and warns elsewhere, shown on a deliberately slow test in a pytest run
of its own, not by slowing CI."""

from __future__ import annotations

import pytest

from budget import ENFORCE_ENV, SCALE_ENV, machine_scale, scale_from_env, verdict

pytest_plugins = ["pytester"]

SLOW_TEST = """
import time

def test_deliberately_slow():
    time.sleep(0.3)
"""
CONFTEST = ("from budget import pytest_addoption, pytest_sessionfinish, pytest_sessionstart, "
            "pytest_terminal_summary  # noqa: F401\n")


@pytest.fixture
def slow_suite(pytester, monkeypatch):
    monkeypatch.setenv(SCALE_ENV, "1")  # the reference machine, whatever this one is
    monkeypatch.setenv(ENFORCE_ENV, "1")  # as .ci/run sets it
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
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="all finite"):
            verdict(1, budget=100, scale=bad)


def test_the_machine_kind_sets_the_scale_and_the_environment_overrides_it():
    with_avx512 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n"
    without = "processor\t: 0\nflags\t\t: fpu sse2 avx2\n"
    assert machine_scale(with_avx512) == 1.0
    assert machine_scale(without) == 1.5
    assert machine_scale("") == 1.0  # unknown (not Linux): the reference
    assert scale_from_env({}, cpuinfo=without) == 1.5
    assert scale_from_env({SCALE_ENV: "2"}, cpuinfo=without) == 2.0
    for bad in ("nan", "inf", "-1", "0"):  # nan or inf would switch the budget off without a word
        with pytest.raises(ValueError, match="finite number > 0"):
            scale_from_env({SCALE_ENV: bad})


def test_a_deliberately_slow_test_fails_the_session_over_its_budget(slow_suite):
    res = slow_suite.runpytest("--budget", "0.05", "--budget-margin", "0.5")
    res.assert_outcomes(passed=1)  # the test itself passed: the session fails on its time alone
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    res.stdout.fnmatch_lines(["test budget: the suite took * s of 0 s: OVER BUDGET (fails above 0 s)*"])


def test_outside_ci_an_over_budget_session_passes_with_a_warning(slow_suite, monkeypatch):
    monkeypatch.delenv(ENFORCE_ENV)  # a user's make test: every test passed, so the run passes
    res = slow_suite.runpytest("--budget", "0.05", "--budget-margin", "0.5")
    assert res.ret == pytest.ExitCode.OK
    res.stdout.fnmatch_lines(["test budget: the suite took * s of 0 s: over budget (above 0 s); "
                              f"a warning here, a failure in CI ({ENFORCE_ENV}=1)*"])


def test_within_budget_the_session_passes_and_says_its_share(slow_suite):
    res = slow_suite.runpytest("--budget", "60")
    assert res.ret == pytest.ExitCode.OK
    res.stdout.fnmatch_lines(["test budget: the suite took * s of 60 s (*%)"])


def test_the_scale_raises_the_budget_on_a_slower_machine_kind(slow_suite, monkeypatch):
    monkeypatch.setenv(SCALE_ENV, "100")
    assert slow_suite.runpytest("--budget", "0.05").ret == pytest.ExitCode.OK


@pytest.mark.parametrize("raw, message", [("fast", "must be a number, not 'fast'"),
                                          ("nan", "must be a finite number > 0, not 'nan'")])
def test_a_bad_scale_is_a_usage_error_before_any_test(slow_suite, monkeypatch, raw, message):
    monkeypatch.setenv(SCALE_ENV, raw)
    res = slow_suite.runpytest("--budget", "60")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines([f"*{SCALE_ENV} {message}*"])
    assert "test_deliberately_slow" not in res.stdout.str()
