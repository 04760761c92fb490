"""Confidence intervals for the report. Pure functions of plain values.

Two kinds, both 95 % percentile bootstrap intervals:

- a variant's metric: the mean over its runs, resampled with `scipy.stats.bootstrap`;
- the paradigms' difference at matched gain: a cluster bootstrap over runs that refits both
  frontiers on every resample. Runs are grouped by base model (`model.recipe.seed`, when the
  runs differ in it): a resample draws base models with replacement, then each variant's runs
  within every drawn base model, so the interval covers both sources of variation. With one
  base model it is the usual bootstrap over each variant's seeds.

With few runs a percentile interval is narrower than the truth (with 3 seeds it can only
span the values seen), so the report prints the number of runs next to every interval.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from cpt_bench.report.frontier import MATCHED_POINTS, matched_gain, pareto_frontier

CONFIDENCE = 0.95
MEAN_RESAMPLES = 9999  # scipy's default; a mean of a handful of values costs nothing
MATCHED_RESAMPLES = 2000  # each refits two frontiers in Python: ~1 s in all
BOOTSTRAP_SEED = 0  # the report is a pure function of its runs: same runs, same intervals


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    n: int  # the values (runs) behind it

    def covers(self, value: float = 0.0) -> bool:
        return self.low <= value <= self.high


def mean_ci(values: Sequence[float | None], confidence: float = CONFIDENCE,
            n_resamples: int = MEAN_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Interval | None:
    """Percentile bootstrap interval of the mean (None with fewer than two values)."""
    from scipy.stats import bootstrap  # 0.3 s to import; only reports need it

    xs = np.array([v for v in values if v is not None], dtype=float)
    if len(xs) < 2:
        return None
    if np.all(xs == xs[0]):  # every resample has the same mean; scipy warns and returns nan
        return Interval(float(xs[0]), float(xs[0]), len(xs))
    res = bootstrap((xs,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                    method="percentile", rng=np.random.default_rng(seed))
    return Interval(float(res.confidence_interval.low), float(res.confidence_interval.high), len(xs))


@dataclass(frozen=True)
class RunPoint:
    """One run on the gain/outcome plane, with what the bootstrap groups it by."""

    variant: str  # runs of one variant are averaged (its seeds and base models)
    cluster: Hashable  # the base model it started from; resampled as a whole
    gain: float
    y: float


@dataclass(frozen=True)
class MatchedRow:
    gain: float
    y_a: float
    y_b: float
    diff: float  # y_a - y_b
    ci: Interval | None  # of diff; None without resamples that reach this gain
    reached: float  # share of resamples whose frontiers both reach this gain


@dataclass(frozen=True)
class MatchedComparison:
    rows: list[MatchedRow]
    mean_diff: float  # the difference averaged over the matched gains
    mean_ci: Interval | None
    runs: tuple[int, int]  # runs behind each side
    variants: tuple[int, int]
    clusters: int  # base models


def variant_means(points: Sequence[RunPoint]) -> list[tuple[float, float]]:
    """(mean gain, mean y) per variant: the points a paradigm's frontier is fitted to."""
    by_variant: dict[str, list[RunPoint]] = {}
    for p in points:
        by_variant.setdefault(p.variant, []).append(p)
    return [(statistics.fmean(p.gain for p in ps), statistics.fmean(p.y for p in ps)) for ps in by_variant.values()]


def _resample(points: Sequence[RunPoint], picked: Sequence[Hashable], rng: np.random.Generator) -> list[RunPoint]:
    """Each variant's runs within each drawn cluster, drawn again with replacement."""
    cells: dict[tuple[str, Hashable], list[RunPoint]] = {}
    for p in points:
        cells.setdefault((p.variant, p.cluster), []).append(p)
    out = []
    for cluster in picked:
        for (_, c), members in cells.items():
            if c == cluster:
                out += [members[i] for i in rng.integers(len(members), size=len(members))]
    return out


def _percentile_interval(samples: np.ndarray, confidence: float, n: int) -> Interval | None:
    samples = samples[~np.isnan(samples)]
    if not len(samples):
        return None
    tail = 100 * (1 - confidence) / 2
    return Interval(float(np.percentile(samples, tail)), float(np.percentile(samples, 100 - tail)), n)


def matched_gain_ci(a: Sequence[RunPoint], b: Sequence[RunPoint], minimize_y: bool = True,
                    n: int = MATCHED_POINTS, confidence: float = CONFIDENCE,
                    n_resamples: int = MATCHED_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> MatchedComparison | None:
    """Paradigm a minus paradigm b at matched gain, with bootstrap intervals.

    The point estimate interpolates each side's frontier of variant means (`matched_gain`) at
    `n` gains spanning the range both reach. Every resample redraws the runs (see the module
    docstring), refits both frontiers and evaluates them at those same gains; a gain outside
    a resample's common range is left out of that resample and the share that reached it is
    reported. None when the gain ranges do not overlap.
    """
    point = matched_gain(variant_means(a), variant_means(b), n=n, minimize_y=minimize_y)
    if not point:
        return None
    gains = [g for g, *_ in point]
    clusters = sorted({p.cluster for p in (*a, *b)}, key=repr)
    rng = np.random.default_rng(seed)
    diffs = np.full((n_resamples, len(gains)), np.nan)
    for r in range(n_resamples):
        picked = [clusters[i] for i in rng.integers(len(clusters), size=len(clusters))] if len(clusters) > 1 \
            else clusters
        fronts = [_frontier(variant_means(_resample(side, picked, rng)), minimize_y) for side in (a, b)]
        for k, g in enumerate(gains):
            ya, yb = (_at(g, *front) for front in fronts)
            if ya is not None and yb is not None:
                diffs[r, k] = ya - yb
    n_runs = len(a) + len(b)
    rows = [MatchedRow(g, ya, yb, d, _percentile_interval(diffs[:, k], confidence, n_runs),
                       float(np.mean(~np.isnan(diffs[:, k]))))
            for k, (g, ya, yb, d) in enumerate(point)]
    complete = diffs[~np.isnan(diffs).any(axis=1)]
    return MatchedComparison(
        rows=rows, mean_diff=statistics.fmean(r.diff for r in rows),
        mean_ci=_percentile_interval(complete.mean(axis=1), confidence, n_runs) if len(complete) else None,
        runs=(len(a), len(b)), variants=(len({p.variant for p in a}), len({p.variant for p in b})),
        clusters=len(clusters))


def _frontier(points: list[tuple[float, float]], minimize_y: bool) -> tuple[list[float], list[float]]:
    front = sorted({points[i] for i in pareto_frontier(points, minimize_y)})
    return [x for x, _ in front], [y for _, y in front]


def _at(x: float, xs: list[float], ys: list[float]) -> float | None:
    """The frontier's value at gain x, None outside its range."""
    if not xs or (x < xs[0] and not math.isclose(x, xs[0])) or (x > xs[-1] and not math.isclose(x, xs[-1])):
        return None
    return float(np.interp(x, xs, ys))


def diff_ci(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE,
            n_resamples: int = MEAN_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Interval | None:
    """Percentile bootstrap interval of mean(a) - mean(b), the two samples drawn independently."""
    from scipy.stats import bootstrap

    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(xa) < 2 or len(xb) < 2:
        return None
    if np.all(xa == xa[0]) and np.all(xb == xb[0]):
        d = float(xa[0] - xb[0])
        return Interval(d, d, len(xa) + len(xb))
    res = bootstrap((xa, xb), lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis), vectorized=True,
                    confidence_level=confidence, n_resamples=n_resamples, method="percentile",
                    rng=np.random.default_rng(seed))
    return Interval(float(res.confidence_interval.low), float(res.confidence_interval.high), len(xa) + len(xb))


GAIN_SHARE = 0.9  # docs/hyperparameters.md: the smallest lr reaching 90 % of the best gain


def gain_rule(mean_gain_by_lr: dict[float, float], share: float = GAIN_SHARE) -> float:
    """The learning rate the gain-only rule picks: the smallest whose mean gain is at least
    `share` of the best mean gain on the grid (forgetting is never consulted)."""
    best = max(mean_gain_by_lr.values())
    return min(lr for lr, g in mean_gain_by_lr.items() if g >= share * best)
