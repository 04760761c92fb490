"""`eval.inner_points` in the controller: a stage's inner points and the run's curves.csv.

During training the paradigm's trainer saves a snapshot at each inner step
(`paradigms.base.save_snapshot`, into `stages/<kk>-<task>/snapshots/step-<n>/`). After training,
the stage's evaluation step evaluates the stage's end first (its matrix row, exactly as without
inner points) and then each snapshot not yet in curves.csv (`Curves.pending`), in the same
launch; the controller appends each point's rows to curves.csv (atomically), logs them and
deletes the snapshot. A run killed between two points retrains the stage when resumed (every
unfinished stage is redone from its start, deterministically), and its evaluation skips the
points curves.csv already holds, so it ends with the same curves.csv and matrix.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from cpt_bench.errors import ConfigError
from cpt_bench.outputs.curves import (
    CURVES_CSV,
    INNER,
    INNER_EVAL,
    SNAPSHOTS,
    CurveRow,
    merged,
    point_rows,
    point_step,
    read_curves_csv,
    stage_rows,
    write_curves_csv,
)
from cpt_bench.outputs.records import StageRecord
from cpt_bench.outputs.rundir import DAMAGED, why
from cpt_bench.run.resume import RESTORE
from cpt_bench.run.steps import Evaluation, InnerPoint, StageSpec


class Curves:
    """A run's curves.csv: its inner points (read back when a run resumes) and the stage records'."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / CURVES_CSV
        try:
            rows = read_curves_csv(self.path) if self.path.exists() else []
        except DAMAGED as exc:  # one line, before the run holds anything
            raise ConfigError(f"{self.path} cannot be read ({why(exc)}); it holds the inner points "
                              f"of the finished stages: {RESTORE}") from None
        self.inner = [r for r in rows if r.point == INNER]

    @staticmethod
    def clear(spec: StageSpec) -> None:
        """A killed attempt's snapshots, before the stage trains again."""
        shutil.rmtree(spec.dir / SNAPSHOTS, ignore_errors=True)

    def pending(self, spec: StageSpec) -> list[InnerPoint]:
        """The stage's snapshots whose points curves.csv does not hold yet, by step; those it
        holds are removed unevaluated."""
        done = {r.step for r in self.inner if r.stage == spec.stage}
        points = []
        for folder in sorted((spec.dir / SNAPSHOTS).glob("step-*")):
            step = point_step(folder.name)
            if step is None:  # a partial save
                continue
            if step in done:
                shutil.rmtree(folder)
                continue
            points.append(InnerPoint(step, folder, spec.dir / INNER_EVAL / folder.name))
        return points

    def add(self, spec: StageSpec, point: InnerPoint, evaluation: Evaluation, offset: int,
            stages: Sequence[StageRecord]) -> list[CurveRow]:
        """One evaluated point into curves.csv (`offset`: the optimizer steps of the stages before
        it); its snapshot is deleted once its rows are on disk. Returns its rows."""
        rows = point_rows(spec.stage, spec.task, INNER, point.step, offset + point.step, evaluation.accuracy,
                          evaluation.n)
        self.inner += rows
        self.write(stages)
        shutil.rmtree(point.model, ignore_errors=True)
        return rows

    def write(self, stages: Sequence[StageRecord]) -> None:
        write_curves_csv(self.path, merged(self.inner, stages))

    @staticmethod
    def ends(stages: Sequence[StageRecord]) -> list[CurveRow]:
        """The last recorded stage's point (its end, or the base) as curves.csv writes it."""
        return [r for r in stage_rows(stages) if r.stage == stages[-1].stage]
