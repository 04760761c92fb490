"""Forgetting against drift: does how far a stage moved the model predict what it forgot?

One point per run and stage t: the forgetting of the tasks trained before t and the change on
the general suite as of stage t (the run's metrics computed on rows 0..t of its matrix), against
the drift recorded after stage t: the reverse KL(pi_t || pi_0) to the base model on the trained
task's prompts and on the general suite's (drift.output_kl; RL's Razor's predictor is the forward
KL, not measured yet) and the parameter drift. A least-squares line per panel with its R^2, over
every paradigm's points together (RL's Razor's claim is one predictor for both).
Pure functions of `RunRecord`s.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from cpt_bench.metrics import forgetting, general_delta
from cpt_bench.report.runs import RunRecord

PREDICTORS = {"kl_to_base_task": "KL to base, trained task's prompts (nats)",
              "kl_to_base_general": "KL to base, general suite's prompts (nats)",
              "param_drift": "parameter drift ||theta_t - theta_0||"}
OUTCOMES = {"forgetting": "forgetting of earlier tasks (pts, positive = lost)",
            "general_delta": "general change (pts, negative = harm)"}
SHORT = {"kl_to_base_task": "KL to base (trained task)", "kl_to_base_general": "KL to base (general suite)",
         "param_drift": "parameter drift", "forgetting": "forgetting", "general_delta": "general change"}


@dataclass
class StagePoint:
    paradigm: str
    stage: int
    outcomes: dict[str, float]  # OUTCOMES keys, as fractions
    predictors: dict[str, float]  # PREDICTORS keys


@dataclass
class Fit:
    n: int
    slope: float
    intercept: float
    r: float
    r2: float
    rho: float  # Spearman's rank correlation: a monotone but curved (saturating) relation scores high


def stage_points(run: RunRecord) -> list[StagePoint]:
    """The points of one sequential run (a joint run has one stage and no earlier tasks)."""
    if run.joint or not run.matrix:
        return []
    acc = {(r["stage"], r["eval_task"]): r["accuracy"] for r in run.matrix}
    stages = sorted({r["stage"] for r in run.matrix})
    points = []
    for t in stages[1:]:
        rows = [[acc[(s, task)] for task in run.order] for s in range(t + 1)]
        general = {g: [acc[(s, g)] for s in range(t + 1)] for g in run.general if (0, g) in acc}
        outcomes = {"forgetting": forgetting(rows), "general_delta": general_delta(rows, general)}
        measured = run.diagnostics[t].drift() if t in run.diagnostics else {}
        predictors = {k: float(v) for k, v in measured.items() if k in PREDICTORS}
        points.append(StagePoint(run.paradigm, t, {k: v for k, v in outcomes.items() if v is not None}, predictors))
    return points


def fit(xs: Sequence[float], ys: Sequence[float]) -> Fit | None:
    """Least squares y = slope * x + intercept, with Pearson's r and R^2; None when it is undefined."""
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    slope, intercept = statistics.linear_regression(xs, ys)
    r = statistics.correlation(xs, ys)
    return Fit(len(xs), slope, intercept, r, r * r, statistics.correlation(ranks(xs), ranks(ys)))


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank (Spearman's convention)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def pairs(points: Sequence[StagePoint], predictor: str, outcome: str) -> list[tuple[str, float, float]]:
    """(paradigm, x, y) of every point that has both values."""
    return [(p.paradigm, p.predictors[predictor], p.outcomes[outcome]) for p in points
            if predictor in p.predictors and outcome in p.outcomes]


def correlations(points: Sequence[StagePoint]) -> dict[tuple[str, str], Fit | None]:
    """The fit of every outcome against every predictor, over all points."""
    out = {}
    for predictor in PREDICTORS:
        for outcome in OUTCOMES:
            xy = pairs(points, predictor, outcome)
            out[(predictor, outcome)] = fit([x for _, x, _ in xy], [y for _, _, y in xy])
    return out
