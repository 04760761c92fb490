"""The report as text: the variant table, the matched-gain section, report.md and report.csv rows."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

from cpt_bench.metrics import HEADLINE_METRICS, SIGN_NOTE
from cpt_bench.report.drift import SHORT, StagePoint, correlations, pairs
from cpt_bench.report.runs import COMPUTE, RunRecord
from cpt_bench.report.summary import (
    COMPUTE_AXES,
    MATCHED_POINTS,
    VariantSummary,
    analysed_runs,
    compute_series,
    frontier_series,
    matched_compute,
    matched_gain,
)


def _pct(mean: float | None, std: float | None, signed: bool) -> str:
    if mean is None:
        return "n/a"
    shown = f"{100 * mean:+.1f}" if signed else f"{100 * mean:.1f}"
    return f"{shown} ± {'-' if std is None else f'{100 * std:.1f}'}"


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


NOTE = ("Mean ± sample std over seeds, in percent (accuracies) or percentage points; "
        "`-` = a single run, n/a = undefined (e.g. BWT and forgetting of a joint run). "
        f"{SIGN_NOTE} Compute columns are means over the same runs.")


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
            s.label, n,
            _pct(*st["final_avg_acc"][:2], signed=False), _pct(*st["forgetting"][:2], signed=True),
            _pct(*st["bwt"][:2], signed=True), _pct(*st["plasticity"][:2], signed=False),
            _pct(*st["gain"][:2], signed=True), _pct(*st["general_delta"][:2], signed=True),
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


def matched_gain_section(runs: Sequence[RunRecord]) -> str:
    parts = ["## Matched gain", "",
             "At equal learning rate GRPO often learns less and so forgets less, so the paradigms are also "
             "compared at equal gain: each paradigm's Pareto frontier (its runs not dominated in higher gain "
             "and lower forgetting, or higher gain and higher general change) is linearly interpolated at "
             f"{MATCHED_POINTS} evenly spaced gains inside the gain range both paradigms reach. "
             "Joint-schedule runs are left out. Percentage points."]
    for key, what, minimize in (("forgetting", "forgetting", True), ("general_delta", "general change", False)):
        series = frontier_series(runs, key)
        if len(series) < 2:
            parts += ["", f"Fewer than two paradigms have runs with both gain and {what} "
                          f"({', '.join(series) or 'none'}): nothing to compare."]
            continue
        for pa, pb in itertools.combinations(series, 2):
            rows = matched_gain(series[pa], series[pb], minimize_y=minimize)
            parts += ["", f"### {what}: {pa} vs {pb}", ""]
            if not rows:
                span = {p: (min(g for g, _ in series[p]), max(g for g, _ in series[p])) for p in (pa, pb)}
                parts.append("The gain ranges do not overlap (" + "; ".join(
                    f"{p}: {100 * lo:+.1f} to {100 * hi:+.1f}" for p, (lo, hi) in span.items())
                    + "), so there is no matched-gain comparison.")
                continue
            parts.append(_table(["gain (pts)", f"{what} ({pa})", f"{what} ({pb})", f"difference ({pa} − {pb})"],
                                [[f"{100 * g:+.1f}", f"{100 * ya:+.1f}", f"{100 * yb:+.1f}", f"{100 * d:+.1f}"]
                                 for g, ya, yb, d in rows]))
            better = f"{pa} forgets more" if minimize else f"{pa} keeps more general ability"
            parts.append(f"\nPositive difference = {better} at the same gain.")
    return "\n".join(parts)


def render_markdown(runs: Sequence[RunRecord], summaries: Sequence[VariantSummary], base: Path | None,
                    figures: Sequence[str], drift: str = "") -> str:
    compute = matched_compute_section(analysed_runs(runs))
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
        matched_gain_section(analysed_runs(runs)), "",
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
        "status": r.status, "lr": r.lr, "schedule": r.schedule,
        "stages_completed": r.metrics.get("stages_completed"), "num_tasks": r.metrics.get("num_tasks"),
        **{k: num(r.metrics.get(k)) for k in HEADLINE_METRICS},
        **{k: num(getattr(r.compute, k, None)) for k in COMPUTE},
    } for r in runs]


def drift_section(points: Sequence[StagePoint]) -> str:
    """The correlation table of forgetting and general change against each drift measure."""
    fits = correlations(points)
    if not any(fits.values()):
        return ""
    rows = [[SHORT[o], SHORT[p], f.n, f"{f.r:+.2f}", f"{f.r2:.2f}", f"{f.rho:+.2f}", f"{100 * f.slope:+.3g}"] if f
            else [SHORT[o], SHORT[p], len(pairs(points, p, o)), "-", "-", "-", "-"] for (p, o), f in fits.items()]
    return "\n".join([
        "## Forgetting against drift", "",
        "One point per run and stage (stage >= 2 for forgetting): the outcome as of that stage against the "
        "drift measured after it, all paradigms together (`report_drift.png`). Slope of the least-squares line "
        "in points per unit of the predictor; Spearman's ρ also credits a monotone but saturating relation. "
        "KL: Monte Carlo over `eval.kl_samples` prompts (drift.py).", "",
        _table(["outcome", "predictor", "n", "Pearson r", "R²", "Spearman ρ", "slope"], rows)])


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
