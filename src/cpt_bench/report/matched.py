"""The report's matched-gain section: each pair of paradigms compared at equal gain on their
frontiers, with bootstrap intervals (stats.py), per base model where there are several, and
what would decide each comparison left open (decide.py)."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence

from cpt_bench.report.decide import DECIDE_NOTE, HALF_WIDTH, comparison_line, gains_line, row_line, seeds_line
from cpt_bench.report.frontier import MATCHED_POINTS
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


def _open(ci) -> bool:
    """Whether an interval leaves its comparison open: none, or one that covers 0."""
    return ci is None or ci.covers(0.0)


def matched_gain_table(cmp: MatchedComparison, a: Sequence[RunPoint], b: Sequence[RunPoint], pa: str, pb: str,
                       what: str, minimize: bool, half_width: float = HALF_WIDTH) -> str:
    rows = [[pts(r.gain), pts(r.y_a), pts(r.y_b), pts(r.diff), fmt_ci(r.ci), f"{100 * r.reached:.0f} %",
             verdict(r.ci, pa, pb, minimize) if r.estimable else not_estimable(r.reached),
             row_line(cmp, k, a, b, pa, pb, minimize, half_width)] for k, r in enumerate(cmp.rows)]
    if cmp.estimable:
        rows.append([f"mean over the gains {100 * REACH:.1f} % of resamples reach", "", "", pts(cmp.mean_diff),
                     fmt_ci(cmp.mean_ci), "", verdict(cmp.mean_ci, pa, pb, minimize),
                     seeds_line(cmp.mean_ci, half_width) if _open(cmp.mean_ci) else ""])
    else:
        rows.append(["mean", "", "", "", "", "", not_estimable(cmp.best_reach),
                     gains_line(a, b, pa, pb, minimize, cmp.best_reach)])
    return table(["gain (pts)", f"{what} ({pa})", f"{what} ({pb})", f"difference ({pa} − {pb})",
                  f"{100 * CONFIDENCE:.0f} % CI", "resamples reaching it", "verdict", "what would decide it"], rows)


def nearest_line(near: Nearest | None, pa: str, pb: str, what: str, minimize: bool,
                 half_width: float = HALF_WIDTH) -> str:
    """The direct comparison beside the frontiers: the two variants nearest in gain."""
    if near is None:
        return ""
    decide = f" ({seeds_line(near.ci, half_width)})" if _open(near.ci) else ""
    return (f"Directly, the variants nearest in gain ({pa} `{near.variant_a}` at {pts(near.gain_a)}, {pb} "
            f"`{near.variant_b}` at {pts(near.gain_b)} pts of gain): {what} difference {pts(near.diff)} "
            f"{fmt_ci(near.ci) or '(no interval)'} (Welch's t over their runs): "
            f"{verdict(near.ci, pa, pb, minimize)}{decide}.")


def no_overlap_line(a: Sequence[RunPoint], b: Sequence[RunPoint], pa: str, pb: str, minimize: bool) -> str:
    """Why there is no matched-gain comparison: the gains each paradigm's variants span, and the
    variants that would make one."""
    spans = []
    for name, points in ((pa, a), (pb, b)):
        gains = sorted(g for g, _ in variant_means(points))
        span = pts(gains[0]) if len(gains) == 1 else f"{pts(gains[0])} to {pts(gains[-1])}"
        spans.append(f"{name}: {span} over {len(gains)} variant{'s' if len(gains) > 1 else ''}")
    return ("The paradigms' gain ranges do not overlap (" + "; ".join(spans)
            + "), so there is no matched-gain comparison. What would decide it: "
            + gains_line(a, b, pa, pb, minimize, None) + ".")


def across_bases_table(a: Sequence[RunPoint], b: Sequence[RunPoint], pa: str, pb: str, what: str,
                       minimize: bool, half_width: float = HALF_WIDTH) -> str:
    """One row per base model (its own frontiers, intervals over its seeds) and their mean."""
    res = matched_gain_across_bases(a, b, minimize_y=minimize)
    if res is None:
        return ("On no base model do the paradigms' gain ranges overlap, so there is no matched-gain comparison. "
                "What would decide it: " + comparison_line(a, b, pa, pb, minimize, half_width) + ".")
    rows = []
    for base, cmp in res.per_base.items():
        n = f"{sum(p.cluster == base for p in a)} + {sum(p.cluster == base for p in b)}"
        ab = [p for p in a if p.cluster == base], [p for p in b if p.cluster == base]
        if cmp is None:
            rows.append([base, n, "no overlap", "", "", "", "", gains_line(*ab, pa, pb, minimize, None)])
            continue
        if not cmp.estimable:
            rows.append([base, n, f"{pts(cmp.rows[0].gain)} to {pts(cmp.rows[-1].gain)}", "", "", "",
                         not_estimable(cmp.best_reach), gains_line(*ab, pa, pb, minimize, cmp.best_reach)])
            continue
        kept = [r for r in cmp.rows if r.estimable]
        ya, yb = (statistics.fmean(getattr(r, y) for r in kept) for y in ("y_a", "y_b"))
        rows.append([base, n, f"{pts(kept[0].gain)} to {pts(kept[-1].gain)}", f"{pts(ya)} / {pts(yb)}",
                     pts(cmp.mean_diff), fmt_ci(cmp.mean_ci), verdict(cmp.mean_ci, pa, pb, minimize),
                     seeds_line(cmp.mean_ci, half_width) if _open(cmp.mean_ci) else ""])
    counted = len(res.estimable_bases)
    rows.append([f"mean over {counted} of {len(res.per_base)} base models", f"{res.runs[0]} + {res.runs[1]}", "", "",
                 pts(res.mean_diff) if res.mean_diff is not None else "",
                 fmt_ci(res.mean_ci), verdict(res.mean_ci, pa, pb, minimize) if counted else "not estimable",
                 ("" if not _open(res.mean_ci) else seeds_line(res.mean_ci, half_width) if counted > 1
                  else "why: fewer than two base models where it is estimable; to decide: their rows")])
    return "\n".join([
        f"Each base model (`{BASE_KEY}`) on its own frontiers, at the gains across the range both paradigms "
        f"reach on it that {100 * REACH:.1f} % of its resamples reach; the difference is the mean over those gains, "
        "its interval from a bootstrap over that base's seeds (as above). The last row averages the base models "
        "where that is estimable; its interval is the Student-t interval over their differences, n = those base "
        "models.", "",
        table(["base model", f"runs ({pa} + {pb})", "matched gains (pts)", f"mean {what} ({pa} / {pb})",
               f"difference ({pa} − {pb})", f"{100 * CONFIDENCE:.0f} % CI", "verdict", "what would decide it"], rows)])


def matched_gain_section(runs: Sequence[RunRecord], half_width: float = HALF_WIDTH) -> str:
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
             f"compared only where at least {100 * REACH:.1f} % of the resamples reach it (a resample reaches the "
             "gains its variants span; below its frontier's lowest point, that point stands for the paradigm, "
             "which reaches the gain doing at least as well): elsewhere the comparison "
             "is not estimable and the share that reaches it is shown. Where an interval covers 0 the paradigms "
             "are not distinguishable, which is not the same as equal. " + DECIDE_NOTE.format(h=100 * half_width)
             + " Joint-schedule runs are left out. Percentage points."]
    for key, what, minimize in (("forgetting", "forgetting", True), ("general_delta", "general change", False)):
        series = run_points(runs, key)
        if len(series) < 2:
            parts += ["", f"Fewer than two paradigms have runs with both gain and {what} "
                          f"({', '.join(series) or 'none'}): nothing to compare."]
            continue
        for pa, pb in itertools.combinations(series, 2):
            parts += ["", f"### {what}: {pa} vs {pb}", ""]
            if len({p.cluster for p in (*series[pa], *series[pb])}) > 1:
                parts.append(across_bases_table(series[pa], series[pb], pa, pb, what, minimize, half_width))
                continue
            cmp = matched_gain_ci(series[pa], series[pb], minimize_y=minimize)
            if cmp is None:
                parts.append(no_overlap_line(series[pa], series[pb], pa, pb, minimize))
                if line := nearest_line(nearest_variants(series[pa], series[pb]), pa, pb, what, minimize, half_width):
                    parts.append("\n" + line)
                continue
            parts.append(f"{pa}: {cmp.runs[0]} runs in {cmp.variants[0]} variants; {pb}: {cmp.runs[1]} runs in "
                         f"{cmp.variants[1]} variants; {cmp.clusters} base model{'s' if cmp.clusters > 1 else ''}.\n")
            parts.append(matched_gain_table(cmp, series[pa], series[pb], pa, pb, what, minimize, half_width))
            if line := nearest_line(cmp.nearest, pa, pb, what, minimize, half_width):
                parts.append("\n" + line)
            better = f"{pa} forgets more" if minimize else f"{pa} keeps more general ability"
            parts.append(f"\nPositive difference = {better} at the same gain.")
    return "\n".join(parts)
