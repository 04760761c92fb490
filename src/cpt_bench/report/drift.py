"""Forgetting against drift: does how far a stage moved the model predict what it forgot?

One point per run and stage t: the forgetting of the tasks trained before t and the change on
the general suite as of stage t (the run's metrics computed on rows 0..t of its matrix), against
the drift recorded after stage t: the forward KL(pi_0 || pi_t) (responses from the base; RL's
Razor's predictor, arXiv 2509.04259) and the reverse KL(pi_t || pi_0) (responses from the stage's
model) on the trained task's prompts and on the general suite's (model/drift.py), and the
parameter drift. A least-squares line per panel with its R^2, over every paradigm's points
together (RL's Razor's claim is one predictor for both).

Each R^2 has a percentile bootstrap interval over runs (`r2_intervals`): the stages of one run
are not independent (a later stage has both more drift and more forgetting), so a resample
draws whole runs with replacement, not points, and Fisher's z on r (which assumes independent
points) would be too narrow. `compare_predictors` fits every measured predictor on the same
points with the same resamples and names the one with the highest R^2; it predicts best only
where its interval lies above every other's (non-overlapping intervals: a conservative rule).
Pure functions of `RunRecord`s, and the section's words for them (`format_r2`, `predictor_verdicts`).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cpt_bench.metrics import forgetting, general_delta
from cpt_bench.report.runs import RunRecord
from cpt_bench.report.stats import BOOTSTRAP_SEED, CONFIDENCE, Interval, agree

PREDICTORS = {"forward_kl_task": "forward KL(pi_0 || pi_t), trained task's prompts (nats)",
              "forward_kl_general": "forward KL(pi_0 || pi_t), general suite's prompts (nats)",
              "kl_to_base_task": "reverse KL(pi_t || pi_0), trained task's prompts (nats)",
              "kl_to_base_general": "reverse KL(pi_t || pi_0), general suite's prompts (nats)",
              "param_drift": "parameter drift ||theta_t - theta_0||"}
OUTCOMES = {"forgetting": "forgetting of earlier tasks (pts, positive = lost)",
            "general_delta": "general change (pts, negative = harm)"}
SHORT = {"forward_kl_task": "forward KL (trained task)", "forward_kl_general": "forward KL (general suite)",
         "kl_to_base_task": "reverse KL (trained task)", "kl_to_base_general": "reverse KL (general suite)",
         "param_drift": "parameter drift", "forgetting": "forgetting", "general_delta": "general change"}
R2_RESAMPLES = 2000  # vectorised over resamples: a few milliseconds per predictor
MIN_RUNS = 3  # an interval over fewer runs than this would only span the runs seen


@dataclass
class StagePoint:
    paradigm: str
    stage: int
    outcomes: dict[str, float]  # OUTCOMES keys, as fractions
    predictors: dict[str, float]  # PREDICTORS keys
    run: str = ""  # the run it belongs to: the bootstrap's unit


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
        points.append(StagePoint(run.paradigm, t, {k: v for k, v in outcomes.items() if v is not None}, predictors,
                                 str(run.path)))
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


@dataclass
class R2:
    """R^2 of one outcome against one predictor, with its bootstrap interval over runs."""

    r2: float
    n: int  # points
    runs: int
    bounds: tuple[float, float] | None = None  # the percentile interval; None: see `why`
    why: str = ""  # why there is no interval

    @property
    def ci(self) -> Interval | None:
        """The interval, none where the resamples agree (a zero-width interval reads as certainty)."""
        return Interval(*self.bounds, self.runs) if self.bounds and not agree(self.bounds) else None


def _resampled_r2(weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """R^2 of the least-squares line on each resample (a row of `weights`: how often each point
    was drawn); NaN where the line is undefined (fewer than 3 points, or no spread in x or y)."""
    x, y = (v - v.mean() for v in (x, y))
    x, y = x / (np.abs(x).max() or 1.0), y / (np.abs(y).max() or 1.0)  # a scale for the spread's tolerance
    total = weights.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = weights @ x / total, weights @ y / total
        sxx, syy = weights @ (x * x) / total - mx**2, weights @ (y * y) / total - my**2
        sxy = weights @ (x * y) / total - mx * my
        r2 = sxy**2 / (sxx * syy)
    return np.where((total >= 3) & (sxx > 1e-12) & (syy > 1e-12), np.clip(r2, 0.0, 1.0), np.nan)


def r2_intervals(points: Sequence[StagePoint], predictors: Sequence[str], outcome: str, *,
                 confidence: float = CONFIDENCE, resamples: int = R2_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> dict[str, R2]:
    """R^2 of `outcome` against each of `predictors` over `points` (each holding all of them),
    with its percentile bootstrap interval: every resample draws the runs again with replacement
    and keeps all of a drawn run's points, the same draws for every predictor. Predictors without
    a line are left out. No interval over fewer than `MIN_RUNS` runs, where fewer than half the
    resamples give a line, or where the resamples agree (no zero-width interval)."""
    runs = sorted({p.run for p in points})
    index = {run: i for i, run in enumerate(runs)}
    rng = np.random.default_rng(seed)
    draws = rng.integers(len(runs), size=(resamples, len(runs))) if runs else np.zeros((resamples, 0), int)
    counts = np.zeros((resamples, len(runs)))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1)
    weights = counts[:, [index[p.run] for p in points]]
    y = np.array([p.outcomes[outcome] for p in points], dtype=float)
    out = {}
    for predictor in predictors:
        x = np.array([p.predictors[predictor] for p in points], dtype=float)
        line = fit(list(x), list(y))
        if line is None:
            continue
        r2 = R2(line.r2, len(points), len(runs))
        fitted = _resampled_r2(weights, x, y)
        fitted = fitted[~np.isnan(fitted)]
        tail = 100 * (1 - confidence) / 2
        if len(runs) < MIN_RUNS:
            r2.why = f"{len(runs)} runs"
        elif len(fitted) < resamples / 2:
            r2.why = "too few resamples give a line"
        else:
            r2.bounds = (float(np.percentile(fitted, tail)), float(np.percentile(fitted, 100 - tail)))
            r2.why = f"every resample gives {r2.bounds[0]:.2f}" if r2.ci is None else ""
        out[predictor] = r2
    return out


def r2_table(points: Sequence[StagePoint]) -> dict[tuple[str, str], R2]:
    """`r2_intervals` of every outcome against every predictor, each on its own points."""
    out = {}
    for predictor in PREDICTORS:
        for outcome in OUTCOMES:
            own = [p for p in points if predictor in p.predictors and outcome in p.outcomes]
            if (r2 := r2_intervals(own, [predictor], outcome).get(predictor)) is not None:
                out[(predictor, outcome)] = r2
    return out


@dataclass
class Comparison:
    """The predictors of one outcome side by side, on the points where all were measured."""

    outcome: str
    r2: dict[str, R2]  # each predictor's, on the same points and resamples
    best: str  # the highest R^2
    rivals: list[str]  # the others whose interval overlaps the best's (or that has none)

    @property
    def distinguishable(self) -> bool:
        """Whether the best's interval lies above every other predictor's."""
        return not self.rivals


def _overlap(a: R2, b: R2) -> bool:
    """Whether two R^2 intervals overlap (one that agrees throughout is a point; none: unknown)."""
    return a.bounds is None or b.bounds is None or (a.bounds[0] <= b.bounds[1] and b.bounds[0] <= a.bounds[1])


def compare_predictors(points: Sequence[StagePoint], outcome: str, **bootstrap) -> Comparison | None:
    """Which measured predictor (one with a line on its own points) predicts `outcome` best, on
    the points that hold every one of them; None with fewer than two to compare."""
    fits = correlations(points)
    measured = [k for k in PREDICTORS if fits[(k, outcome)] is not None]
    common = [p for p in points if outcome in p.outcomes and all(k in p.predictors for k in measured)]
    r2 = r2_intervals(common, measured, outcome, **bootstrap)
    if len(r2) < 2:
        return None
    best = max(r2, key=lambda k: r2[k].r2)
    return Comparison(outcome, r2, best, [k for k in r2 if k != best and _overlap(r2[best], r2[k])])


def format_r2(r2: R2 | None, with_value: bool = False) -> str:
    """An R^2's interval, [low, high], with more decimals where two would print [x, x]."""
    if r2 is None:
        return "-"
    if r2.ci is None:
        return f"{r2.r2:.2f} (no interval: {r2.why})" if with_value else f"none ({r2.why})"
    digits = next((d for d in (2, 3, 4) if f"{r2.ci.low:.{d}f}" != f"{r2.ci.high:.{d}f}"), 4)
    text = f"[{r2.ci.low:.{digits}f}, {r2.ci.high:.{digits}f}]"
    return f"{r2.r2:.2f} {text}" if with_value else text


def predictor_verdicts(points: Sequence[StagePoint]) -> list[str]:
    """Per outcome, which drift measure predicts it best, or that none is distinguishable."""
    lines = []
    for outcome in OUTCOMES:
        if (c := compare_predictors(points, outcome)) is None:
            continue
        best, where = c.r2[c.best], f"{c.r2[c.best].n} points of {c.r2[c.best].runs} runs"
        others = "; ".join(f"{SHORT[k]} {format_r2(r2, True)}" for k, r2 in c.r2.items() if k != c.best)
        if c.distinguishable:
            verdict = f"above every other predictor's interval: **{SHORT[c.best]} predicts best**"
        else:
            why = (f"it has no interval ({best.why})" if best.bounds is None
                   else "its interval overlaps " + ", ".join(f"{SHORT[k]}'s" for k in c.rivals))
            verdict = f"{why}: **no predictor is distinguishable**"
        lines.append(f"- {SHORT[outcome]} ({where}): {SHORT[c.best]} has the highest R², {format_r2(best, True)}; "
                     f"{verdict} (others: {others}).")
    return lines
