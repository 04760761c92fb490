"""Evaluation points inside each stage (`eval.inner_points`): which optimizer steps, and curves.csv.

With `eval.inner_points=K` a stage of S optimizer steps is also evaluated at K evenly spaced
steps strictly inside it (`inner_steps`), besides its end (the matrix's row). `curves.csv`
holds every evaluation point of the run in long format, one row per point and evaluated task:

    stage, trained_task, point, step, global_step, eval_task, accuracy, n

`point` is `base` (stage 0, the base model), `inner` (an inner point) or `end` (the stage's end:
the same accuracies as matrix.csv's row); `step` counts the stage's optimizer steps, and
`global_step` the optimizer steps through the sequence (the earlier stages' before it), the x
axis of a curve through the whole sequence. The inner rows are the file's own record (a
resumed run reads them back and skips their points); the base and end rows are rewritten from
the stage records every time, so they always equal the matrix. Pure functions and the file's
reader and writer.
"""

from __future__ import annotations

import csv
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from cpt_bench.outputs.records import StageRecord

CURVES_CSV = "curves.csv"
SNAPSHOTS = "snapshots"  # stages/<kk>-<task>/snapshots/step-<n>/: an inner point's model until it is evaluated
INNER_EVAL = "inner"  # stages/<kk>-<task>/inner/step-<n>/<task>.jsonl: an inner point's eval records
BASE, INNER, END = "base", "inner", "end"


def inner_steps(total: int, points: int) -> list[int]:
    """The optimizer steps strictly inside a stage of `total` steps at which its `points` inner
    evaluations fall: k * total // (points + 1) for k = 1..points, evenly spaced, without
    repeats; a stage of fewer than points + 1 steps has fewer (none inside a one-step stage)."""
    if total < 2 or points < 1:
        return []
    return sorted({s for k in range(1, points + 1) if 0 < (s := k * total // (points + 1)) < total})


def point_name(step: int) -> str:
    """The folder name of the point at `step` (its snapshot, its eval records)."""
    return f"step-{step:06d}"


def point_step(name: str) -> int | None:
    """`point_name`'s step back from a folder name; None for any other name (a partial save)."""
    prefix, _, digits = name.partition("-")
    return int(digits) if prefix == "step" and digits.isdigit() else None


@dataclass(frozen=True)
class CurveRow:
    stage: int
    trained_task: str
    point: str  # base | inner | end
    step: int  # optimizer steps into the stage
    global_step: int  # optimizer steps through the sequence
    eval_task: str
    accuracy: float
    n: int


CURVES_COLUMNS = [f.name for f in fields(CurveRow)]


def point_rows(stage: int, trained_task: str, point: str, step: int, global_step: int,
               accuracy: Mapping[str, float], n: Mapping[str, int]) -> list[CurveRow]:
    """One evaluation point's rows, one per evaluated task, in the evaluation's task order."""
    return [CurveRow(stage, trained_task, point, step, global_step, task, acc, n[task])
            for task, acc in accuracy.items()]


def stage_rows(stages: Sequence[StageRecord]) -> list[CurveRow]:
    """The base's and every stage end's rows (the matrix's), at their steps through the sequence."""
    rows, offset = [], 0
    for record in stages:
        steps = record.train.optimizer_steps if record.train else 0
        offset += steps
        rows += point_rows(record.stage, record.trained_task, BASE if record.stage == 0 else END, steps, offset,
                           record.accuracy, record.n)
    return rows


def merged(inner: Sequence[CurveRow], stages: Sequence[StageRecord]) -> list[CurveRow]:
    """curves.csv's rows: the inner points' and the stage records', by stage and step (an inner
    point of a stage not yet complete included: it lies before that stage's end)."""
    return sorted([*inner, *stage_rows(stages)], key=lambda r: (r.stage, r.step))


def write_curves_csv(path: Path, rows: Sequence[CurveRow]) -> None:
    """curves.csv in `CURVES_COLUMNS` (accuracies with six decimals), atomically."""
    with open(path.with_name(f".{path.name}.{os.getpid()}.tmp"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CURVES_COLUMNS)
        writer.writeheader()
        writer.writerows({**asdict(r), "accuracy": f"{r.accuracy:.6f}"} for r in rows)
    Path(f.name).replace(path)


def read_curves_csv(path: Path) -> list[CurveRow]:
    with open(path, newline="") as f:
        return [CurveRow(int(r["stage"]), r["trained_task"], r["point"], int(r["step"]), int(r["global_step"]),
                         r["eval_task"], float(r["accuracy"]), int(r["n"])) for r in csv.DictReader(f)]


@dataclass(frozen=True)
class Balance:
    """Plasticity against stability at one evaluation point: the trained task's accuracy, the
    mean over the tasks trained before this stage, and the general suite's mean (None: none)."""

    stage: int
    step: int
    global_step: int
    trained: float | None
    earlier: float | None
    general: float | None


def balance(rows: Sequence[CurveRow], order: Sequence[str], general: Sequence[str]) -> list[Balance]:
    """Each evaluation point of `rows` (one run's curves.csv) as a `Balance`, in file order. The
    base (stage 0) has no trained task; the joint stage's trained task is every task's mean."""
    points: dict[tuple[int, int], list[CurveRow]] = {}
    for r in rows:
        points.setdefault((r.stage, r.step), []).append(r)
    out = []
    for (stage, step), point in points.items():
        acc = {r.eval_task: r.accuracy for r in point}
        task = point[0].trained_task
        trained = [t for t in (order if task not in order else [task]) if t in acc] if stage else []
        earlier = [t for t in order[: stage - 1] if t in acc] if task in order else []
        out.append(Balance(stage, step, point[0].global_step, _mean(acc, trained), _mean(acc, earlier),
                           _mean(acc, [t for t in general if t in acc])))
    return out


def _mean(acc: Mapping[str, float], tasks: Sequence[str]) -> float | None:
    return statistics.fmean(acc[t] for t in tasks) if tasks else None
