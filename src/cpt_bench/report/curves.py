"""Inside each stage (runs with `eval.inner_points`): plasticity against stability along training,
and the paradigms compared along their first stage's curves at matched trained-task gain.

Each run's curves.csv is cut into one segment per trained stage, from its start (the previous
stage's end, or the base) to its end, each point seen from that stage: the trained task's
accuracy, the mean over the tasks trained before it, the general suite's mean
(`outputs.curves.Balance`). The figure draws them against the optimizer step through the
sequence.

Only the first stage gives a sound comparison between variants: every run starts it from the
same base, so a point's gain on the trained task and its general change are measured from one
shared origin (later stages start from models the variants themselves made). There, RL's
Razor's protocol: each run contributes many points (its inner points and its end), and the
families are compared at matched trained-task gain. A run's points are correlated (one
trajectory), so the unit of every interval is the run: at each compared gain, each run that
reaches it gives one value (its general change where its curve first crosses that gain,
interpolated between the two points around it), and the interval is Welch's t over those
per-run values (stats.diff_ci); the headline averages each run's values over the gains every
run reaches, again one value a run. Pure functions of plain values.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

from cpt_bench.outputs.curves import CURVES_CSV, Balance, CurveRow, balance, read_curves_csv
from cpt_bench.report.decide import HALF_WIDTH, seeds_line
from cpt_bench.report.frontier import MATCHED_POINTS
from cpt_bench.report.runs import RunRecord, base_model, paradigm_key
from cpt_bench.report.stats import CONFIDENCE, Interval, diff_ci
from cpt_bench.report.text import fmt_ci, pts, table, verdict

MIN_RUNS = 2  # runs a side that must reach a gain for it to be compared (Welch's t needs two)
MAX_PAIRS = 6  # family pairs compared in the report


def run_curves(run: RunRecord) -> list[CurveRow]:
    """A run's curves.csv rows (none: a run without inner points)."""
    path = run.path / CURVES_CSV
    return read_curves_csv(path) if path.exists() else []


def segments(rows: Sequence[CurveRow], order: Sequence[str], general: Sequence[str]) -> dict[int, list[Balance]]:
    """Each trained stage's points, from its start (the previous stage's last point) to its end,
    every point seen from that stage (its trained task, the tasks before it)."""
    points: dict[tuple[int, int], list[CurveRow]] = {}
    for r in rows:
        points.setdefault((r.stage, r.step), []).append(r)
    keys = sorted(points)
    out = {}
    for stage in sorted({s for s, _ in keys if s > 0}):
        before = [k for k in keys if k[0] == stage - 1]
        inside = [k for k in keys if k[0] == stage]
        if not before or not inside:
            continue
        task = points[inside[0]][0].trained_task
        start = [replace(r, stage=stage, trained_task=task, step=0) for r in points[before[-1]]]
        out[stage] = balance([*start, *(r for k in inside for r in points[k])], order, general)
    return out


@dataclass(frozen=True)
class RunCurve:
    """One run's first stage as (trained-task gain, general change) points, in step order."""

    family: str
    run: str
    points: list[tuple[float, float]]

    @property
    def reach(self) -> float:
        return max(g for g, _ in self.points)

    def at(self, gain: float) -> float | None:
        """The general change where the curve first reaches `gain` (linear between the two points
        around it); None if it never does."""
        for (g0, y0), (g1, y1) in itertools.pairwise(self.points):
            if g0 <= gain <= g1 and g1 > g0:
                return y0 + (y1 - y0) * (gain - g0) / (g1 - g0)
            if g0 == gain:
                return y0
        return self.points[-1][1] if self.points and self.points[-1][0] == gain else None


def first_stage_curve(run: RunRecord, family: str) -> RunCurve | None:
    """A run's first-stage curve (gain and general change from the base), or None without one
    (no curves.csv, no inner point, no general suite)."""
    seg = segments(run_curves(run), run.order, run.general).get(1, [])
    if len(seg) < 3 or any(p.trained is None or p.general is None for p in seg):
        return None
    t0, g0 = seg[0].trained, seg[0].general
    return RunCurve(family, str(run.path), [(p.trained - t0, p.general - g0) for p in seg])


@dataclass(frozen=True)
class CurveRowCmp:
    gain: float
    runs: tuple[int, int]  # runs that reach it, a side
    total: tuple[int, int]  # runs a side
    mean_a: float | None
    mean_b: float | None
    ci: Interval | None  # of mean_a - mean_b, over runs (Welch)

    @property
    def compared(self) -> bool:
        return min(self.runs) >= MIN_RUNS


@dataclass(frozen=True)
class CurveComparison:
    family_a: str
    family_b: str
    rows: list[CurveRowCmp]
    common: tuple[float, float] | None  # the gains every run of both reaches (low, high)
    diff: float | None  # each run's mean general change over `common`, mean a - mean b
    ci: Interval | None
    points: int  # curve points per run, at most
    runs: tuple[int, int]  # runs a side


def compare_curves(a: Sequence[RunCurve], b: Sequence[RunCurve], n: int = MATCHED_POINTS) -> CurveComparison:
    """Family a minus family b in general change at matched first-stage gain (see the module's
    docstring): `n` gains evenly over (0, the highest gain any run reaches]."""
    top = max((c.reach for c in (*a, *b)), default=0.0)
    gains = [top * (k + 1) / n for k in range(n)] if top > 0 else []
    rows = []
    for g in gains:
        va, vb = ([v for c in side if (v := c.at(g)) is not None] for side in (a, b))
        rows.append(CurveRowCmp(g, (len(va), len(vb)), (len(a), len(b)), statistics.fmean(va) if va else None,
                                statistics.fmean(vb) if vb else None,
                                diff_ci(va, vb) if min(len(va), len(vb)) >= MIN_RUNS else None))
    common_top = min((c.reach for c in (*a, *b)), default=0.0)
    shared = [g for g in gains if g <= common_top]
    diff = ci = None
    if shared and min(len(a), len(b)) >= 1:
        ya, yb = ([statistics.fmean(c.at(g) for g in shared) for c in side] for side in (a, b))
        diff, ci = statistics.fmean(ya) - statistics.fmean(yb), diff_ci(ya, yb)
    return CurveComparison(a[0].family if a else "", b[0].family if b else "", rows,
                           (shared[0], shared[-1]) if shared else None, diff, ci,
                           max((len(c.points) for c in (*a, *b)), default=0), (len(a), len(b)))


def first_stage_comparisons(runs: Sequence[RunRecord]) -> list[CurveComparison]:
    """Every pair of families (at most MAX_PAIRS) along their first-stage curves, on the base model
    most of the curves start from (a stage-1 comparison needs one shared origin)."""
    curves = [(run, c) for run in runs if (c := first_stage_curve(run, run.family)) is not None]
    if not curves:
        return []
    bases = [repr(base_model(run.config)) for run, _ in curves]
    shared = max(dict.fromkeys(bases), key=bases.count)
    by_family: dict[str, list[RunCurve]] = {}
    for (_, c), b in zip(curves, bases):
        if b == shared:
            by_family.setdefault(c.family, []).append(c)
    families = sorted(by_family, key=paradigm_key)
    return [compare_curves(by_family[x], by_family[y]) for x, y in itertools.combinations(families, 2)][:MAX_PAIRS]


def within_stage_variants(runs: Sequence[RunRecord]) -> list[tuple[str, list[dict[int, list[Balance]]]]]:
    """(variant, each of its runs' `segments`) for the variants with curves, for the figure."""
    out: dict[str, list[dict[int, list[Balance]]]] = {}
    for run in runs:
        if segs := segments(run_curves(run), run.order, run.general):
            out.setdefault(run.variant, []).append(segs)
    return list(out.items())


def _pts(x: float | None) -> str:
    return "–" if x is None else pts(x)


def _runs(n: int) -> str:
    return f"{n} run{'s' * (n != 1)}"


def reach_line(r: CurveRowCmp) -> str:
    """Why a gain is not compared, and what would let it be: runs of the short side that reach it."""
    short = [f"{side} {k} of {n}" for side, k, n in zip("AB", r.runs, r.total) if k < MIN_RUNS]
    return (f"why: runs whose first stage reaches it: {', '.join(short)} ({MIN_RUNS} a side needed); to decide: "
            f"runs of {' and '.join(x.split()[0] for x in short)} that reach it (a higher learning rate or a "
            "longer first stage; cpt-bench-calibrate places targets)")


def comparison_table(cmp: CurveComparison, half_width: float = HALF_WIDTH) -> str:
    a, b = cmp.family_a, cmp.family_b
    lines = [f"### general change along the first stage: {a} vs {b}", "",
             f"A = {a} ({_runs(cmp.runs[0])}), B = {b} ({_runs(cmp.runs[1])}), up to {cmp.points} curve points a "
             "run (the base, the inner points, the end); intervals over runs (Welch's t), never over a run's points."]
    if not cmp.rows:
        return "\n".join([*lines, "", "No run's first stage gains on its trained task: nothing to match."])
    rows = []
    for r in cmp.rows:
        diff = r.mean_a - r.mean_b if r.mean_a is not None and r.mean_b is not None else None
        if r.compared:
            decide = seeds_line(r.ci, half_width) if r.ci is None or r.ci.covers(0.0) else ""
            rows.append([pts(r.gain), f"{r.runs[0]}, {r.runs[1]}", _pts(r.mean_a), _pts(r.mean_b), _pts(diff),
                         fmt_ci(r.ci), verdict(r.ci, "A", "B", False), decide])
        else:
            rows.append([pts(r.gain), f"{r.runs[0]}, {r.runs[1]}", _pts(r.mean_a), _pts(r.mean_b), _pts(diff), "",
                         "not compared", reach_line(r)])
    if cmp.common is None:
        rows.append(["mean over the gains every run reaches", "", "", "", "", "", "not compared",
                     "why: a run's first stage gains nothing; to decide: runs that gain"])
    else:
        decide = seeds_line(cmp.ci, half_width) if cmp.ci is None or cmp.ci.covers(0.0) else ""
        rows.append([f"mean over {pts(cmp.common[0])} to {pts(cmp.common[1])} (every run reaches them)",
                     f"{cmp.runs[0]}, {cmp.runs[1]}", "", "", _pts(cmp.diff), fmt_ci(cmp.ci),
                     verdict(cmp.ci, "A", "B", False), decide])
    return "\n".join([*lines, "", table(["trained-task gain (pts)", "runs reaching it (A, B)", "general change (A)",
                                          "general change (B)", "A − B", f"{100 * CONFIDENCE:.0f} % CI", "verdict",
                                          "what would decide it"], rows)])


CURVES_NOTE = ("Each run with `eval.inner_points` is evaluated inside every stage too. The figure "
               "`report_within_stage.png` draws, per variant and run, the trained task's accuracy "
               "(plasticity) against the earlier tasks' mean and the general suite's (stability), "
               "x = optimizer steps through the sequence, dotted lines at the stage ends. Only the first "
               "stage, which every run starts from the same base, is compared across families: the general "
               "suite's change at matched trained-task gain, many points a run, the run as the unit of every "
               "interval (points of one run are correlated).")


def curves_section(runs: Sequence[RunRecord], half_width: float = HALF_WIDTH) -> str:
    """The report's section on curves inside stages ('' when no run has any)."""
    if not any((run.path / CURVES_CSV).exists() for run in runs if run.path):
        return ""
    parts = ["## Inside each stage", "", CURVES_NOTE]
    comparisons = first_stage_comparisons(runs)
    if not comparisons:
        parts += ["", "No two families with first-stage curves (and a general suite) to compare."]
    parts += [x for cmp in comparisons for x in ("", comparison_table(cmp, half_width))]
    return "\n".join(parts)
