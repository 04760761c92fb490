"""What would decide a comparison the report leaves open (pure).

Every comparison printed as "not distinguishable" or "not estimable" gets one line: why (the
interval's half-width at the seeds it has, or the share of resamples that reach a common gain)
and what would decide it:

- an interval that covers 0: the seeds per variant (or base models) at which an interval like
  this one would be ±`half_width`, if the spread stays as observed. Its half-width is
  t(dof(n)) x C / sqrt(n) for n seeds a variant (Student's t, Welch's, the matched-gain bootstrap:
  each is a standard error over seeds times a t quantile), C read off the observed interval, dof
  growing as the variants' seeds do. The half-width is chosen in advance (`cpt-bench-report
  --half-width`, 2 points by default): a pilot fixes n, n seeds are run and the result is
  reported whatever it is. Adding seeds until an interval excludes 0 would break its coverage.
- a comparison that is not estimable: the gains that are missing. The resamples miss the
  overlap of the two frontiers where it rests on one variant's noisy mean gain; a variant beyond
  it by two standard errors of that mean (or calibrated targets beyond both ends) would hold it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from cpt_bench.report.stats import (
    CONFIDENCE,
    REACH,
    Interval,
    MatchedComparison,
    RunPoint,
    matched_gain_across_bases,
    matched_gain_ci,
    t_quantile,
)

HALF_WIDTH = 0.02  # the half-width a decide-line plans for: 2 points
MAX_SEEDS = 1000
DECIDE_NOTE = ("Every comparison left open says why and what would decide it: for an interval that covers 0, "
               "the seeds a variant at which one like it would be ±{h:.1f} points if the spread stays as observed "
               "(fix the seeds in advance and report the result whatever it is: adding seeds until an interval "
               "excludes 0 breaks its coverage); for one that is not estimable, the gains that are missing.")


def seeds_needed(ci: Interval, half_width: float = HALF_WIDTH, confidence: float = CONFIDENCE) -> int | None:
    """The fewest seeds a variant (or base models, for an interval over base models) at which an
    interval like `ci` would be at most ±`half_width`, the spread staying as observed; None when
    `ci` does not say what its width rests on, or more than MAX_SEEDS would be needed."""
    n0 = ci.per_variant
    if ci.dof is None or not n0 or n0 < 2 or ci.dof <= 0:
        return None
    variants = ci.dof / (n0 - 1)  # each variant's n seeds give n - 1 degrees of freedom
    spread = (ci.high - ci.low) / 2 * math.sqrt(n0) / t_quantile(confidence, ci.dof)
    for n in range(2, MAX_SEEDS + 1):
        if t_quantile(confidence, variants * (n - 1)) * spread / math.sqrt(n) <= half_width:
            return n
    return None


def separating_runs(a: tuple[float, float], b: tuple[float, float], runs: int) -> int | None:
    """The runs at which two bootstrap intervals over `runs` runs would stop overlapping, if each
    narrows as 1/sqrt(runs) about its centre: their half-widths summed fall below the gap between
    the centres. None where the centres agree (no number of runs separates them)."""
    gap = abs((a[0] + a[1]) / 2 - (b[0] + b[1]) / 2)
    half = (a[1] - a[0]) / 2 + (b[1] - b[0]) / 2
    if gap <= 1e-12:
        return None
    return max(runs + 1, math.ceil(runs * (half / gap) ** 2))


def _units(ci: Interval) -> str:
    return "base models" if ci.unit == "base models" else "seeds a variant"


def seeds_line(ci: Interval | None, half_width: float = HALF_WIDTH) -> str:
    """Why an interval (or its absence) decides nothing, and the seeds that would."""
    if ci is None:
        return ("why: no interval (one run a variant, or runs that agree to within rounding); to decide: "
                "3 seeds a variant as a pilot, then the seeds this line names")
    half, units = (ci.high - ci.low) / 2, _units(ci)
    n = seeds_needed(ci, half_width)
    need = (f"{n} {units} for ±{100 * half_width:.1f} pts" if n is not None
            else f"more than {MAX_SEEDS} {units} for ±{100 * half_width:.1f} pts")
    if n is not None and n <= (ci.per_variant or 0):
        need = (f"its {ci.per_variant} {units} already give ±{100 * half_width:.1f} pts or better: the difference "
                "is smaller than that")
    return f"why: ±{100 * half:.1f} pts at {ci.per_variant} {units} covers 0; to decide: {need}"


def _span_ends(points: Sequence[RunPoint]) -> tuple[tuple[float, float], tuple[float, float]]:
    """(mean gain, its standard error) of the lowest- and the highest-gain variant: the ends of
    the gain range a paradigm's variants span, which its frontier covers (`frontier.matched_gain`)."""
    groups: dict[str, list[float]] = {}
    for p in points:
        groups.setdefault(p.variant, []).append(p.gain)

    def end(g: list[float]) -> tuple[float, float]:
        return statistics.fmean(g), (statistics.stdev(g) / math.sqrt(len(g)) if len(g) > 1 else 0.0)

    by_gain = sorted(groups.values(), key=statistics.fmean)
    return end(by_gain[0]), end(by_gain[-1])


def _beyond(mean: float, se: float, up: bool) -> float:
    margin = max(2 * se, 0.005)  # two standard errors of that variant's mean gain (at least half a point)
    return mean + margin if up else mean - margin


def gains_line(a: Sequence[RunPoint], b: Sequence[RunPoint], pa: str, pb: str, minimize: bool,
               reached: float | None) -> str:
    """Why two frontiers give no estimable comparison, and the variants that would."""
    (a_lo, a_lo_se), (a_hi, a_hi_se) = _span_ends(a)
    (b_lo, b_lo_se), (b_hi, b_hi_se) = _span_ends(b)
    if a_hi < b_lo or b_hi < a_lo:  # no overlap at all
        low, high = (pa, pb) if a_hi < b_lo else (pb, pa)
        top, bottom = (a_hi, b_lo) if a_hi < b_lo else (b_hi, a_lo)
        return (f"why: {low} gains at most {100 * top:+.1f} pts, {high} at least {100 * bottom:+.1f}; to decide: a "
                f"variant of {low} gaining {100 * bottom:+.1f} pts or more, or one of {high} gaining "
                f"{100 * top:+.1f} or less (cpt-bench-calibrate places both)")
    top_side, top, top_se = (pa, a_hi, a_hi_se) if a_hi <= b_hi else (pb, b_hi, b_hi_se)
    bottom_side, bottom, bottom_se = (pa, a_lo, a_lo_se) if a_lo >= b_lo else (pb, b_lo, b_lo_se)
    share = "" if reached is None else (f"{100 * reached:.0f} % of resamples reach a common gain "
                                        f"({100 * REACH:.1f} % needed): ")
    up, down = _beyond(top, top_se, True), _beyond(bottom, bottom_se, False)
    if top_side == bottom_side:  # one frontier lies inside the other: its own ends bound the overlap
        return (f"why: {share}the overlap, {100 * bottom:+.1f} to {100 * top:+.1f} pts, is all of {top_side}'s "
                f"range (its lowest variant ± {100 * bottom_se:.1f} SE, its highest ± {100 * top_se:.1f}); to "
                f"decide: variants of {top_side} gaining {100 * up:+.1f} pts or more and {100 * down:+.1f} or less "
                "(cpt-bench-calibrate places targets beyond both ends)")
    return (f"why: {share}the overlap, {100 * bottom:+.1f} to {100 * top:+.1f} pts, ends on {bottom_side}'s "
            f"lowest variant (± {100 * bottom_se:.1f} SE) and {top_side}'s highest (± {100 * top_se:.1f}); to "
            f"decide: a variant of {top_side} gaining {100 * up:+.1f} pts or more and one of {bottom_side} gaining "
            f"{100 * down:+.1f} or less (cpt-bench-calibrate places targets beyond both ends)")


def row_line(cmp: MatchedComparison, k: int, a: Sequence[RunPoint], b: Sequence[RunPoint], pa: str, pb: str,
             minimize: bool, half_width: float = HALF_WIDTH) -> str:
    """The decide-line of one gain's row of a matched-gain table; "" where it is decided. A gain
    that too few resamples reach needs a variant of each side that misses it, beyond the
    frontier's end nearest that gain by two standard errors of its mean gain."""
    r = cmp.rows[k]
    if r.estimable:
        return seeds_line(r.ci, half_width) if r.ci is None or r.ci.covers(0.0) else ""
    why, need = [], []
    for name, points, share in ((pa, a, r.reached_a), (pb, b, r.reached_b)):
        if share >= REACH:
            continue
        (lo, lo_se), (hi, hi_se) = _span_ends(points)
        up = abs(r.gain - hi) <= abs(r.gain - lo)
        end, se = (hi, hi_se) if up else (lo, lo_se)
        target = _beyond(max(end, r.gain) if up else min(end, r.gain), se, up)
        why.append(f"{name}'s frontier reaches it in {100 * share:.0f} % of resamples")
        need.append(f"a variant of {name} gaining {100 * target:+.1f} pts or {'more' if up else 'less'}")
    if not why:  # each side alone reaches it often enough, both together too rarely
        return (f"why: both frontiers reach it together in {100 * r.reached:.0f} % of resamples; to decide: "
                "variants of both beyond it")
    return f"why: {' and '.join(why)}; to decide: {' and '.join(need)}"


def comparison_line(a: Sequence[RunPoint], b: Sequence[RunPoint], pa: str, pb: str, minimize: bool,
                    half_width: float = HALF_WIDTH) -> str:
    """The decide-line of a whole matched-gain comparison (one base model, or the mean over base
    models); "" where its interval excludes 0."""
    if len({p.cluster for p in (*a, *b)}) > 1:
        res = matched_gain_across_bases(a, b, minimize_y=minimize)
        if res is None or res.mean_diff is None:
            base = next(iter(sorted({p.cluster for p in a}, key=repr)))
            return "on no base model is it estimable; on " + str(base) + ", " + comparison_line(
                [p for p in a if p.cluster == base], [p for p in b if p.cluster == base], pa, pb, minimize,
                half_width)
        return seeds_line(res.mean_ci, half_width) if res.mean_ci is None or res.mean_ci.covers(0.0) else ""
    cmp = matched_gain_ci(a, b, minimize_y=minimize)
    if cmp is None:
        return gains_line(a, b, pa, pb, minimize, None)
    if not cmp.estimable:
        return gains_line(a, b, pa, pb, minimize, cmp.best_reach)
    return seeds_line(cmp.mean_ci, half_width) if cmp.mean_ci is None or cmp.mean_ci.covers(0.0) else ""
