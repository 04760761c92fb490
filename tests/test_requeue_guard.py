"""The controller never runs on after SLURM's requeue signal, even when its exit is swallowed."""

from __future__ import annotations

import os
import signal

import pytest

from cpt_bench.run import requeue


@pytest.fixture
def submitit_like_handler(monkeypatch):
    """A stand-in for submitit's USR2 handler whose SystemExit some library code swallows."""
    calls = []

    def swallowed(signum, frame):
        calls.append(signum)
        try:
            raise SystemExit(-1)  # what submitit raises after requeuing
        except SystemExit:
            pass  # ... and what a careless `except BaseException` does with it

    previous = signal.signal(signal.SIGUSR2, swallowed)
    monkeypatch.setattr(requeue, "_signalled", False)
    monkeypatch.setattr(requeue, "EXIT_GRACE_S", 3600.0)  # the watchdog must not fire in the test
    yield calls
    signal.signal(signal.SIGUSR2, previous)


def test_a_swallowed_requeue_exit_still_stops_the_run_at_the_next_check(submitit_like_handler):
    requeue.guard()
    requeue.guard()  # idempotent: wrapped once
    requeue.check()  # no signal yet: nothing happens
    os.kill(os.getpid(), signal.SIGUSR2)
    assert submitit_like_handler == [signal.SIGUSR2]  # submitit's own handler still requeues
    with pytest.raises(SystemExit, match="requeued after SIGUSR2"):
        requeue.check()


def test_without_submitit_nothing_is_wrapped(monkeypatch):
    previous = signal.signal(signal.SIGUSR2, signal.SIG_DFL)
    try:
        requeue.guard()
        assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGUSR2, previous)
