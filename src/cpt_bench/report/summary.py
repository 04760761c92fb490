"""Aggregation across runs: per-variant means over seeds, stage curves, Pareto frontiers and
the paradigms compared at matched gain. Pure functions of `RunRecord`s."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cpt_bench.metrics import HEADLINE_METRICS
from cpt_bench.report.frontier import MATCHED_POINTS, interpolate
from cpt_bench.report.runs import COMPUTE, RunRecord, base_model, natural_key, paradigm_key
from cpt_bench.report.stats import Interval, RunPoint, gain_rule, mean_ci


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """Mean, sample std (None for a single value) and count of the values that are not None."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None, None, 0
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None), len(xs)


def counted_runs(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """The runs of one variant that enter its means: finished ones.

    An unfinished run's metrics cover fewer tasks, so averaging it in would mix different
    quantities. Only when none of a variant's runs finished (a report on a running sweep)
    are the unfinished ones shown, flagged as such.
    """
    done = [r for r in runs if r.finished]
    return done or list(runs)


@dataclass
class VariantSummary:
    label: str
    paradigm: str
    runs: list[RunRecord]  # the runs in the means
    left_out: list[RunRecord]  # unfinished runs not in the means
    stats: dict[str, tuple[float | None, float | None, int]] = field(default_factory=dict)
    cis: dict[str, Interval | None] = field(default_factory=dict)  # 95 % t-intervals, headline metrics

    @property
    def partial(self) -> bool:
        return not any(r.finished for r in self.runs)


def summarize(runs: Sequence[RunRecord]) -> list[VariantSummary]:
    """One summary per variant: by paradigm (PARADIGM_RANK), sequential before joint, then label."""
    by_label: dict[str, list[RunRecord]] = {}
    for run in runs:
        by_label.setdefault(run.variant, []).append(run)
    out = []
    for label, members in by_label.items():
        kept = counted_runs(members)
        left_out = [r for r in members if all(r is not k for k in kept)]
        summary = VariantSummary(label, members[0].paradigm, kept, left_out)
        for key in HEADLINE_METRICS:
            summary.stats[key] = mean_std(r.metrics.get(key) for r in kept)
            # runs of several base models: the base model is the unit (stats.mean_ci)
            summary.cis[key] = mean_ci([r.metrics.get(key) for r in kept], [base_model(r.config) for r in kept])
        for key in COMPUTE:
            summary.stats[key] = mean_std(getattr(r.compute, key, None) for r in kept)
        out.append(summary)
    return sorted(out, key=lambda s: (paradigm_key(s.paradigm), s.runs[0].joint, natural_key(_label_without_lr(s)),
                                      float(s.runs[0].lr or 0.0)))


def _label_without_lr(s: VariantSummary) -> str:
    """Variants that differ only in learning rate are listed by its value, not its spelling."""
    return " ".join(part for part in s.label.split() if not part.split("=")[0].endswith("learning_rate"))


def analysed_runs(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """Every run that enters some variant's means (see counted_runs)."""
    return [r for s in summarize(runs) for r in s.runs]


def stage_curve(runs: Sequence[RunRecord]) -> list[tuple[int, float, float | None]]:
    """(stage, mean, std) of the average accuracy over the tasks seen so far.

    A joint run trains every task in its single stage, so its one point sits at the stage
    where a sequential run has also seen every task.
    """
    per_stage: dict[int, list[float]] = {}
    for run in runs:
        if run.joint:
            if run.metrics.get("final_avg_acc") is not None:
                stage = run.metrics.get("num_tasks") or len(run.order) or 1
                per_stage.setdefault(stage, []).append(run.metrics["final_avg_acc"])
            continue
        for t, acc in enumerate(run.metrics.get("avg_acc_per_stage") or [], start=1):
            if acc is not None:
                per_stage.setdefault(t, []).append(acc)
    return [(t, *mean_std(v)[:2]) for t, v in sorted(per_stage.items())]


def run_points(runs: Sequence[RunRecord], key: str) -> dict[str, list[RunPoint]]:
    """Each sequential run's (gain, key) with its variant and base model, by family (the
    paradigm, and e.g. its KL setting where that varies): what the matched-gain bootstrap
    resamples."""
    out: dict[str, list[RunPoint]] = {}
    for run in sorted(runs, key=lambda r: paradigm_key(r.family)):
        gain, y = run.metrics.get("gain"), run.metrics.get(key)
        if not run.joint and gain is not None and y is not None:
            out.setdefault(run.family, []).append(RunPoint(run.variant, base_model(run.config), gain, y))
    return out


def gain_rule_choices(runs: Sequence[RunRecord]) -> tuple[dict[str, tuple[float, list[RunRecord]]], list[str]]:
    """Per family (`RunRecord.family`), the learning rate the gain-only rule picks among its
    sequential runs, and those runs; and the families left out because no rate of their grid
    gained on average. Only for a family whose variants differ in the learning rate alone (else
    the rule has no single grid to pick from) and that has at least two."""
    out, left_out = {}, []
    by_family: dict[str, dict[float, list[RunRecord]]] = {}
    for run in runs:
        if not run.joint and run.lr is not None and run.metrics.get("gain") is not None:
            by_family.setdefault(run.family, {}).setdefault(float(run.lr), []).append(run)
    for family, grid in sorted(by_family.items(), key=lambda kv: paradigm_key(kv[0])):
        if len(grid) < 2 or any(len({r.variant for r in members}) > 1 for members in grid.values()):
            continue
        lr = gain_rule({lr: statistics.fmean(r.metrics["gain"] for r in members) for lr, members in grid.items()})
        if lr is None:
            left_out.append(family)
        else:
            out[family] = (lr, grid[lr])
    return out, left_out


# the compute a run used, as the report compares it (Compute fields)
COMPUTE_AXES = {"optimizer_steps": "optimizer steps", "processed_tokens": "processed tokens",
                "wall_seconds": "wall time (s)"}


def compute_series(runs: Sequence[RunRecord], axis: str, key: str) -> dict[str, list[tuple[float, float]]]:
    """(compute on `axis`, metric `key`) per sequential run, by family (`RunRecord.family`)."""
    out: dict[str, list[tuple[float, float]]] = {}
    for run in sorted(runs, key=lambda r: paradigm_key(r.family)):
        cost = getattr(run.compute, axis, None) if run.compute else None
        y = run.metrics.get(key)
        if not run.joint and cost and y is not None:
            out.setdefault(run.family, []).append((float(cost), y))
    return out


def matched_compute(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]],
                    n: int = MATCHED_POINTS) -> list[tuple[float, float, float, float]]:
    """Compare two paradigms' (compute, y) run points at equal compute: each side's runs,
    averaged where they used the same amount, are linearly interpolated at `n` evenly spaced
    amounts inside the range both cover. Rows (compute, y_a, y_b, y_a - y_b); [] when the
    ranges do not overlap."""
    curves = []
    for pts in (a, b):
        by_cost: dict[float, list[float]] = {}
        for c, y in pts:
            by_cost.setdefault(c, []).append(y)
        if not by_cost:
            return []
        xs = sorted(by_cost)
        curves.append((xs, [statistics.fmean(by_cost[x]) for x in xs]))
    lo, hi = max(xs[0] for xs, _ in curves), min(xs[-1] for xs, _ in curves)
    if lo > hi:
        return []
    costs = [lo] if math.isclose(lo, hi) or n < 2 else [lo + (hi - lo) * k / (n - 1) for k in range(n - 1)] + [hi]
    return [(c, ya, yb, ya - yb) for c in costs for ya, yb in [tuple(interpolate(c, xs, ys) for xs, ys in curves)]]
