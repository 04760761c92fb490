"""Fault injection: kill this process outright at a named point of a run, to test that a
run dying there loses nothing (tests/test_faults.py).

    CPT_BENCH_KILL_AT=<point>[@<stage>]   SIGKILL the first time <point> is reached (in that stage)
    CPT_BENCH_FAULT_SIGNAL=SIGSTOP        send that signal instead: SIGSTOP freezes the process at
                                          the point, where a test acts on it (sends SLURM's SIGUSR2,
                                          starts a second controller) without racing its speed
    CPT_BENCH_FAULT_ONCE=<file>           fire only while <file> does not exist, and create it: once
                                          across processes (a requeued job inherits the environment)

A SIGKILL runs no handler and no `finally`, like the OOM killer, a node failure or `kill -9`,
so what is on disk at that instant is exactly what a resumed run finds. Unset (always, outside
the tests), `reached` costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "CPT_BENCH_KILL_AT"
SIGNAL_ENV = "CPT_BENCH_FAULT_SIGNAL"
ONCE_ENV = "CPT_BENCH_FAULT_ONCE"
POINTS = (
    "rif_rollouts",  # between two batches of rollouts (RIF's, or a paradigm's rollout step)
    "training",  # at a trainer log event, mid-stage
    "checkpoint_save",  # the stage's weights written, its tokenizer not yet
    "evaluation",  # one task's eval records written, the others not
    "inner_point",  # eval.inner_points: one inner point of the stage in curves.csv, the next not yet
    "result_files",  # a stage's stage.json written, the run's matrix and metrics not yet
    "before_finished",  # every stage done, run.json not yet marked finished
)
_stage: int | None = None  # the stage this process is in (set by the stage loop)


def enter_stage(stage: int) -> None:
    global _stage
    _stage = stage


def reached(point: str) -> None:
    """Die here if CPT_BENCH_KILL_AT names this point (and the current stage)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, stage = spec.partition("@")
    if name != point or (stage and int(stage) != _stage):
        return
    once = os.environ.get(ONCE_ENV)
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))  # atomic: one process wins
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.Signals[os.environ.get(SIGNAL_ENV, "SIGKILL")])
