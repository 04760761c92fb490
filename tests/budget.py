"""The test budget: `pytest --budget SECONDS` fails the session when its wall time exceeds the
budget by more than a noise margin, so a change that makes CI ten minutes slower fails the day it
lands. The Makefile gives each tier its budget (measured on the development machines, 2 cores);
`CPT_BENCH_BUDGET_SCALE` raises every budget on a slower machine kind (e.g. 1.5). The hooks are
imported by conftest.py; the verdict is pure and unit-tested (test_budget.py)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest

SCALE_ENV = "CPT_BENCH_BUDGET_SCALE"
DEFAULT_MARGIN = 0.15  # run-to-run noise of a whole tier on these machines is a few per cent


@dataclass(frozen=True)
class Verdict:
    """A session's wall time against its budget (all in seconds)."""

    elapsed: float
    budget: float
    limit: float  # budget x (1 + margin): above it the session fails

    @property
    def over(self) -> bool:
        return self.elapsed > self.limit

    def line(self, tier: str) -> str:
        head = f"test budget: {tier} took {self.elapsed:.0f} s of {self.budget:.0f} s"
        if self.elapsed <= self.budget:
            return f"{head} ({self.elapsed / self.budget:.0%})"
        if not self.over:
            return f"{head}: over, within the noise margin (fails above {self.limit:.0f} s)"
        return (f"{head}: OVER BUDGET (fails above {self.limit:.0f} s). Make the new tests cheaper "
                f"(docs/development.md, 'The test budget') or, on a slower machine kind, set {SCALE_ENV}")


def verdict(elapsed: float, budget: float, margin: float = DEFAULT_MARGIN, scale: float = 1.0) -> Verdict:
    if budget <= 0 or margin < 0 or scale <= 0:
        raise ValueError(f"--budget must be > 0, --budget-margin >= 0 and {SCALE_ENV} > 0 "
                         f"(got {budget}, {margin}, {scale})")
    return Verdict(elapsed, budget * scale, budget * scale * (1 + margin))


def scale_from_env(env=os.environ) -> float:
    raw = env.get(SCALE_ENV, "1")
    try:
        scale = float(raw)
    except ValueError:
        raise ValueError(f"{SCALE_ENV} must be a number, not {raw!r}") from None
    return scale


# --- the hooks (conftest.py imports them) -----------------------------------------------------

def pytest_addoption(parser) -> None:
    group = parser.getgroup("budget")
    group.addoption("--budget", type=float, default=None, metavar="SECONDS",
                    help="fail the session if its wall time exceeds SECONDS by more than the margin")
    group.addoption("--budget-margin", type=float, default=DEFAULT_MARGIN, metavar="FRACTION",
                    help=f"noise margin over the budget (default {DEFAULT_MARGIN})")


def _is_xdist_worker(config) -> bool:
    return hasattr(config, "workerinput")  # the controller alone judges the session


def _verdict(config, elapsed: float) -> Verdict:
    try:
        return verdict(elapsed, config.getoption("--budget"), config.getoption("--budget-margin"), scale_from_env())
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None


def pytest_sessionstart(session) -> None:
    config = session.config
    if config.getoption("--budget", None) is not None:
        _verdict(config, 0.0)  # a bad budget, margin or scale fails before any test, not after all of them
    config._budget_start = time.monotonic()


def pytest_sessionfinish(session, exitstatus) -> None:
    config = session.config
    if config.getoption("--budget", None) is None or _is_xdist_worker(config):
        return
    config._budget_verdict = result = _verdict(config, time.monotonic() - config._budget_start)
    if result.over and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """The verdict as the last line of the summary, where CI's log tail shows it."""
    result = getattr(config, "_budget_verdict", None)
    if result is not None:
        tier = config.getoption("markexpr")
        terminalreporter.write_line(result.line(f"'{tier}'" if tier else "the suite"),
                                    red=result.over, green=not result.over, bold=True)
