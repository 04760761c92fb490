"""The report as text: the variant table, the matched-gain section, report.md and report.csv rows."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from pathlib import Path

from cpt_bench.metrics import HEADLINE_METRICS, SIGN_NOTE
from cpt_bench.report.continual import cl_section
from cpt_bench.report.drift import (
    OUTCOMES,
    R2_RESAMPLES,
    SHORT,
    StagePoint,
    correlations,
    format_r2,
    pairs,
    predictor_verdicts,
    r2_table,
)
from cpt_bench.report.explain import explain_section
from cpt_bench.report.flips import FLIP_COLUMNS, FLIPS_NOTE, variant_flips
from cpt_bench.report.frontier import MATCHED_POINTS, pareto_frontier
from cpt_bench.report.runs import BASE_KEY, COMPUTE, RunRecord, base_model
from cpt_bench.report.stats import (
    CONFIDENCE,
    GAIN_SHARE,
    MATCHED_RESAMPLES,
    REACH,
    Interval,
    MatchedComparison,
    Nearest,
    RunPoint,
    group_diff_ci,
    matched_gain_across_bases,
    matched_gain_ci,
    mean_ci,
    nearest_variants,
    variant_means,
)
from cpt_bench.report.summary import (
    COMPUTE_AXES,
    VariantSummary,
    compute_series,
    gain_rule_choices,
    matched_compute,
    run_points,
)


def _pts(value: float, signed: bool = True, digits: int = 1) -> str:
    return f"{100 * value:+.{digits}f}" if signed else f"{100 * value:.{digits}f}"


def _ci(ci: Interval | None, signed: bool = True) -> str:
    """[low, high], with the number of base models when they, not runs, are its unit; with more
    decimals where one would print a narrow interval as [x, x], which reads as certainty."""
    if ci is None:
        return ""
    digits = 1
    while digits < 4 and _pts(ci.low, signed, digits) == _pts(ci.high, signed, digits):
        digits += 1
    unit = f" n = {ci.n} {ci.unit}" if ci.unit != "runs" else ""
    return f"[{_pts(ci.low, signed, digits)}, {_pts(ci.high, signed, digits)}]{unit}"


def _pct(mean: float | None, std: float | None, signed: bool, ci: Interval | None = None) -> str:
    if mean is None:
        return "n/a"
    shown = f"{_pts(mean, signed)} ± {'-' if std is None else f'{100 * std:.1f}'}"
    return f"{shown} {_ci(ci, signed)}" if ci is not None else shown


def _count(value: float | None) -> str:
    if value is None:
        return "n/a"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _cell(text) -> str:
    return str(text).replace("|", "\\|")


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


NOTE = ("Mean ± sample std over a variant's runs (its seeds, and base models where they vary), in percent "
        f"(accuracies) or percentage points, then the {100 * CONFIDENCE:.0f} % Student-t confidence interval of "
        "the mean in brackets, over the n runs of the n column; where the runs come from several base models, "
        "over the base models' means (the bracket then says how many). No interval: a single run, or runs "
        "that agree to within float rounding. "
        "`-` = a single run, n/a = undefined (e.g. BWT and forgetting of a joint run). "
        f"{SIGN_NOTE} Compute columns are means over the same runs.")


def _metric_cell(s: VariantSummary, key: str, signed: bool = True) -> str:
    return _pct(*s.stats[key][:2], signed=signed, ci=s.cis.get(key))


def variant_table(summaries: Sequence[VariantSummary]) -> str:
    header = ["variant", "n", "final avg acc (%)", "forgetting (pts)", "BWT (pts)", "plasticity (%)",
              "gain (pts)", "general change (pts)", "optimizer steps", "generated tokens", "wall time"]
    rows = []
    for s in summaries:
        n = f"{len(s.runs)}" + (" unfinished" if s.partial else "")
        if s.left_out:
            n += f" (+{len(s.left_out)} unfinished)"
        st = s.stats
        rows.append([
            s.label, n, _metric_cell(s, "final_avg_acc", signed=False), _metric_cell(s, "forgetting"),
            _metric_cell(s, "bwt"), _metric_cell(s, "plasticity", signed=False), _metric_cell(s, "gain"),
            _metric_cell(s, "general_delta"),
            _count(st["optimizer_steps"][0]), _count(st["generated_tokens"][0]), _duration(st["wall_seconds"][0]),
        ])
    return _table(header, rows)


def _relative(path: Path, base: Path | None) -> str:
    if base is not None:
        try:
            return path.relative_to(base.resolve()).as_posix() or "."
        except ValueError:
            pass
    return str(path)


def _verdict(ci: Interval | None, pa: str, pb: str, minimize: bool | None) -> str:
    """What an interval of (a − b) says; minimize: forgetting (True), general change (False), gain (None)."""
    if ci is None:
        return "no interval"
    if ci.covers(0.0):
        return "not distinguishable"
    if minimize is None:
        return f"{pa if ci.low > 0 else pb} gains more"
    worse_a = ci.low > 0 if minimize else ci.high < 0  # a forgets more / keeps less general ability
    return f"{pa if worse_a else pb} {'forgets more' if minimize else 'loses more general ability'}"


def _not_estimable(reached: float) -> str:
    return f"not estimable ({100 * reached:.0f} % of resamples reach a common gain)"


def matched_gain_table(cmp: MatchedComparison, pa: str, pb: str, what: str, minimize: bool) -> str:
    rows = [[_pts(r.gain), _pts(r.y_a), _pts(r.y_b), _pts(r.diff), _ci(r.ci), f"{100 * r.reached:.0f} %",
             _verdict(r.ci, pa, pb, minimize) if r.estimable else _not_estimable(r.reached)] for r in cmp.rows]
    if cmp.estimable:
        rows.append([f"mean over the gains {100 * REACH:.1f} % of resamples reach", "", "", _pts(cmp.mean_diff),
                     _ci(cmp.mean_ci), "", _verdict(cmp.mean_ci, pa, pb, minimize)])
    else:
        rows.append(["mean", "", "", "", "", "", _not_estimable(cmp.best_reach)])
    return _table(["gain (pts)", f"{what} ({pa})", f"{what} ({pb})", f"difference ({pa} − {pb})",
                   f"{100 * CONFIDENCE:.0f} % CI", "resamples reaching it", "verdict"], rows)


def nearest_line(near: Nearest | None, pa: str, pb: str, what: str, minimize: bool) -> str:
    """The direct comparison beside the frontiers: the two variants nearest in gain."""
    if near is None:
        return ""
    return (f"Directly, the variants nearest in gain ({pa} `{near.variant_a}` at {_pts(near.gain_a)}, {pb} "
            f"`{near.variant_b}` at {_pts(near.gain_b)} pts of gain): {what} difference {_pts(near.diff)} "
            f"{_ci(near.ci) or '(no interval)'} (Welch's t over their runs): "
            f"{_verdict(near.ci, pa, pb, minimize)}.")


def no_overlap_line(a: Sequence[RunPoint], b: Sequence[RunPoint], pa: str, pb: str, minimize: bool) -> str:
    """Why there is no matched-gain comparison: the gains each frontier spans (a dominated variant,
    one that another beats on gain and on the outcome, is not on its paradigm's frontier)."""
    spans = []
    for name, points in ((pa, a), (pb, b)):
        means = variant_means(points)
        front = [means[i][0] for i in pareto_frontier(means, minimize)]
        span = _pts(front[0]) if len(front) == 1 else f"{_pts(min(front))} to {_pts(max(front))}"
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
            rows.append([base, n, f"{_pts(cmp.rows[0].gain)} to {_pts(cmp.rows[-1].gain)}", "", "", "",
                         _not_estimable(cmp.best_reach)])
            continue
        kept = [r for r in cmp.rows if r.estimable]
        ya, yb = (statistics.fmean(getattr(r, y) for r in kept) for y in ("y_a", "y_b"))
        rows.append([base, n, f"{_pts(kept[0].gain)} to {_pts(kept[-1].gain)}", f"{_pts(ya)} / {_pts(yb)}",
                     _pts(cmp.mean_diff), _ci(cmp.mean_ci), _verdict(cmp.mean_ci, pa, pb, minimize)])
    counted = len(res.estimable_bases)
    rows.append([f"mean over {counted} of {len(res.per_base)} base models", f"{res.runs[0]} + {res.runs[1]}", "", "",
                 _pts(res.mean_diff) if res.mean_diff is not None else "",
                 _ci(res.mean_ci), _verdict(res.mean_ci, pa, pb, minimize) if counted else "not estimable"])
    return "\n".join([
        f"Each base model (`{BASE_KEY}`) on its own frontiers, at the gains across the range both paradigms "
        f"reach on it that {100 * REACH:.1f} % of its resamples reach; the difference is the mean over those gains, "
        "its interval from a bootstrap over that base's seeds (as above). The last row averages the base models "
        "where that is estimable; its interval is the Student-t interval over their differences, n = those base "
        "models.", "",
        _table(["base model", f"runs ({pa} + {pb})", "matched gains (pts)", f"mean {what} ({pa} / {pb})",
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


def gain_rule_section(runs: Sequence[RunRecord]) -> str:
    """The paradigms compared at the learning rates a gain-only rule picks (no forgetting consulted)."""
    choices, left_out = gain_rule_choices(runs)
    if len(choices) < 2:
        return ""
    rows = []
    for paradigm, (lr, members) in choices.items():
        cells = []
        for key in ("gain", "forgetting", "general_delta"):
            have = [r for r in members if r.metrics.get(key) is not None]
            values = [r.metrics[key] for r in have]
            ci = mean_ci(values, [base_model(r.config) for r in have])
            cells.append(f"{_pts(statistics.fmean(values))} {_ci(ci)}".strip() if values else "n/a")
        rows.append([paradigm, f"{lr:g}", len(members), *cells])
    parts = ["## At the learning rates a gain-only rule picks", "",
             f"Per paradigm, the smallest learning rate whose mean gain reaches {100 * GAIN_SHARE:.0f} % of the best "
             "mean gain on its grid (the rule of docs/hyperparameters.md; forgetting is never consulted). "
             f"Means over the runs at that rate with {100 * CONFIDENCE:.0f} % Student-t intervals; percentage points.",
             "", _table(["paradigm", "lr", "n", "gain", "forgetting", "general change"], rows),
             *(["", f"Left out (no rate of the grid gains on average): {', '.join(left_out)}."] if left_out else [])]
    for pa, pb in itertools.combinations(choices, 2):
        diff_rows = []
        for key, what, minimize in (("gain", "gain", None), ("forgetting", "forgetting", True),
                                    ("general_delta", "general change", False)):
            ra = [r for r in choices[pa][1] if r.metrics.get(key) is not None]
            rb = [r for r in choices[pb][1] if r.metrics.get(key) is not None]
            if not ra or not rb:
                continue
            a, b = [r.metrics[key] for r in ra], [r.metrics[key] for r in rb]
            ci = group_diff_ci(a, b, [base_model(r.config) for r in ra], [base_model(r.config) for r in rb])
            diff_rows.append([what, _pts(statistics.fmean(a) - statistics.fmean(b)), _ci(ci),
                              _verdict(ci, pa, pb, minimize)])
        parts += ["", f"Difference {pa} − {pb} (Welch's t-interval over runs; with several base models, the "
                  "t-interval over each base's own difference):", "",
                  _table(["outcome", "difference", f"{100 * CONFIDENCE:.0f} % CI", "verdict"], diff_rows)]
    return "\n".join(parts)


def harness_section(summaries: Sequence[VariantSummary]) -> str:
    """Each harness task's score on the base model and after the sequence, per variant (its runs'
    means), beside what was run: harness, version, metric, few-shot count, items."""
    described: dict[str, str] = {}
    for run in (r for s in summaries for r in s.runs):
        for result in run.harness.values():
            for sc in result.scores:
                described[sc.column] = (f"{sc.task} ({result.backend} {result.version}: {sc.metric}, "
                                        f"{sc.num_fewshot}-shot, {sc.n} items, task version {sc.version})")
    if not described:
        return ""
    columns = sorted(described)
    rows = []
    for s in summaries:
        cells = []
        for column in columns:
            series = [[r["accuracy"] for r in sorted(run.matrix, key=lambda r: r["stage"]) if r["eval_task"] == column]
                      for run in s.runs]
            series = [x for x in series if x]
            if not series:
                cells.append("n/a")
                continue
            base, final = statistics.fmean(x[0] for x in series), statistics.fmean(x[-1] for x in series)
            cells.append(f"{_pts(base, False)} → {_pts(final, False)} ({_pts(final - base)})")
        rows.append([s.label, len(s.runs), *cells])
    return "\n".join(["## General ability by harness", "",
                      "Scores on the base model → after the last stage (change), means over each variant's runs, "
                      "percent; counted in the general change above. " + "; ".join(described[c] for c in columns) + ".",
                      "", _table(["variant", "n", *columns], rows)])


def flips_section(summaries: Sequence[VariantSummary]) -> str:
    """Per variant, the share of the base's correct items lost (and of its wrong ones gained) by
    the end of each run, raw and chance-corrected; "" when no run has a flips.csv."""
    rows = [[s.label, n, *(_pct(mean, std, False, ci) for mean, std, ci in cells)]
            for s in summaries if (got := variant_flips(s.runs)) for n, cells in [got]]
    if not rows:
        return ""
    return "\n".join(["## Forgetting item by item", "", FLIPS_NOTE, "",
                      _table(["variant", "n", *[title for _, _, title in FLIP_COLUMNS]], rows)])


def render_markdown(runs: Sequence[RunRecord], summaries: Sequence[VariantSummary], base: Path | None,
                    figures: Sequence[str], drift: str = "", paper: str = "") -> str:
    analysed = [r for s in summaries for r in s.runs]  # the runs behind the variants' means: every comparison's
    compute = matched_compute_section(analysed)
    run_rows = [[_relative(r.path, base), r.variant, r.seed, r.status,
                 f"{r.metrics.get('stages_completed', '?')}/{r.metrics.get('num_tasks', '?')}"] for r in runs]
    parts = [
        "# CPT report", "",
        f"{len(runs)} runs read (paths relative to this report's folder when inside it). Unfinished runs "
        "are listed but enter a variant's means only when none of its runs finished.", "",
        _table(["run", "variant", "seed", "status", "stages"], run_rows), "",
        "## Results per variant", "",
        variant_table(summaries), "",
        NOTE, "",
        *([paper, ""] if paper else []),
        *([harness, ""] if (harness := harness_section(summaries)) else []),
        *([flips, ""] if (flips := flips_section(summaries)) else []),
        matched_gain_section(analysed), "",
        *([explain, ""] if (explain := explain_section(analysed)) else []),
        *([cl, ""] if (cl := cl_section(analysed)) else []),
        *([rule, ""] if (rule := gain_rule_section(analysed)) else []),
        *([compute, ""] if compute else []),
        *([drift, ""] if drift else []),
        "## Figures", "",
        *[f"![{name}]({name})" for name in figures],
    ]
    return "\n".join(parts).rstrip() + "\n"


def csv_rows(runs: Sequence[RunRecord], base: Path | None) -> list[dict]:
    def num(v):
        return round(v, 6) if isinstance(v, float) else v

    return [{
        "run_dir": _relative(r.path, base), "variant": r.variant, "paradigm": r.paradigm, "seed": r.seed,
        "base_model": base_model(r.config),  # the unit of the across-base intervals
        "status": r.status, "lr": r.lr, "schedule": r.schedule,
        "stages_completed": r.metrics.get("stages_completed"), "num_tasks": r.metrics.get("num_tasks"),
        **{k: num(r.metrics.get(k)) for k in HEADLINE_METRICS},
        **{k: num(getattr(r.compute, k, None)) for k in COMPUTE},
    } for r in runs]


def drift_section(points: Sequence[StagePoint]) -> str:
    """The correlation table of forgetting and general change against each drift measure, each
    R² with its interval, and which measure predicts each outcome best."""
    fits, r2s = correlations(points), r2_table(points)
    if not any(fits.values()):
        return ""
    rows = [[SHORT[o], SHORT[p], f.n, f"{f.r:+.2f}", f"{f.r2:.2f}", format_r2(r2s.get((p, o))), f"{f.rho:+.2f}",
             f"{100 * f.slope:+.3g}"] if f
            else [SHORT[o], SHORT[p], len(pairs(points, p, o)), "-", "-", "-", "-", "-"]
            for (p, o), f in sorted(fits.items(), key=lambda item: list(OUTCOMES).index(item[0][1]))]
    verdicts = predictor_verdicts(points)
    return "\n".join([
        "## Forgetting against drift", "",
        "One point per run and stage (stage >= 2 for forgetting): the outcome as of that stage against the "
        "drift measured after it, all paradigms together (`report_drift.png`). Slope of the least-squares line "
        "in points per unit of the predictor; Spearman's ρ also credits a monotone but saturating relation. "
        "KL: Monte Carlo over `eval.kl_samples` prompts (drift.py); forward KL(π₀‖π_t) with responses from the "
        "base (RL's Razor's predictor), reverse KL(π_t‖π₀) with responses from the stage's model. "
        f"R² interval: 95 % percentile bootstrap over runs ({R2_RESAMPLES} resamples; a run's stages are "
        "resampled together, as they are not independent).", "",
        _table(["outcome", "predictor", "n", "Pearson r", "R²", "R² 95 % interval", "Spearman ρ", "slope"], rows),
        *(["", "Which drift measure predicts best, each fitted on the points where all were measured, with the "
           "same resamples; one predicts best only where its interval lies above every other's (a "
           "conservative rule):", "", *verdicts] if verdicts else [])])


def _amount(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e4 else f"{x:.0f}"


def matched_compute_section(runs: Sequence[RunRecord]) -> str:
    """Gain and forgetting of the paradigms at equal compute, per way of counting compute."""
    parts = ["## Matched compute", "",
             "The paradigms at equal cost: for optimizer steps, tokens processed by the trainer and wall time, "
             "each paradigm's runs (averaged where they used the same amount) are linearly interpolated at "
             f"{MATCHED_POINTS} evenly spaced amounts inside the range both reach (`report_compute.png`). "
             "Joint-schedule runs are left out. Percentage points."]
    for axis, unit in COMPUTE_AXES.items():
        for key, what in (("gain", "gain"), ("forgetting", "forgetting")):
            series = compute_series(runs, axis, key)
            if len(series) < 2:
                continue
            for pa, pb in itertools.combinations(series, 2):
                parts += ["", f"### {what} at equal {unit}: {pa} vs {pb}", ""]
                rows = matched_compute(series[pa], series[pb])
                if not rows:
                    span = {p: (min(c for c, _ in series[p]), max(c for c, _ in series[p])) for p in (pa, pb)}
                    parts.append(f"The {unit} ranges do not overlap (" + "; ".join(
                        f"{p}: {_amount(lo)} to {_amount(hi)}" for p, (lo, hi) in span.items()) + ").")
                    continue
                parts.append(_table([unit, f"{what} ({pa})", f"{what} ({pb})", f"difference ({pa} − {pb})"],
                                    [[_amount(c), f"{100 * ya:+.1f}", f"{100 * yb:+.1f}", f"{100 * d:+.1f}"]
                                     for c, ya, yb, d in rows]))
    return "\n".join(parts) if len(parts) > 2 else ""
