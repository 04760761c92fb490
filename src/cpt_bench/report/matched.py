"""The report's matched-gain section: each pair of paradigms compared at equal gain on their
frontiers, with bootstrap intervals (stats.py), per base model where there are several, and
what would decide each comparison left open (decide.py)."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence

from cpt_bench.report.frontier import MATCHED_POINTS, pareto_frontier
from cpt_bench.report.runs import BASE_KEY, RunRecord
from cpt_bench.report.stats import (
    CONFIDENCE,
    MATCHED_RESAMPLES,
    REACH,
    MatchedComparison,
    Nearest,
    RunPoint,
    matched_gain_across_bases,
    matched_gain_ci,
    nearest_variants,
    variant_means,
)
from cpt_bench.report.summary import run_points
from cpt_bench.report.text import fmt_ci, not_estimable, pts, table, verdict


def matched_gain_table(cmp: MatchedComparison, pa: str, pb: str, what: str, minimize: bool) -> str:
    rows = [[pts(r.gain), pts(r.y_a), pts(r.y_b), pts(r.diff), fmt_ci(r.ci), f"{100 * r.reached:.0f} %",
             verdict(r.ci, pa, pb, minimize) if r.estimable else not_estimable(r.reached)] for r in cmp.rows]
    if cmp.estimable:
        rows.append([f"mean over the gains {100 * REACH:.1f} % of resamples reach", "", "", pts(cmp.mean_diff),
                     fmt_ci(cmp.mean_ci), "", verdict(cmp.mean_ci, pa, pb, minimize)])
    else:
        rows.append(["mean", "", "", "", "", "", not_estimable(cmp.best_reach)])
    return table(["gain (pts)", f"{what} ({pa})", f"{what} ({pb})", f"difference ({pa} − {pb})",
                   f"{100 * CONFIDENCE:.0f} % CI", "resamples reaching it", "verdict"], rows)


def nearest_line(near: Nearest | None, pa: str, pb: str, what: str, minimize: bool) -> str:
    """The direct comparison beside the frontiers: the two variants nearest in gain."""
    if near is None:
        return ""
    return (f"Directly, the variants nearest in gain ({pa} `{near.variant_a}` at {pts(near.gain_a)}, {pb} "
            f"`{near.variant_b}` at {pts(near.gain_b)} pts of gain): {what} difference {pts(near.diff)} "
            f"{fmt_ci(near.ci) or '(no interval)'} (Welch's t over their runs): "
            f"{verdict(near.ci, pa, pb, minimize)}.")


def no_overlap_line(a: Sequence[RunPoint], b: Sequence[RunPoint], pa: str, pb: str, minimize: bool) -> str:
    """Why there is no matched-gain comparison: the gains each frontier spans (a dominated variant,
    one that another beats on gain and on the outcome, is not on its paradigm's frontier)."""
    spans = []
    for name, points in ((pa, a), (pb, b)):
        means = variant_means(points)
        front = [means[i][0] for i in pareto_frontier(means, minimize)]
        span = pts(front[0]) if len(front) == 1 else f"{pts(min(front))} to {pts(max(front))}"
        spans.append(f"{name}: {span}, {len(front)} of {len(means)} variant{'s' if len(means) > 1 else ''} on it")
    return ("The paradigms' frontiers do not overlap in gain (" + "; ".join(spans)
            + "), so there is no matched-gain comparison.")


def across_bases_table(a: Sequence[RunPoint], b: Sequence[RunPoint], pa: str, pb: str, what: str,
                       minimize: bool) -> str:
    """One row per base model (its own frontiers, intervals over its seeds) and their mean."""
    res = matched_gain_across_bases(a, b, minimize_y=minimize)
    if res is None:
        return "On no base model do the paradigms' gain ranges overlap, so there is no matched-gain comparison."
    rows = []
    for base, cmp in res.per_base.items():
        n = f"{sum(p.cluster == base for p in a)} + {sum(p.cluster == base for p in b)}"
        if cmp is None:
            rows.append([base, n, "no overlap", "", "", "", ""])
            continue
        if not cmp.estimable:
            rows.append([base, n, f"{pts(cmp.rows[0].gain)} to {pts(cmp.rows[-1].gain)}", "", "", "",
                         not_estimable(cmp.best_reach)])
            continue
        kept = [r for r in cmp.rows if r.estimable]
        ya, yb = (statistics.fmean(getattr(r, y) for r in kept) for y in ("y_a", "y_b"))
        rows.append([base, n, f"{pts(kept[0].gain)} to {pts(kept[-1].gain)}", f"{pts(ya)} / {pts(yb)}",
                     pts(cmp.mean_diff), fmt_ci(cmp.mean_ci), verdict(cmp.mean_ci, pa, pb, minimize)])
    counted = len(res.estimable_bases)
    rows.append([f"mean over {counted} of {len(res.per_base)} base models", f"{res.runs[0]} + {res.runs[1]}", "", "",
                 pts(res.mean_diff) if res.mean_diff is not None else "",
                 fmt_ci(res.mean_ci), verdict(res.mean_ci, pa, pb, minimize) if counted else "not estimable"])
    return "\n".join([
        f"Each base model (`{BASE_KEY}`) on its own frontiers, at the gains across the range both paradigms "
        f"reach on it that {100 * REACH:.1f} % of its resamples reach; the difference is the mean over those gains, "
        "its interval from a bootstrap over that base's seeds (as above). The last row averages the base models "
        "where that is estimable; its interval is the Student-t interval over their differences, n = those base "
        "models.", "",
        table(["base model", f"runs ({pa} + {pb})", "matched gains (pts)", f"mean {what} ({pa} / {pb})",
                f"difference ({pa} − {pb})", f"{100 * CONFIDENCE:.0f} % CI", "verdict"], rows)])


def matched_gain_section(runs: Sequence[RunRecord]) -> str:
    parts = ["## Matched gain", "",
             "At equal learning rate GRPO often learns less and so forgets less, so the paradigms are also "
             "compared at equal gain: each paradigm's Pareto frontier over its variants' means (the variants not "
             "dominated in higher gain and lower forgetting, or higher gain and higher general change) is linearly "
             f"interpolated at {MATCHED_POINTS} evenly spaced gains inside the gain range both paradigms reach. "
             f"The {100 * CONFIDENCE:.0f} % interval of each difference comes from a bootstrap over runs "
             f"({MATCHED_RESAMPLES} resamples, each variant's seeds redrawn and both frontiers refitted on each; a "
             "frontier that does not reach a gain gives its nearest end, so no resample is dropped): the difference "
             "± Student's t on the seeds' degrees of freedom (runs − 1, summed over the variants of both paradigms "
             "around the compared gains) × the resamples' standard deviation × √(n / (n − 1)), n the fewest runs "
             "of those variants (the resamples' own percentiles covered a known gap only about 90 % of the time "
             "at 3 seeds a variant; this interval about 95 %, in simulated sweeps). A gain is "
             f"compared only where at least {100 * REACH:.1f} % of the resamples reach it: elsewhere the comparison "
             "is not estimable and the share that reaches it is shown. Where an interval covers 0 the paradigms "
             "are not distinguishable, which is not the same as equal. "
             "Joint-schedule runs are left out. Percentage points."]
    for key, what, minimize in (("forgetting", "forgetting", True), ("general_delta", "general change", False)):
        series = run_points(runs, key)
        if len(series) < 2:
            parts += ["", f"Fewer than two paradigms have runs with both gain and {what} "
                          f"({', '.join(series) or 'none'}): nothing to compare."]
            continue
        for pa, pb in itertools.combinations(series, 2):
            parts += ["", f"### {what}: {pa} vs {pb}", ""]
            if len({p.cluster for p in (*series[pa], *series[pb])}) > 1:
                parts.append(across_bases_table(series[pa], series[pb], pa, pb, what, minimize))
                continue
            cmp = matched_gain_ci(series[pa], series[pb], minimize_y=minimize)
            if cmp is None:
                parts.append(no_overlap_line(series[pa], series[pb], pa, pb, minimize))
                if line := nearest_line(nearest_variants(series[pa], series[pb]), pa, pb, what, minimize):
                    parts.append("\n" + line)
                continue
            parts.append(f"{pa}: {cmp.runs[0]} runs in {cmp.variants[0]} variants; {pb}: {cmp.runs[1]} runs in "
                         f"{cmp.variants[1]} variants; {cmp.clusters} base model{'s' if cmp.clusters > 1 else ''}.\n")
            parts.append(matched_gain_table(cmp, pa, pb, what, minimize))
            if line := nearest_line(cmp.nearest, pa, pb, what, minimize):
                parts.append("\n" + line)
            better = f"{pa} forgets more" if minimize else f"{pa} keeps more general ability"
            parts.append(f"\nPositive difference = {better} at the same gain.")
    return "\n".join(parts)
