"""Confidence intervals for the report. Pure functions of plain values.

All are 95 % percentile bootstrap intervals:

- a variant's metric: the mean over its runs, resampled with `scipy.stats.bootstrap`;
- two groups of runs (the paradigms at the learning rates a gain-only rule picks): the
  difference of their means, the groups resampled independently (`diff_ci`);
- the paradigms' difference at matched gain: a bootstrap over each variant's runs that refits
  both frontiers on every resample. With several base models (`model.recipe.seed`) each base
  is compared on its own frontiers and the headline is their mean, with a two-level bootstrap
  (base models with replacement, then seeds within each), so its interval covers both sources
  of variation.

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


def _resample(points: Sequence[RunPoint], rng: np.random.Generator) -> list[RunPoint]:
    """Each variant's runs drawn again with replacement (as many as it has)."""
    by_variant: dict[str, list[RunPoint]] = {}
    for p in points:
        by_variant.setdefault(p.variant, []).append(p)
    return [members[i] for members in by_variant.values() for i in rng.integers(len(members), size=len(members))]


def _percentile_interval(samples: np.ndarray, confidence: float, n: int) -> Interval | None:
    samples = samples[~np.isnan(samples)]
    if not len(samples):
        return None
    tail = 100 * (1 - confidence) / 2
    return Interval(float(np.percentile(samples, tail)), float(np.percentile(samples, 100 - tail)), n)


def matched_gain_ci(a: Sequence[RunPoint], b: Sequence[RunPoint], minimize_y: bool = True,
                    n: int = MATCHED_POINTS, confidence: float = CONFIDENCE,
                    n_resamples: int = MATCHED_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> MatchedComparison | None:
    """Paradigm a minus paradigm b at matched gain on one base model, with bootstrap intervals.

    The point estimate interpolates each side's frontier of variant means (`matched_gain`) at
    `n` gains spanning the range both reach. Every resample redraws each variant's runs with
    replacement, refits both frontiers and evaluates them at those same gains; a gain outside
    a resample's common range is left out of that resample and the share that reached it is
    reported. None when the gain ranges do not overlap.
    """
    point = matched_gain(variant_means(a), variant_means(b), n=n, minimize_y=minimize_y)
    if not point:
        return None
    gains = [g for g, *_ in point]
    rng = np.random.default_rng(seed)
    diffs = np.stack([_diffs_at(gains, _resample(a, rng), _resample(b, rng), minimize_y) for _ in range(n_resamples)])
    n_runs = len(a) + len(b)
    rows = [MatchedRow(g, ya, yb, d, _percentile_interval(diffs[:, k], confidence, n_runs),
                       float(np.mean(~np.isnan(diffs[:, k]))))
            for k, (g, ya, yb, d) in enumerate(point)]
    complete = diffs[~np.isnan(diffs).any(axis=1)]
    return MatchedComparison(
        rows=rows, mean_diff=statistics.fmean(r.diff for r in rows),
        mean_ci=_percentile_interval(complete.mean(axis=1), confidence, n_runs) if len(complete) else None,
        runs=(len(a), len(b)), variants=(len({p.variant for p in a}), len({p.variant for p in b})),
        clusters=len({p.cluster for p in (*a, *b)}))


@dataclass(frozen=True)
class AcrossBases:
    """The matched-gain comparison on each base model, and their mean."""

    per_base: dict[Hashable, MatchedComparison | None]  # None: the gain ranges do not overlap there
    mean_diff: float  # mean over the base models with an overlap of their mean differences
    mean_ci: Interval | None  # base models resampled, then each variant's seeds within them
    runs: tuple[int, int]


def matched_gain_across_bases(a: Sequence[RunPoint], b: Sequence[RunPoint], minimize_y: bool = True,
                              n: int = MATCHED_POINTS, confidence: float = CONFIDENCE,
                              n_resamples: int = MATCHED_RESAMPLES,
                              seed: int = BOOTSTRAP_SEED) -> AcrossBases | None:
    """Paradigm a minus b at matched gain within each base model, averaged over base models.

    Frontiers are never pooled across base models: one base's learning rates can reach other
    gains than another's, and a frontier through their averages belongs to no model. Each base
    model is compared on its own (`matched_gain_ci`, intervals over its seeds); the headline is
    the mean of their mean differences, its interval a two-level bootstrap: draw base models
    with replacement, redraw each variant's runs within each, recompute every drawn base's
    difference at its own matched gains, average. None when no base model has an overlap.
    """
    bases = sorted({p.cluster for p in (*a, *b)}, key=repr)
    side = {c: ([p for p in a if p.cluster == c], [p for p in b if p.cluster == c]) for c in bases}
    per_base = {c: matched_gain_ci(*side[c], minimize_y=minimize_y, n=n, confidence=confidence,
                                   n_resamples=n_resamples, seed=seed) for c in bases}
    compared = [c for c in bases if per_base[c] is not None]
    if not compared:
        return None
    gains = {c: [r.gain for r in per_base[c].rows] for c in compared}
    rng = np.random.default_rng(seed)
    means = np.full(n_resamples, np.nan)
    for r in range(n_resamples):
        picked = [compared[i] for i in rng.integers(len(compared), size=len(compared))]
        per = [np.nanmean(d) if not np.isnan(d).all() else np.nan
               for c in picked for d in [_diffs_at(gains[c], _resample(side[c][0], rng), _resample(side[c][1], rng),
                                                   minimize_y)]]
        if not np.isnan(per).all():
            means[r] = np.nanmean(per)
    return AcrossBases(per_base, statistics.fmean(per_base[c].mean_diff for c in compared),
                       _percentile_interval(means, confidence, len(a) + len(b)), (len(a), len(b)))


def _diffs_at(gains: Sequence[float], a: Sequence[RunPoint], b: Sequence[RunPoint], minimize_y: bool) -> np.ndarray:
    """a's frontier minus b's at each gain (nan where either frontier does not reach it)."""
    fa, fb = (_frontier(variant_means(side), minimize_y) for side in (a, b))
    out = np.full(len(gains), np.nan)
    for k, g in enumerate(gains):
        ya, yb = _at(g, *fa), _at(g, *fb)
        if ya is not None and yb is not None:
            out[k] = ya - yb
    return out


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
