"""The report's figures: a grid of heatmaps, per-variant curves, gain vs forgetting frontiers,
forgetting against drift, plasticity against stability inside each stage."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

from cpt_bench.outputs.curves import Balance
from cpt_bench.outputs.plots import draw_heatmap, panel_grid, pyplot
from cpt_bench.report.drift import OUTCOMES, PREDICTORS, StagePoint, fit, pairs
from cpt_bench.report.frontier import pareto_frontier
from cpt_bench.report.runs import RunRecord, paradigm_key
from cpt_bench.report.stats import variant_means
from cpt_bench.report.summary import COMPUTE_AXES, VariantSummary, compute_series, run_points, stage_curve

MAX_HEATMAPS = 24


def _colors(names: Iterable[str]) -> dict[str, str]:
    return {name: f"C{i}" for i, name in enumerate(sorted(set(names), key=paradigm_key))}


def _save(fig, path: Path, dpi: int, tight: bool = False) -> Path:
    """Lay out, write and close a figure (closed, so a report of many figures holds no memory)."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    pyplot().close(fig)
    return path


def plot_heatmaps(runs: Sequence[RunRecord], path: Path) -> Path:
    shown = runs[:MAX_HEATMAPS]
    fig, axes = panel_grid(len(shown), 4, 5.2, 4.0)
    for ax, run in zip(axes, shown):
        stages = sorted({r["stage"] for r in run.matrix})
        trained = {r["stage"]: r["trained_task"] for r in run.matrix}
        tasks = list(dict.fromkeys([*run.order, *run.general, *(r["eval_task"] for r in run.matrix)]))
        tasks = [t for t in tasks if any(r["eval_task"] == t for r in run.matrix)]
        acc = {(r["stage"], r["eval_task"]): 100 * r["accuracy"] for r in run.matrix}
        draw_heatmap(ax, [[acc.get((s, t), math.nan) for t in tasks] for s in stages],
                     rows=[f"{s}: {trained[s] or 'base'}" for s in stages],
                     columns=[t + ("*" if t in run.general else "") for t in tasks], fontsize=7)
        status = "" if run.finished else f" [{run.status}]"
        # long variant labels wrap rather than run into the neighbouring panel
        ax.set_title(textwrap.fill(f"{run.variant} seed={run.seed}{status}", 55), fontsize=8)
    note = f" (first {MAX_HEATMAPS} of {len(runs)} runs)" if len(runs) > MAX_HEATMAPS else ""
    fig.suptitle(f"accuracy (%) after each stage; * = general suite{note}", fontsize=10)
    return _save(fig, path, dpi=90)


def plot_curves(summaries: Sequence[VariantSummary], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, s in enumerate(summaries):
        curve = stage_curve(s.runs)
        if not curve:
            continue
        xs = [t for t, _, _ in curve]
        ys = [100 * m for _, m, _ in curve]
        sd = [100 * (d or 0.0) for _, _, d in curve]
        line, = ax.plot(xs, ys, marker="o", label=f"{s.label} (n={len(s.runs)})", color=f"C{i % 10}")
        ax.fill_between(xs, [y - d for y, d in zip(ys, sd)], [y + d for y, d in zip(ys, sd)],
                        color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("stage (= tasks trained so far; a joint run at the last stage)")
    ax.set_ylabel("average accuracy over seen tasks (%)")
    ax.set_title("average accuracy vs stage: mean over seeds, band = ± sample std")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # runs without metrics draw no curve
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15))  # below: labels can be long
    return _save(fig, path, dpi=110, tight=True)


def plot_pareto(runs: Sequence[RunRecord], path: Path) -> Path:
    return _save(pareto_figure(runs), path, dpi=110, tight=True)


def pareto_figure(runs: Sequence[RunRecord]):
    """Gain against forgetting and against general change: runs, variant means and each
    paradigm's frontier (drawn and listed only where it joins two means or more); the legend
    below the panels, where it hides no point."""
    plt = pyplot()
    colors = _colors([*(r.family for r in runs), *(r.paradigm for r in runs)])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    panels = (("forgetting", "forgetting (pts, positive = lost)", True),
              ("general_delta", "general change (pts, negative = harm)", False))
    for ax, (key, ylabel, minimize) in zip(axes, panels):
        for paradigm, points in run_points(runs, key).items():
            c = colors[paradigm]
            ax.scatter([100 * p.gain for p in points], [100 * p.y for p in points], color=c, alpha=0.3, s=14,
                       label=f"{paradigm} runs", zorder=2)
            means = variant_means(points)
            ax.scatter([100 * g for g, _ in means], [100 * y for _, y in means], color=c, s=40,
                       label=f"{paradigm} variant means", zorder=3)
            front = [means[i] for i in pareto_frontier(means, minimize)]
            if len(front) > 1:  # a one-point frontier is its variant mean, already drawn
                ax.plot([100 * g for g, _ in front], [100 * y for _, y in front], color=c, linewidth=1.5,
                        label=f"{paradigm} frontier")
        joint = [r for r in runs if r.joint and r.metrics.get("gain") is not None and r.metrics.get(key) is not None]
        for r in joint:
            ax.scatter(100 * r.metrics["gain"], 100 * r.metrics[key], marker="x", color=colors[r.paradigm], s=60,
                       label=f"{r.paradigm} joint", zorder=3)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        if unique:
            ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15))
        ax.set_xlabel("gain on the trained task (pts)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"gain vs {key.replace('_delta', ' change')}: runs and variant means")
        ax.grid(alpha=0.3)
    return fig


def plot_drift(points: Sequence[StagePoint], path: Path) -> Path:
    """Each outcome against each drift measure: one dot per run and stage, coloured by paradigm,
    with the least-squares line over all of them and its R^2."""
    plt = pyplot()
    colors = _colors(p.paradigm for p in points)
    fig, axes = plt.subplots(len(OUTCOMES), len(PREDICTORS), figsize=(5.0 * len(PREDICTORS), 4.2 * len(OUTCOMES)),
                             squeeze=False)
    for row, (outcome, ylabel) in zip(axes, OUTCOMES.items()):
        for ax, (predictor, xlabel) in zip(row, PREDICTORS.items()):
            xy = pairs(points, predictor, outcome)
            for paradigm in sorted({p for p, _, _ in xy}, key=paradigm_key):
                ax.scatter([x for p, x, _ in xy if p == paradigm], [100 * y for p, _, y in xy if p == paradigm],
                           color=colors[paradigm], label=paradigm, s=18, zorder=3)
            line = fit([x for _, x, _ in xy], [y for _, _, y in xy])
            if line:
                lo, hi = min(x for _, x, _ in xy), max(x for _, x, _ in xy)
                ax.plot([lo, hi], [100 * (line.slope * lo + line.intercept), 100 * (line.slope * hi + line.intercept)],
                        color="black", linewidth=1)
            ax.set_title(f"R² = {line.r2:.2f} (n = {line.n})" if line else f"n = {len(xy)}: no fit", fontsize=9)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel(ylabel, fontsize=8)
            ax.grid(alpha=0.3)
            if xy:
                ax.legend(fontsize=7, loc="best")
    fig.suptitle("what each stage forgot against how far it had moved from the base (one dot per run and stage)",
                 fontsize=10)
    return _save(fig, path, dpi=100)


def plot_compute(runs: Sequence[RunRecord], path: Path) -> Path:
    """Gain and forgetting of every sequential run against the compute it used, by family."""
    plt = pyplot()
    colors = _colors(r.family for r in runs)
    outcomes = (("gain", "gain on the trained task (pts)"), ("forgetting", "forgetting (pts, positive = lost)"))
    fig, axes = plt.subplots(len(outcomes), len(COMPUTE_AXES), figsize=(5.0 * len(COMPUTE_AXES), 4.0 * len(outcomes)),
                             squeeze=False)
    for row, (key, ylabel) in zip(axes, outcomes):
        for ax, (axis, xlabel) in zip(row, COMPUTE_AXES.items()):
            for paradigm, pts in compute_series(runs, axis, key).items():
                ax.scatter([c for c, _ in pts], [100 * y for _, y in pts], color=colors[paradigm], label=paradigm,
                           s=20, zorder=3)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel(ylabel, fontsize=8)
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="best")
    fig.suptitle("what each run learned and forgot against the compute it used (one dot per run)", fontsize=10)
    return _save(fig, path, dpi=100)


WITHIN_STAGE = (("trained", "trained task (plasticity)", "C0"), ("earlier", "earlier tasks' mean", "C1"),
                ("general", "general suite's mean", "C2"))
MAX_WITHIN_PANELS = 12


def plot_within_stage(variants: Sequence[tuple[str, list[dict[int, list[Balance]]]]], path: Path) -> Path:
    """One panel per variant: each run's points inside every stage (report.curves.segments),
    the trained task's accuracy against the earlier tasks' and the general suite's, x = optimizer
    steps through the sequence; a dotted line at each stage's end."""
    shown = variants[:MAX_WITHIN_PANELS]
    fig, axes = panel_grid(len(shown), 2, 7, 3.6)
    for ax, (label, runs) in zip(axes, shown):
        for r, segs in enumerate(runs):
            for stage, seg in segs.items():
                xs = [p.global_step for p in seg]
                for key, name, color in WITHIN_STAGE:
                    ys = [100 * v if (v := getattr(p, key)) is not None else math.nan for p in seg]
                    first = r == 0 and stage == min(segs)
                    ax.plot(xs, ys, marker=".", color=color, alpha=0.8, linewidth=1, label=name if first else None)
                ax.axvline(xs[-1], color="grey", linestyle=":", linewidth=0.8)
        ax.set_title("\n".join(textwrap.wrap(f"{label} ({len(runs)} run{'s' * (len(runs) != 1)})", 60)), fontsize=8)
        ax.set_xlabel("optimizer steps through the sequence")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _save(fig, path, dpi=110)
