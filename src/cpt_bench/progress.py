"""How far a long phase is: a count, a rate and an ETA (evaluation, rollouts, the drift
estimate, the Fisher, merging, training).

On a terminal a tqdm bar on stderr, cleared when the phase ends. Elsewhere (a log file, SLURM's
output) lines through the `cpt_bench.progress` logger, never a carriage return: one when a phase
that took `QUIET_S` or more ends, and one a minute while it runs. Only the process that reports
shows it: under torchrun, rank 0 (`LOCAL_RANK`/`RANK` unset or 0), whose step log the controller
reads as it grows and repeats these lines from (`Relay`), so a launched phase is not silent.
"""

from __future__ import annotations

import logging
import os
import sys
import time

log = logging.getLogger("cpt_bench.progress")
RELAYED = f"] {log.name}: "  # a launched rank's progress line in its step log (run/worker.py's format)

QUIET_S = 5.0  # a phase shorter than this ends without a line (a toy stage's are)
LOG_EVERY_S = 60.0  # not on a terminal: a line a minute while a phase runs


def duration(seconds: float) -> str:
    """4 s, 1 min 05 s, 2 h 03 min."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def eta(done: float, total: float, elapsed: float) -> float | None:
    """Seconds left at the rate so far; None before anything is done."""
    return None if done <= 0 or elapsed <= 0 else (total - done) * elapsed / done


def reporting_rank() -> bool:
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK"))


class Progress:
    """`with Progress("evaluation", n, "prompt") as p: ... p.update(k)`."""

    def __init__(self, what: str, total: int, unit: str = "item", clock=time.monotonic, terminal: bool | None = None):
        self.what, self.total, self.unit, self.clock = what, total, unit, clock
        self.done, self.start = 0, clock()
        self.last_line = self.start
        self.show = reporting_rank() and total > 0
        terminal = sys.stderr.isatty() if terminal is None else terminal
        self.bar = None
        if self.show and terminal:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=what, unit=unit, leave=False, dynamic_ncols=True, file=sys.stderr)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.show and self.done < self.total and self.clock() - self.last_line >= LOG_EVERY_S:
            self.last_line = self.clock()
            log.info("  %s", self.line())

    def line(self) -> str:
        """`evaluation: 512/1000 prompts, 8.5/s, ETA 57 s` while it runs; at its end, its time."""
        elapsed = self.clock() - self.start
        per_second = self.done / elapsed if elapsed > 0 else 0.0
        rate = (f"{per_second:.1f}/s" if per_second >= 1 else
                f"{duration(1 / per_second)} per {self.unit}" if per_second > 0 else "-")
        if self.done >= self.total:
            return f"{self.what}: {self.total} {self.unit}s in {duration(elapsed)} ({rate})"
        left = eta(self.done, self.total, elapsed)
        return (f"{self.what}: {self.done}/{self.total} {self.unit}s, {rate}, "
                f"ETA {'-' if left is None else duration(left)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.show and self.clock() - self.start >= QUIET_S:
            log.info("  %s", self.line())

    @classmethod
    def over(cls, items, what: str, unit: str = "item"):
        """Each of `items` in turn, counted."""
        items = list(items)
        with cls(what, len(items), unit) as progress:
            for item in items:
                yield item
                progress.update()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def trainer_progress(what: str, **options):
    """A transformers `TrainerCallback` that shows a trainer's optimizer steps as a `Progress`
    (for a trainer outside a stage, e.g. the format alignment of a base model); `options` go to
    `Progress`."""
    from transformers import TrainerCallback

    class Steps(TrainerCallback):
        progress: Progress | None = None

        def on_train_begin(self, args, state, control, **_):
            self.progress = Progress(what, state.max_steps, "step", **options)

        def on_step_end(self, args, state, control, **_):
            self.progress.update()

        def on_train_end(self, args, state, control, **_):
            self.progress.close()

    return Steps()


def stage_eta(seconds: list[float], left: int) -> str:
    """What a stage line adds: a stage's time so far and the run's ETA (the finished stages'
    mean times the stages left, this one included); "" before any stage has finished."""
    if not seconds or left <= 0:
        return ""
    mean = sum(seconds) / len(seconds)
    return f" | about {duration(mean)} a stage, run ETA {duration(mean * left)}"


class Relay:
    """Repeats the progress lines a launched step writes to its log, as they come, in the
    controller's own log (the step's rank 0 is the one that writes them)."""

    def __init__(self, path):
        self.path, self.offset, self.partial = path, 0, ""

    def pump(self) -> None:
        try:
            with open(self.path, errors="replace") as f:
                f.seek(self.offset)
                text = f.read()
                self.offset = f.tell()
        except OSError:
            return
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()  # a line still being written
        for line in lines:
            if RELAYED in line:
                log.info("  %s", line.split(RELAYED, 1)[1].strip())
