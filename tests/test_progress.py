"""How far a long phase is (progress.py): on a terminal a bar; in a log, a line a minute while a
phase runs and one when it ends, each with its count, rate and ETA; a short phase says nothing."""

from __future__ import annotations

import logging

from cpt_bench.progress import Progress, duration, eta, stage_eta, trainer_progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_logged_phase_says_its_count_rate_and_eta_each_minute_and_its_time_at_the_end(caplog):
    clock = Clock()
    with (caplog.at_level(logging.INFO, logger="cpt_bench"),
          Progress("output drift", 4, "estimate", clock=clock, terminal=False) as progress):
        for _ in range(4):
            clock.now += 50.0
            progress.update()
    lines = [r.getMessage().strip() for r in caplog.records]
    # a line at 100 s (none at 50 s: a minute had not passed; none at 150 s: not a minute since), the end
    assert lines == ["output drift: 2/4 estimates, 50 s per estimate, ETA 1 min 40 s",
                     "output drift: 4 estimates in 3 min 20 s (50 s per estimate)"]


def test_a_short_phase_ends_without_a_line(caplog):
    clock = Clock()
    with caplog.at_level(logging.INFO, logger="cpt_bench"):
        for _ in Progress.over(range(10), "evaluation", "prompt"):
            pass
        with Progress("rollouts", 3, clock=clock, terminal=False) as progress:
            clock.now += 4.0
            progress.update(3)
    assert not caplog.records


def test_only_rank_0_reports(caplog, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    clock = Clock()
    with (caplog.at_level(logging.INFO, logger="cpt_bench"),
          Progress("Fisher", 2, clock=clock, terminal=False) as progress):
        clock.now += 100.0
        progress.update(2)
    assert not caplog.records


def test_stage_lines_give_a_stage_s_time_and_the_run_s_eta():
    assert stage_eta([], 7) == ""
    assert stage_eta([60.0, 80.0], 5) == " | about 1 min 10 s a stage, run ETA 5 min 50 s"
    assert (duration(3.4), duration(65), duration(7380)) == ("3 s", "1 min 05 s", "2 h 03 min")
    assert eta(0, 10, 5.0) is None and eta(5, 10, 5.0) == 5.0


def test_a_trainer_outside_a_stage_shows_its_steps(caplog):
    """The format alignment of a base model (minutes, once) is a phase like the others."""
    from types import SimpleNamespace

    clock, state = Clock(), SimpleNamespace(max_steps=3)
    steps = trainer_progress("format alignment", clock=clock, terminal=False)
    with caplog.at_level(logging.INFO, logger="cpt_bench"):
        steps.on_train_begin(None, state, None)
        for _ in range(3):
            clock.now += 40.0
            steps.on_step_end(None, state, None)
        steps.on_train_end(None, state, None)
    assert [r.getMessage().strip() for r in caplog.records] == [
        "format alignment: 2/3 steps, 40 s per step, ETA 40 s",
        "format alignment: 3 steps in 2 min 00 s (40 s per step)"]


def test_a_launched_step_s_progress_reaches_the_controller_s_log_as_it_comes(tmp_path, caplog):
    """Under torchrun a phase runs in a rank whose output goes to the step's log file: the
    controller repeats its progress lines, and only those, while the step runs."""
    from cpt_bench.progress import Relay

    path = tmp_path / "evaluate.log"
    relay = Relay(path)
    with caplog.at_level(logging.INFO, logger="cpt_bench"):
        relay.pump()  # no log yet
        path.write_text("[rank 0] cpt_bench: evaluate step of stage 1 on rank 0 of 2\n"
                        "[rank 0] cpt_bench.progress:   evaluation: 512/1000 prompts, 8.5/s, ETA 57 s\n"
                        "[rank 0] cpt_bench.progress:   evaluation: 1000 prom")  # a line being written
        relay.pump()
        assert [r.getMessage() for r in caplog.records] == ["  evaluation: 512/1000 prompts, 8.5/s, ETA 57 s"]
        with open(path, "a") as f:
            f.write("pts in 1 min 58 s (8.5/s)\nTraceback (most recent call last):\n")
        relay.pump()
    assert [r.getMessage() for r in caplog.records][1:] == ["  evaluation: 1000 prompts in 1 min 58 s (8.5/s)"]
