"""The report as text: the variant table, the sections beside the matched-gain one, report.md and report.csv rows."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from pathlib import Path

from cpt_bench.metrics import HEADLINE_METRICS, SIGN_NOTE
from cpt_bench.report.continual import cl_section
from cpt_bench.report.curves import curves_section
from cpt_bench.report.decide import HALF_WIDTH, seeds_line
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
from cpt_bench.report.frontier import MATCHED_POINTS
from cpt_bench.report.matched import matched_gain_section
from cpt_bench.report.runs import COMPUTE, RunRecord, Unread, base_model
from cpt_bench.report.setup import setup_section
from cpt_bench.report.stats import (
    CONFIDENCE,
    GAIN_SHARE,
    group_diff_ci,
    mean_ci,
)
from cpt_bench.report.summary import (
    COMPUTE_AXES,
    VariantSummary,
    compute_series,
    gain_rule_choices,
    matched_compute,
)
from cpt_bench.report.text import CLIPPED_NOTE, count, duration, fmt_ci, pct, pts, relative, table, verdict

NOTE = ("Mean ± sample std over a variant's runs (its seeds, and base models where they vary), in percent "
        f"(accuracies) or percentage points, then the {100 * CONFIDENCE:.0f} % Student-t confidence interval of "
        "the mean in brackets, over the n runs of the n column; where the runs come from several base models, "
        "over the base models' means (the bracket then says how many). No interval: a single run, or runs "
        "that agree to within float rounding. "
        "`-` = a single run, n/a = undefined (e.g. BWT and forgetting of a joint run). "
        f"{SIGN_NOTE} Compute columns are means over the same runs. {CLIPPED_NOTE}")


ACCURACIES = ("final_avg_acc", "plasticity")  # bounded by [0, 1]: their intervals are cut there


def _metric_cell(s: VariantSummary, key: str, signed: bool = True) -> str:
    ci = s.cis.get(key)
    return pct(*s.stats[key][:2], signed=signed, ci=ci.within(0.0, 1.0) if ci and key in ACCURACIES else ci)


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
            count(st["optimizer_steps"][0]), count(st["generated_tokens"][0]), duration(st["wall_seconds"][0]),
        ])
    return table(header, rows)


def gain_rule_section(runs: Sequence[RunRecord], half_width: float = HALF_WIDTH) -> str:
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
            cells.append(f"{pts(statistics.fmean(values))} {fmt_ci(ci)}".strip() if values else "n/a")
        rows.append([paradigm, f"{lr:g}", len(members), *cells])
    parts = ["## At the learning rates a gain-only rule picks", "",
             f"Per paradigm, the smallest learning rate whose mean gain reaches {100 * GAIN_SHARE:.0f} % of the best "
             "mean gain on its grid (the rule of docs/hyperparameters.md; forgetting is never consulted). "
             f"Means over the runs at that rate with {100 * CONFIDENCE:.0f} % Student-t intervals; percentage points.",
             "", table(["paradigm", "lr", "n", "gain", "forgetting", "general change"], rows),
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
            diff_rows.append([what, pts(statistics.fmean(a) - statistics.fmean(b)), fmt_ci(ci),
                              verdict(ci, pa, pb, minimize),
                              seeds_line(ci, half_width) if ci is None or ci.covers(0.0) else ""])
        parts += ["", f"Difference {pa} − {pb} (Welch's t-interval over runs; with several base models, the "
                  "t-interval over each base's own difference):", "",
                  table(["outcome", "difference", f"{100 * CONFIDENCE:.0f} % CI", "verdict", "what would decide it"],
                        diff_rows)]
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
            cells.append(f"{pts(base, False)} → {pts(final, False)} ({pts(final - base)})")
        rows.append([s.label, len(s.runs), *cells])
    return "\n".join(["## General ability by harness", "",
                      "Scores on the base model → after the last stage (change), means over each variant's runs, "
                      "percent; counted in the general change above. " + "; ".join(described[c] for c in columns) + ".",
                      "", table(["variant", "n", *columns], rows)])


def flips_section(summaries: Sequence[VariantSummary]) -> str:
    """Per variant, the share of the base's correct items lost (and of its wrong ones gained) by
    the end of each run, raw and chance-corrected; "" when no run has a flips.csv."""
    rows = [[s.label, n, *(pct(mean, std, False, ci) for mean, std, ci in cells)]
            for s in summaries if (got := variant_flips(s.runs)) for n, cells in [got]]
    if not rows:
        return ""
    return "\n".join(["## Forgetting item by item", "", f"{FLIPS_NOTE} {CLIPPED_NOTE}", "",
                      table(["variant", "n", *[title for _, _, title in FLIP_COLUMNS]], rows)])


def unread_section(unread: Sequence[Unread], base: Path | None) -> str:
    """Every file the report could not read, and the part of the report each leaves out."""
    return "\n".join(["## What could not be read", "",
                      f"{len(unread)} file{'s' if len(unread) > 1 else ''} could not be read; the rest of "
                      "the report stands without what each leaves out:", "", *(f"- {u.line(base)}" for u in unread)])


def render_markdown(runs: Sequence[RunRecord], summaries: Sequence[VariantSummary], base: Path | None,
                    figures: Sequence[str], drift: str = "", paper: str = "", half_width: float = HALF_WIDTH,
                    unread: Sequence[Unread] = ()) -> str:
    analysed = [r for s in summaries for r in s.runs]  # the runs behind the variants' means: every comparison's
    compute = matched_compute_section(analysed)
    run_rows = [[relative(r.path, base), r.variant, r.seed, r.status,
                 f"{r.metrics.get('stages_completed', '?')}/{r.metrics.get('num_tasks', '?')}"] for r in runs]
    parts = [
        "# CPT report", "",
        f"{len(runs)} runs read (paths relative to this report's folder when inside it). Unfinished runs "
        "are listed but enter a variant's means only when none of its runs finished.", "",
        setup_section(runs), "",
        table(["run", "variant", "seed", "status", "stages"], run_rows), "",
        *([unread_section(unread, base), ""] if unread else []),
        "## Results per variant", "",
        variant_table(summaries), "",
        NOTE, "",
        *([paper, ""] if paper else []),
        *([harness, ""] if (harness := harness_section(summaries)) else []),
        *([flips, ""] if (flips := flips_section(summaries)) else []),
        matched_gain_section(analysed, half_width), "",
        *([explain, ""] if (explain := explain_section(analysed, half_width)) else []),
        *([cl, ""] if (cl := cl_section(analysed, half_width)) else []),
        *([rule, ""] if (rule := gain_rule_section(analysed, half_width)) else []),
        *([compute, ""] if compute else []),
        *([drift, ""] if drift else []),
        *([curves, ""] if (curves := curves_section(analysed, half_width)) else []),
        "## Figures", "",
        *[f"![{name}]({name})" for name in figures],
    ]
    return "\n".join(parts).rstrip() + "\n"


def csv_rows(runs: Sequence[RunRecord], base: Path | None) -> list[dict]:
    def num(v):
        return round(v, 6) if isinstance(v, float) else v

    return [{
        "run_dir": relative(r.path, base), "variant": r.variant, "paradigm": r.paradigm, "seed": r.seed,
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
        table(["outcome", "predictor", "n", "Pearson r", "R²", "R² 95 % interval", "Spearman ρ", "slope"], rows),
        *(["", "Which drift measure predicts best, each fitted on the points where all were measured, with the "
           "same resamples; one predicts best only where its interval lies above every other's (a "
           "conservative rule):", "", *verdicts] if verdicts else [])])


def _amount(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e4 else f"{x:.0f}"


def matched_compute_section(runs: Sequence[RunRecord]) -> str:
    """Gain and forgetting of the paradigms at equal compute, per way of counting compute."""
    head = ["## Matched compute", "",
            "The paradigms at equal cost: for optimizer steps, tokens processed by the trainer and wall time, "
            "each paradigm's runs (averaged where they used the same amount) are linearly interpolated at "
            f"{MATCHED_POINTS} evenly spaced amounts inside the range both reach (`report_compute.png`). "
            "Joint-schedule runs are left out. Percentage points."]
    parts = list(head)
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
                shown = {_amount(c): [_amount(c), f"{100 * ya:+.1f}", f"{100 * yb:+.1f}", f"{100 * d:+.1f}"]
                         for c, ya, yb, d in reversed(rows)}  # amounts equal once rounded: one row, the first
                parts.append(table([unit, f"{what} ({pa})", f"{what} ({pb})", f"difference ({pa} − {pb})"],
                                   list(reversed(shown.values()))))
    return "\n".join(parts) if len(parts) > len(head) else ""  # one paradigm: nothing to match, no section
