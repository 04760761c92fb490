"""Confidence intervals for the report. Pure functions of plain values.

- A variant's metric: the Student-t interval of the mean over its runs (`mean_ci`). With the
  2-5 runs a study has per variant, a percentile bootstrap can only span the values seen (it
  covers a known mean about 52 % of the time at n = 2, 74 % at n = 3); the t-interval has its
  nominal coverage for normal noise at every n. Runs from several base models are not
  independent draws of one model: the unit is then the base model (the t-interval over the
  base models' means, n = the number of bases).
- Two groups of runs (the paradigms at the learning rates a gain-only rule picks; the two
  variants nearest in gain): Welch's t-interval of the difference of means (`diff_ci`).
- The paradigms' difference at matched gain: a bootstrap over each variant's runs that refits
  both frontiers on every resample. A gain is compared only where at least `REACH` of the
  resamples' frontiers reach it; where one does not, its frontier's nearest end stands in, so
  no resample is ever dropped (dropping them would keep exactly those that pull one way).
  With no such gain the comparison is not estimable, and the share of resamples that reach a
  common gain is reported instead. The interval is not the resamples' percentiles: redrawing 3
  runs gives a variant's mean two thirds of its variance, and the normal quantiles a percentile
  interval amounts to ignore how few runs estimate it, so that interval covered a known gap 89-91 %
  of the time at 3 seeds a variant (94 % at 5). It is the point estimate ± Student's t on the
  seeds' degrees of freedom x the resamples' standard deviation x sqrt(n / (n - 1))
  (`_bootstrap_t_interval`), which covers it 95.0 % of the time at 3 seeds and 95.9 % at 5, about
  1.4 and 1.2 times as wide (simulated sweeps of 4 learning rates a side, fixed seeds: the same
  figures on every machine; `tests/test_stats.py`). Across base models the headline is the
  t-interval over the bases' own matched-gain differences (n = bases), under the same rule in each.

No interval of zero width is given: where the values do not vary, or agree to within float
rounding (two runs at 0.075 and 0.07500000000000001), there is none.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from cpt_bench.report.frontier import MATCHED_POINTS, matched_gain

CONFIDENCE = 0.95
REACH = 0.975  # a matched gain is compared only where (nearly) every resample's frontiers reach it
MATCHED_RESAMPLES = 2000  # both frontiers refitted on each, vectorised over resamples: ~5 ms a comparison
BOOTSTRAP_SEED = 0  # the report is a pure function of its runs: same runs, same intervals
ROUNDING = 1e-9  # values whose spread is below this (relative to their size) agree: no interval


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    n: int  # the values behind it
    unit: str = "runs"  # what n counts: runs, or base models
    # what its width rests on, for the seeds a narrower one needs (decide.py): the degrees of
    # freedom of its t quantile, and the fewest units (runs of a variant, or base models) behind it
    dof: float | None = None
    per_variant: int | None = None
    clipped: bool = False  # an end was cut to what the quantity can be (`within`)

    def covers(self, value: float = 0.0) -> bool:
        return self.low <= value <= self.high

    def within(self, low: float, high: float) -> Interval:
        """Cut to what the quantity can be (a share lies in [0, 1]) and marked so: a t-interval of
        a few shares near 0 reaches below it."""
        lo, hi = max(self.low, low), min(self.high, high)
        return self if (lo, hi) == (self.low, self.high) else dataclasses.replace(self, low=lo, high=hi, clipped=True)


@functools.lru_cache(maxsize=1024)  # scipy's ppf takes ~1 ms; coverage tests ask for the same few quantiles often
def t_quantile(confidence: float, df: float) -> float:
    from scipy.stats import t  # 0.3 s to import; only reports need it

    return float(t.ppf((1 + confidence) / 2, df))


def agree(values) -> bool:
    """Whether the values agree to within float rounding (no spread to build an interval on)."""
    xs = np.asarray(values, dtype=float)
    return float(np.ptp(xs)) <= ROUNDING * max(1.0, float(np.abs(xs).max()))


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE, unit: str = "runs") -> Interval | None:
    """Student-t interval of the mean; None with fewer than two values or no spread."""
    xs = np.asarray(values, dtype=float)
    if len(xs) < 2 or agree(xs):
        return None
    half = t_quantile(confidence, len(xs) - 1) * float(np.std(xs, ddof=1)) / math.sqrt(len(xs))
    return Interval(float(xs.mean()) - half, float(xs.mean()) + half, len(xs), unit, len(xs) - 1, len(xs))


def cluster_means(values: Sequence[float | None], clusters: Sequence[Hashable]) -> list[float]:
    """The mean of each cluster's values (None values left out), in first-seen order."""
    groups: dict[Hashable, list[float]] = {}
    for v, c in zip(values, clusters):
        if v is not None:
            groups.setdefault(c, []).append(float(v))
    return [statistics.fmean(g) for g in groups.values()]


def mean_ci(values: Sequence[float | None], clusters: Sequence[Hashable] | None = None,
            confidence: float = CONFIDENCE) -> Interval | None:
    """The interval of a variant's mean: over its runs, or, when `clusters` (each run's base
    model) holds more than one value, over the base models' means (n = bases)."""
    if clusters is not None and len({c for v, c in zip(values, clusters) if v is not None}) > 1:
        return t_interval(cluster_means(values, clusters), confidence, unit="base models")
    return t_interval([v for v in values if v is not None], confidence)


def diff_ci(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Interval | None:
    """Welch's t-interval of mean(a) - mean(b) (None with fewer than two values a side, or no spread)."""
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(xa) < 2 or len(xb) < 2:
        return None
    if agree(xa) and agree(xb):
        return None
    va, vb = np.var(xa, ddof=1) / len(xa), np.var(xb, ddof=1) / len(xb)
    df = (va + vb) ** 2 / (va ** 2 / (len(xa) - 1) + vb ** 2 / (len(xb) - 1))
    d, half = float(xa.mean() - xb.mean()), t_quantile(confidence, df) * math.sqrt(va + vb)
    return Interval(d - half, d + half, len(xa) + len(xb), dof=float(df), per_variant=min(len(xa), len(xb)))


def group_diff_ci(a: Sequence[float], b: Sequence[float], clusters_a: Sequence[Hashable],
                  clusters_b: Sequence[Hashable], confidence: float = CONFIDENCE) -> Interval | None:
    """mean(a) - mean(b) over runs (`diff_ci`), or, with several base models, the t-interval
    over each base's own difference of means (the bases both sides share; n = bases)."""
    if len({*clusters_a, *clusters_b}) < 2:
        return diff_ci(a, b, confidence)
    mean_a = dict(zip(dict.fromkeys(clusters_a), cluster_means(a, clusters_a)))
    mean_b = dict(zip(dict.fromkeys(clusters_b), cluster_means(b, clusters_b)))
    return t_interval([mean_a[c] - mean_b[c] for c in mean_a if c in mean_b], confidence, unit="base models")


@dataclass(frozen=True)
class RunPoint:
    """One run on the gain/outcome plane, with what the bootstrap groups it by."""

    variant: str  # runs of one variant are averaged (its seeds and base models)
    cluster: Hashable  # the base model it started from
    gain: float
    y: float


@dataclass(frozen=True)
class MatchedRow:
    gain: float
    y_a: float
    y_b: float
    diff: float  # y_a - y_b
    ci: Interval | None  # of diff; None where fewer than REACH of the resamples reach this gain
    reached: float  # share of resamples whose frontiers both reach this gain
    reached_a: float = 1.0  # share whose frontier of a reaches it (what would make it estimable: decide.py)
    reached_b: float = 1.0

    @property
    def estimable(self) -> bool:
        return self.reached >= REACH


@dataclass(frozen=True)
class Nearest:
    """The two variants (one per paradigm) whose mean gains are closest, compared directly."""

    variant_a: str
    variant_b: str
    gain_a: float
    gain_b: float
    diff: float  # mean y of a's runs - mean y of b's runs
    ci: Interval | None  # Welch's t over the two variants' runs


@dataclass(frozen=True)
class MatchedComparison:
    rows: list[MatchedRow]  # every candidate gain, estimable or not
    mean_diff: float | None  # the difference averaged over the estimable gains (None: none is)
    mean_ci: Interval | None
    runs: tuple[int, int]  # runs behind each side
    variants: tuple[int, int]
    clusters: int  # base models
    nearest: Nearest | None = None

    @property
    def estimable(self) -> bool:
        return self.mean_diff is not None

    @property
    def best_reach(self) -> float:
        return max(r.reached for r in self.rows)


def _by_variant(points: Sequence[RunPoint]) -> dict[str, list[RunPoint]]:
    by_variant: dict[str, list[RunPoint]] = {}
    for p in points:
        by_variant.setdefault(p.variant, []).append(p)
    return by_variant


def variant_means(points: Sequence[RunPoint]) -> list[tuple[float, float]]:
    """(mean gain, mean y) per variant: the points a paradigm's frontier is fitted to."""
    return [(statistics.fmean(p.gain for p in ps), statistics.fmean(p.y for p in ps))
            for ps in _by_variant(points).values()]


def nearest_variants(a: Sequence[RunPoint], b: Sequence[RunPoint]) -> Nearest | None:
    """The variant pair nearest in mean gain, and Welch's interval of their outcomes' difference."""
    va, vb = _by_variant(a), _by_variant(b)
    if not va or not vb:
        return None
    gain = {k: statistics.fmean(p.gain for p in ps) for k, ps in (*va.items(), *vb.items())}
    ka, kb = min(((x, y) for x in va for y in vb), key=lambda pair: abs(gain[pair[0]] - gain[pair[1]]))
    ya, yb = [p.y for p in va[ka]], [p.y for p in vb[kb]]
    return Nearest(ka, kb, gain[ka], gain[kb], statistics.fmean(ya) - statistics.fmean(yb), diff_ci(ya, yb))


def _resample_means(points: Sequence[RunPoint], n_resamples: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each variant's runs drawn again with replacement (as many as it has), `n_resamples` times
    at once: the resampled variants' mean gains and mean outcomes, (variants, resamples) each."""
    groups = list(_by_variant(points).values())
    gains, ys = np.empty((len(groups), n_resamples)), np.empty((len(groups), n_resamples))
    for v, members in enumerate(groups):
        pick = rng.integers(len(members), size=(n_resamples, len(members)))
        gains[v] = np.array([p.gain for p in members])[pick].mean(axis=1)
        ys[v] = np.array([p.y for p in members])[pick].mean(axis=1)
    return gains, ys


def _frontiers_at(gains: np.ndarray, xs: np.ndarray, ys: np.ndarray,
                  minimize_y: bool) -> tuple[np.ndarray, np.ndarray]:
    """Every resample's Pareto frontier (`pareto_frontier` of its variants' means: the columns of
    `xs`, `ys`, (variants, resamples)) evaluated at `gains` as `np.interp` would (its nearest end
    outside its range), and whether the resample's variants reach each gain (to within
    `np.isclose`'s default tolerances of their ends): below the frontier's lowest point, down to
    the lowest variant, the frontier's end stands for the paradigm (`frontier.matched_gain`), so a
    resample whose high-gain variant happens to dominate every other one still reaches the gains
    its learning rates span. Both (gains, resamples). Vectorised over resamples, the
    innermost axis: one frontier at a time in Python took ~1 s a comparison, too slow to measure
    the interval's coverage on hundreds of simulated studies."""
    better = ys if minimize_y else -ys  # now lower is better
    xi, xj, bi, bj = xs[:, None], xs[None], better[:, None], better[None]
    front = ~((xj >= xi) & (bj <= bi) & ((xj != xi) | (bj != bi))).any(axis=1)  # (variants, resamples)
    g = gains[:, None, None]
    left, right = front & (xs <= g), front & (xs >= g)  # (gains, variants, resamples): frontier at or below g, above
    il = np.where(left, xs, -np.inf).argmax(axis=1)  # the nearest frontier point at or below each gain
    ir = np.where(right, xs, np.inf).argmin(axis=1)  # and at or above it
    cols = np.arange(xs.shape[1])
    xl, yl, xr, yr = xs[il, cols], ys[il, cols], xs[ir, cols], ys[ir, cols]
    g = gains[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        between = yl + (yr - yl) * (g - xl) / (xr - xl)
    values = np.where(~left.any(axis=1), yr, np.where(~right.any(axis=1), yl, np.where(xr == xl, yl, between)))
    lo, hi = xs.min(axis=0), xs.max(axis=0)  # the highest-gain variant is always on the frontier
    inside = ((g >= lo) | _close(g, lo)) & ((g <= hi) | _close(g, hi))
    return values, inside


def _close(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    """np.isclose(g, x) with its default tolerances, written out: np.isclose's own overhead was
    a tenth of the whole bootstrap."""
    return np.abs(g - x) <= 1e-8 + 1e-5 * np.abs(x)


def _seed_dof(a: Sequence[RunPoint], b: Sequence[RunPoint], lo: float, hi: float) -> tuple[int, int]:
    """The seeds' degrees of freedom behind both frontiers between gains `lo` and `hi`, and the
    fewest runs a variant behind them has. The variants behind them, on either side: those whose
    mean gain lies in [lo, hi], and the nearest below and above it (a frontier between those
    interpolates them); a variant far outside the compared gains informs no difference there.
    Each variant with n runs gives n - 1 degrees of freedom (one run gives none, and no count)."""
    dof, fewest = 0, 0
    for side in (a, b):
        groups = list(_by_variant(side).values())
        xs = [statistics.fmean(p.gain for p in g) for g in groups]
        start = max((x for x in xs if x <= lo), default=min(xs))
        stop = min((x for x in xs if x >= hi), default=max(xs))
        for x, g in zip(xs, groups):
            if start <= x <= stop and len(g) > 1:
                dof += len(g) - 1
                fewest = min(fewest or len(g), len(g))
    return dof, fewest


def _bootstrap_t_interval(estimate: float, samples: np.ndarray, dof: int, seeds: int, n: int,
                          confidence: float) -> Interval | None:
    """estimate ± t(confidence, dof) x sqrt(seeds / (seeds - 1)) x the resamples' standard deviation.

    Redrawing a variant's n runs with replacement gives their mean the plug-in variance, (n - 1)/n
    of the unbiased one (2/3 at 3 seeds): `seeds` is the fewest runs of a variant behind the
    difference, so the correction is the largest any of them needs. A standard error estimated
    from so few runs calls for Student's t on the seeds' degrees of freedom (`_seed_dof`), where a
    percentile interval amounts to the normal quantiles. None without degrees of freedom, or with
    no spread (ends that agree to within float rounding: `agree`)."""
    if dof < 1 or seeds < 2:
        return None
    half = t_quantile(confidence, dof) * math.sqrt(seeds / (seeds - 1)) * float(np.std(samples, ddof=1))
    low, high = estimate - half, estimate + half
    return None if agree([low, high]) else Interval(low, high, n, dof=dof, per_variant=seeds)


def matched_gain_ci(a: Sequence[RunPoint], b: Sequence[RunPoint], minimize_y: bool = True,
                    n: int = MATCHED_POINTS, confidence: float = CONFIDENCE,
                    n_resamples: int = MATCHED_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> MatchedComparison | None:
    """Paradigm a minus paradigm b at matched gain on one base model, with bootstrap intervals.

    The candidate gains are `n` points spanning the range both frontiers of variant means
    reach (`matched_gain`). Every resample redraws each variant's runs with replacement, refits
    both frontiers and evaluates them at those gains (a frontier that does not reach a gain
    gives its nearest end). Only gains reached by at least `REACH` of the resamples get an
    interval and enter the mean. Each interval is the point estimate ± Student's t on the
    seeds' degrees of freedom times the resamples' standard error, corrected for the bootstrap's
    plug-in variance (`_bootstrap_t_interval`). None when the point estimate's gain ranges do
    not overlap.

    Exactly antisymmetric: b − a is a − b negated, interval and all. The resamples are drawn for
    the two sides in one canonical order (`_side_key`), whichever is named first, so a report's
    matched-gain table and its verdicts print one interval for one comparison.
    """
    if _side_key(b) < _side_key(a):
        flipped = matched_gain_ci(b, a, minimize_y, n, confidence, n_resamples, seed)
        return None if flipped is None else _negated(flipped, nearest_variants(a, b))
    point = matched_gain(variant_means(a), variant_means(b), n=n, minimize_y=minimize_y)
    if not point:
        return None
    gains = np.array([g for g, *_ in point])
    rng = np.random.default_rng(seed)
    (ya, reach_a), (yb, reach_b) = (_frontiers_at(gains, *_resample_means(side, n_resamples, rng), minimize_y)
                                    for side in (a, b))
    diffs, share = ya - yb, (reach_a & reach_b).mean(axis=1)  # (gains, resamples), (gains,)
    n_runs = len(a) + len(b)

    def interval(estimate: float, samples: np.ndarray, lo: float, hi: float) -> Interval | None:
        return _bootstrap_t_interval(estimate, samples, *_seed_dof(a, b, lo, hi), n_runs, confidence)

    rows = [MatchedRow(g, y_a, y_b, d, interval(d, diffs[k], g, g) if share[k] >= REACH else None,
                       float(share[k]), float(reach_a[k].mean()), float(reach_b[k].mean()))
            for k, (g, y_a, y_b, d) in enumerate(point)]
    keep = [k for k in range(len(gains)) if share[k] >= REACH]
    mean_diff = statistics.fmean(rows[k].diff for k in keep) if keep else None
    return MatchedComparison(
        rows=rows, mean_diff=mean_diff,
        mean_ci=interval(mean_diff, diffs[keep].mean(axis=0), gains[keep[0]], gains[keep[-1]]) if keep else None,
        runs=(len(a), len(b)), variants=(len(_by_variant(a)), len(_by_variant(b))),
        clusters=len({p.cluster for p in (*a, *b)}), nearest=nearest_variants(a, b))


def _side_key(points: Sequence[RunPoint]) -> list[tuple]:
    """A total order on one side's runs, independent of the order they were given in."""
    return sorted((p.variant, repr(p.cluster), p.gain, p.y) for p in points)


def _flip(ci: Interval | None) -> Interval | None:
    return None if ci is None else Interval(-ci.high, -ci.low, ci.n, ci.unit, ci.dof, ci.per_variant)


def _negated(cmp: MatchedComparison, nearest: Nearest | None) -> MatchedComparison:
    """b − a from a − b: every difference and interval negated, the sides swapped."""
    rows = [MatchedRow(r.gain, r.y_b, r.y_a, -r.diff, _flip(r.ci), r.reached, r.reached_b, r.reached_a)
            for r in cmp.rows]
    return MatchedComparison(rows, None if cmp.mean_diff is None else -cmp.mean_diff, _flip(cmp.mean_ci),
                             cmp.runs[::-1], cmp.variants[::-1], cmp.clusters, nearest)


@dataclass(frozen=True)
class AcrossBases:
    """The matched-gain comparison on each base model, and their mean."""

    per_base: dict[Hashable, MatchedComparison | None]  # None: the gain ranges do not overlap there
    mean_diff: float | None  # mean over the base models where it is estimable
    mean_ci: Interval | None  # t-interval over those bases' differences (n = bases)
    runs: tuple[int, int]

    @property
    def estimable_bases(self) -> list[Hashable]:
        return [c for c, cmp in self.per_base.items() if cmp is not None and cmp.estimable]


def matched_gain_across_bases(a: Sequence[RunPoint], b: Sequence[RunPoint], minimize_y: bool = True,
                              n: int = MATCHED_POINTS, confidence: float = CONFIDENCE,
                              n_resamples: int = MATCHED_RESAMPLES,
                              seed: int = BOOTSTRAP_SEED) -> AcrossBases | None:
    """Paradigm a minus b at matched gain within each base model, averaged over base models.

    Frontiers are never pooled across base models: one base's learning rates can reach other
    gains than another's, and a frontier through their averages belongs to no model. Each base
    model is compared on its own (`matched_gain_ci`, intervals over its seeds); the headline is
    the mean of the differences of the bases where it is estimable, its interval the t-interval
    over them: the base model is the unit, n the number of bases. None when no base overlaps.
    """
    bases = sorted({p.cluster for p in (*a, *b)}, key=repr)
    per_base = {c: matched_gain_ci([p for p in a if p.cluster == c], [p for p in b if p.cluster == c],
                                   minimize_y=minimize_y, n=n, confidence=confidence, n_resamples=n_resamples,
                                   seed=seed) for c in bases}
    if all(cmp is None for cmp in per_base.values()):
        return None
    diffs = [cmp.mean_diff for cmp in per_base.values() if cmp is not None and cmp.estimable]
    return AcrossBases(per_base, statistics.fmean(diffs) if diffs else None,
                       t_interval(diffs, confidence, unit="base models"), (len(a), len(b)))


GAIN_SHARE = 0.9  # docs/hyperparameters.md: the smallest lr reaching 90 % of the best gain


def gain_rule(mean_gain_by_lr: dict[float, float], share: float = GAIN_SHARE) -> float | None:
    """The learning rate the gain-only rule picks: the smallest whose mean gain is at least
    `share` of the best mean gain on the grid (forgetting is never consulted). None when no
    rate has a positive mean gain: a share of a loss picks nothing meaningful."""
    best = max(mean_gain_by_lr.values())
    if best <= 0:
        return None
    return min(lr for lr, g in mean_gain_by_lr.items() if g >= share * best)
