"""`cpt-bench-report`: one report across many runs (a sweep, or several sweeps side by side).

Reads each run directory's run.json, metrics.json and matrix.csv, labels every run with the
config keys that set it apart from the others (its *variant*), averages each variant over
seeds, and writes report.md, report.csv and three figures. The paradigms are also compared
at matched gain, because at equal learning rate GRPO often learns less and so forgets less:
comparing forgetting alone would reward learning little.

Layout: loading (I/O) -> pure logic (labels, aggregation, frontier, matched gain, rendering)
-> writing files and figures (I/O). The pure part takes plain values and is what the tests
pin down with hand-computed numbers.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import math
import os
import re
import statistics
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from hydra.experimental.callback import Callback

from cpt_bench.tracking import read_json, read_matrix_csv

log = logging.getLogger(__name__)

PROG = "cpt-bench-report"
METRICS = ["final_avg_acc", "forgetting", "bwt", "plasticity", "gain", "fwt", "general_delta"]
COMPUTE = ["optimizer_steps", "generated_tokens", "train_seconds", "wall_seconds"]
CSV_COLUMNS = ["run_dir", "variant", "paradigm", "seed", "status", "lr", "schedule",
               "stages_completed", "num_tasks", *METRICS, *COMPUTE]
# Config keys that say how a run was executed or logged, not what was measured: two runs
# that differ only here are the same experiment. `seed` is what the variant averages over.
NOT_EXPERIMENT = ("seed", "hydra", "logger", "model.cache_dir", "overwrite", "threads",
                  "checkpoint", "deepspeed", "eval.batch_size")
PARADIGM_RANK = {"sft": 0, "rft": 1}  # table and comparison order; others follow by name
SKIP_DIRS = {"wandb", "stages"}  # never hold a run of their own; can be large
MAX_HEATMAPS = 24
MATCHED_POINTS = 4
FILES = {"md": "report.md", "csv": "report.csv", "heatmaps": "report_heatmaps.png",
         "curves": "report_curves.png", "pareto": "report_pareto.png"}


class ReportError(Exception):
    """Bad input to the report (no such path, no runs): a one-line message for the user."""


@dataclass
class RunRecord:
    """What the report needs from one run directory."""

    path: Path
    status: str  # running | finished | failed
    config: dict
    seed: int | None
    metrics: dict
    matrix: list[dict]  # matrix.csv rows
    order: list[str]
    general: list[str]
    compute: dict[str, float | None]
    variant: str = ""

    @property
    def paradigm(self) -> str:
        return str(_get(self.config, "paradigm.name") or "unknown")

    @property
    def lr(self) -> float | None:
        return _get(self.config, "paradigm.learning_rate")

    @property
    def schedule(self) -> str:
        return str(_get(self.config, "schedule") or "sequential")

    @property
    def joint(self) -> bool:
        return self.schedule == "joint"

    @property
    def finished(self) -> bool:
        return self.status == "finished"


# --- loading (I/O) ----------------------------------------------------------------------------


def find_runs(paths: Iterable[Path | str]) -> list[Path]:
    """Run directories (holding run.json) at or under each path, in natural order.

    A run with no metrics.json has not finished a stage yet and has nothing to report: it is
    skipped with a warning. Raises ReportError for a path that does not exist or holds no
    reportable run, so a typo is not mistaken for an empty sweep.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise ReportError(f"{path}: no such directory")
        here = []
        for root, dirs, files in os.walk(path):
            if "run.json" in files:
                dirs.clear()  # a run dir holds no further runs (only stages/, wandb/, .hydra/)
                if (Path(root) / "metrics.json").exists():
                    here.append(Path(root))
                else:
                    log.warning("skipping %s: no metrics.json (no stage finished)", root)
                continue
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        if not here:
            raise ReportError(f"{path}: no run with results (run.json and metrics.json) found")
        found += sorted(here, key=_natural_key)
    return list(dict.fromkeys(p.resolve() for p in found))  # a run named twice counts once


def load_run(path: Path) -> RunRecord:
    info = read_json(path / "run.json")
    metrics = read_json(path / "metrics.json")
    matrix = read_matrix_csv(path / "matrix.csv") if (path / "matrix.csv").exists() else []
    config = info.get("config") or {}
    return RunRecord(
        path=path,
        status=info.get("status") or "unknown",
        config=config,
        seed=info.get("seed", config.get("seed")),
        metrics=metrics,
        matrix=matrix,
        order=list(info.get("order") or metrics.get("order") or []),
        general=list(info.get("general_suite") or metrics.get("general_suite") or []),
        compute=compute_summary(info),
    )


def load_runs(paths: Iterable[Path | str]) -> list[RunRecord]:
    """Load every run under `paths` and label it with its variant."""
    runs = []
    for path in find_runs(paths):
        try:
            runs.append(load_run(path))
        except (OSError, ValueError, KeyError, TypeError) as exc:  # a damaged run must not hide the rest
            log.warning("skipping %s: unreadable (%s)", path, exc)
    if not runs:
        raise ReportError("no readable runs")
    for run, label in zip(runs, variant_labels([r.config for r in runs])):
        run.variant = label
    return runs


# --- pure logic: labels -----------------------------------------------------------------------

_MISSING = object()  # a key absent from a run's config (distinct from a null value)


def _get(d: dict, dotted: str, default=None):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return default
        d = d[part]
    return d


def _hashable(v):
    if isinstance(v, list | tuple):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return v


def flatten_config(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists become tuples so values can be compared and hashed."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten_config(value, dotted + "."))
        elif not isinstance(value, dict):
            out[dotted] = _hashable(value)
    return out


def _is_experiment_key(key: str) -> bool:
    return not any(key == k or key.startswith(k + ".") for k in NOT_EXPERIMENT)


def _short_names(keys: list[str], all_keys: list[str]) -> dict[str, str]:
    """The shortest dotted suffix of each key that no other config key ends with.

    `paradigm.kl_coef` -> `kl_coef`, but `order.seed` stays `order.seed` because `seed` alone
    would read as the training seed. A group choice `<group>.name` is written `<group>`, as in
    a Hydra override (`paradigm=rft`).
    """
    names = {}
    for key in keys:
        parts = key.split(".")
        if len(parts) == 2 and parts[1] == "name":
            names[key] = parts[0]
            continue
        for i in range(len(parts) - 1, -1, -1):
            suffix = ".".join(parts[i:])
            if not any(other != key and (other == suffix or other.endswith("." + suffix)) for other in all_keys):
                names[key] = suffix
                break
    return names


def _fmt_value(v) -> str:
    """Hydra override syntax, so a label reads like the command line that made the run."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, tuple):
        return "[" + ",".join(_fmt_value(x) for x in v) + "]"
    return str(v)


def varying_keys(configs: Sequence[dict]) -> list[str]:
    """The config keys that tell the runs apart, in config order.

    A key varies if two runs disagree on it (an absent key counts as its own value), unless it
    is excluded (NOT_EXPERIMENT) or it lives in a config group and is fixed by that group's
    choice, e.g. `paradigm.kl_coef` when every rft run has the same value: it is then a
    property of `paradigm=rft`, not a separate variable.
    """
    flats = [flatten_config(c) for c in configs]
    all_keys = list(dict.fromkeys(k for f in flats for k in f))
    varying = [k for k in all_keys if _is_experiment_key(k) and len({f.get(k, _MISSING) for f in flats}) > 1]

    def fixed_by_group_choice(key: str) -> bool:
        choice = key.split(".")[0] + ".name"
        if key == choice or "." not in key or choice not in all_keys:
            return False
        seen: dict[Any, set] = {}
        for f in flats:
            seen.setdefault(f.get(choice, _MISSING), set()).add(f.get(key, _MISSING))
        return all(len(values) == 1 for values in seen.values())

    return [k for k in varying if not fixed_by_group_choice(k)]


def variant_labels(configs: Sequence[dict]) -> list[str]:
    """A label per run from the keys that vary (seed excluded): "paradigm=rft kl_coef=0.0".

    Runs with the same label are one variant, averaged over seeds. When nothing but the seed
    varies, the label is the paradigm's name.
    """
    flats = [flatten_config(c) for c in configs]
    keys = varying_keys(configs)
    names = _short_names(keys, list(dict.fromkeys(k for f in flats for k in f)))
    labels = []
    for cfg, flat in zip(configs, flats):
        parts = [f"{names[k]}={_fmt_value(flat[k])}" for k in keys if k in flat]
        labels.append(" ".join(parts) or str(_get(cfg, "paradigm.name") or "run"))
    return labels


# --- pure logic: aggregation ------------------------------------------------------------------


def compute_summary(info: dict) -> dict[str, float | None]:
    """Compute spent by a run: run.json's `compute` block, else what its timings add up to."""
    compute = info.get("compute") or {}
    timings = info.get("timings") or {}
    stages = (timings.get("stages") or {}).values()

    def total(key):
        values = [s[key] for s in stages if isinstance(s, dict) and s.get(key) is not None]
        return sum(values) if values else None

    fallback = {"optimizer_steps": total("optimizer_steps"), "generated_tokens": None,
                "train_seconds": total("train_seconds"), "wall_seconds": timings.get("total_seconds")}
    return {k: compute[k] if compute.get(k) is not None else fallback[k] for k in COMPUTE}


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """Mean, sample std (None for a single value) and count of the values that are not None."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None, None, 0
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None), len(xs)


def counted_runs(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """The runs of one variant that enter its means: finished ones.

    An unfinished run's metrics cover fewer tasks, so averaging it in would mix different
    quantities. Only when none of a variant's runs finished (a report on a running sweep)
    are the unfinished ones shown, flagged as such.
    """
    done = [r for r in runs if r.finished]
    return done or list(runs)


@dataclass
class VariantSummary:
    label: str
    paradigm: str
    runs: list[RunRecord]  # the runs in the means
    left_out: list[RunRecord]  # unfinished runs not in the means
    stats: dict[str, tuple[float | None, float | None, int]] = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        return not any(r.finished for r in self.runs)


def _natural_key(value) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(value))]


def _paradigm_key(name: str) -> tuple:
    return PARADIGM_RANK.get(name, len(PARADIGM_RANK)), name


def summarize(runs: Sequence[RunRecord]) -> list[VariantSummary]:
    """One summary per variant: by paradigm (PARADIGM_RANK), sequential before joint, then label."""
    by_label: dict[str, list[RunRecord]] = {}
    for run in runs:
        by_label.setdefault(run.variant, []).append(run)
    out = []
    for label, members in by_label.items():
        kept = counted_runs(members)
        summary = VariantSummary(label, members[0].paradigm, kept, [r for r in members if all(r is not k for k in kept)])
        for key in METRICS:
            summary.stats[key] = mean_std(r.metrics.get(key) for r in kept)
        for key in COMPUTE:
            summary.stats[key] = mean_std(r.compute.get(key) for r in kept)
        out.append(summary)
    return sorted(out, key=lambda s: (_paradigm_key(s.paradigm), s.runs[0].joint, _natural_key(s.label)))


def analysed_runs(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """Every run that enters some variant's means (see counted_runs)."""
    return [r for s in summarize(runs) for r in s.runs]


def stage_curve(runs: Sequence[RunRecord]) -> list[tuple[int, float, float | None]]:
    """(stage, mean, std) of the average accuracy over the tasks seen so far.

    A joint run trains every task in its single stage, so its one point sits at the stage
    where a sequential run has also seen every task.
    """
    per_stage: dict[int, list[float]] = {}
    for run in runs:
        if run.joint:
            if run.metrics.get("final_avg_acc") is not None:
                stage = run.metrics.get("num_tasks") or len(run.order) or 1
                per_stage.setdefault(stage, []).append(run.metrics["final_avg_acc"])
            continue
        for t, acc in enumerate(run.metrics.get("avg_acc_per_stage") or [], start=1):
            if acc is not None:
                per_stage.setdefault(t, []).append(acc)
    return [(t, *mean_std(v)[:2]) for t, v in sorted(per_stage.items())]


# --- pure logic: frontier and matched gain ----------------------------------------------------


def pareto_frontier(points: Sequence[tuple[float, float]], minimize_y: bool = True) -> list[int]:
    """Indices of the points not dominated in (higher x, lower y) — or (higher x, higher y)
    with minimize_y=False — sorted by x. Exact duplicates are all kept."""
    sign = 1 if minimize_y else -1
    pts = [(x, sign * y) for x, y in points]  # now always: higher x, lower y is better

    def dominated(i: int) -> bool:
        xi, yi = pts[i]
        return any(xj >= xi and yj <= yi and (xj, yj) != (xi, yi) for xj, yj in pts)

    return sorted((i for i in range(len(pts)) if not dominated(i)), key=lambda i: (pts[i][0], pts[i][1]))


def _interp(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """Piecewise-linear y(x) for x within [xs[0], xs[-1]], xs ascending."""
    for (x0, y0), (x1, y1) in itertools.pairwise(zip(xs, ys)):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    if math.isclose(x, xs[-1]) or len(xs) == 1:
        return ys[-1]
    raise ValueError(f"{x} outside [{xs[0]}, {xs[-1]}]")


def matched_gain(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]],
                 n: int = MATCHED_POINTS, minimize_y: bool = True) -> list[tuple[float, float, float, float]]:
    """Compare two paradigms' (gain, y) run points at equal gain.

    Each side's Pareto frontier, sorted by gain, is linearly interpolated at `n` evenly
    spaced gains spanning the range both frontiers cover. Returns (gain, y_a, y_b, y_a - y_b)
    rows; [] when the gain ranges do not overlap (or a side has no points).
    """
    curves = []
    for pts in (a, b):
        front = sorted({pts[i] for i in pareto_frontier(pts, minimize_y)})
        if not front:
            return []
        curves.append(([x for x, _ in front], [y for _, y in front]))
    lo = max(xs[0] for xs, _ in curves)
    hi = min(xs[-1] for xs, _ in curves)
    if lo > hi:
        return []
    gains = [lo] if math.isclose(lo, hi) or n < 2 else [lo + (hi - lo) * k / (n - 1) for k in range(n - 1)] + [hi]
    rows = []
    for g in gains:
        ya, yb = (_interp(g, xs, ys) for xs, ys in curves)
        rows.append((g, ya, yb, ya - yb))
    return rows


def frontier_series(runs: Sequence[RunRecord], key: str) -> dict[str, list[tuple[float, float]]]:
    """(gain, key) per run, by paradigm. Joint runs are a multi-task reference, not a point
    on a paradigm's sequential trade-off, so they stay out of frontiers."""
    out: dict[str, list[tuple[float, float]]] = {}
    for run in sorted(runs, key=lambda r: _paradigm_key(r.paradigm)):
        gain, y = run.metrics.get("gain"), run.metrics.get(key)
        if not run.joint and gain is not None and y is not None:
            out.setdefault(run.paradigm, []).append((gain, y))
    return out


# --- pure logic: rendering --------------------------------------------------------------------


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


SIGN_NOTE = ("Mean ± sample std over seeds, in percent (accuracies) or percentage points; "
             "`-` = a single run, n/a = undefined (e.g. BWT and forgetting of a joint run). "
             "Signs: forgetting positive = accuracy lost; BWT negative = forgetting; "
             "gain positive = learned; general change (held-out suite vs the base) negative = harm. "
             "Compute columns are means over the same runs.")


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
                    figures: Sequence[str]) -> str:
    run_rows = [[_relative(r.path, base), r.variant, r.seed, r.status,
                 f"{r.metrics.get('stages_completed', '?')}/{r.metrics.get('num_tasks', '?')}"] for r in runs]
    parts = [
        "# CPT report", "",
        f"{len(runs)} runs read (paths relative to this report's folder when inside it). Unfinished runs "
        "are listed but enter a variant's means only when none of its runs finished.", "",
        _table(["run", "variant", "seed", "status", "stages"], run_rows), "",
        "## Results per variant", "",
        variant_table(summaries), "",
        SIGN_NOTE, "",
        matched_gain_section(analysed_runs(runs)), "",
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
        **{k: num(r.metrics.get(k)) for k in METRICS}, **{k: num(r.compute.get(k)) for k in COMPUTE},
    } for r in runs]


# --- figures (I/O) ----------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _colors(names: Iterable[str]) -> dict[str, str]:
    return {name: f"C{i}" for i, name in enumerate(sorted(set(names), key=_paradigm_key))}


def plot_heatmaps(runs: Sequence[RunRecord], path: Path) -> Path:
    plt = _pyplot()
    shown = runs[:MAX_HEATMAPS]
    ncols = min(4, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.0 * nrows), squeeze=False)
    for ax in axes.flat[len(shown):]:
        ax.axis("off")
    for ax, run in zip(axes.flat, shown):
        stages = sorted({r["stage"] for r in run.matrix})
        trained = {r["stage"]: r["trained_task"] for r in run.matrix}
        tasks = list(dict.fromkeys([*run.order, *run.general, *(r["eval_task"] for r in run.matrix)]))
        tasks = [t for t in tasks if any(r["eval_task"] == t for r in run.matrix)]
        acc = {(r["stage"], r["eval_task"]): 100 * r["accuracy"] for r in run.matrix}
        data = [[acc.get((s, t), math.nan) for t in tasks] for s in stages]
        ax.imshow(data, cmap="viridis", vmin=0, vmax=100, aspect="auto")
        for i, row in enumerate(data):
            for j, v in enumerate(row):
                if not math.isnan(v):
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if v < 60 else "black")
        ax.set_xticks(range(len(tasks)), [t + ("*" if t in run.general else "") for t in tasks],
                      rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(stages)), [f"{s}: {trained[s] or 'base'}" for s in stages], fontsize=7)
        status = "" if run.finished else f" [{run.status}]"
        # long variant labels wrap rather than run into the neighbouring panel
        ax.set_title(textwrap.fill(f"{run.variant} seed={run.seed}{status}", 55), fontsize=8)
    note = f" (first {MAX_HEATMAPS} of {len(runs)} runs)" if len(runs) > MAX_HEATMAPS else ""
    fig.suptitle(f"accuracy (%) after each stage; * = general suite{note}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_curves(summaries: Sequence[VariantSummary], path: Path) -> Path:
    plt = _pyplot()
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
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15))  # below: labels can be long
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_pareto(runs: Sequence[RunRecord], path: Path) -> Path:
    plt = _pyplot()
    colors = _colors(r.paradigm for r in runs)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    panels = (("forgetting", "forgetting (pts, positive = lost)", True),
              ("general_delta", "general change (pts, negative = harm)", False))
    for ax, (key, ylabel, minimize) in zip(axes, panels):
        for paradigm, pts in frontier_series(runs, key).items():
            c = colors[paradigm]
            ax.scatter([100 * g for g, _ in pts], [100 * y for _, y in pts], color=c, label=paradigm, zorder=3)
            front = [pts[i] for i in pareto_frontier(pts, minimize)]
            ax.plot([100 * g for g, _ in front], [100 * y for _, y in front], color=c, linewidth=1.5,
                    label=f"{paradigm} frontier")
        joint = [r for r in runs if r.joint and r.metrics.get("gain") is not None and r.metrics.get(key) is not None]
        for r in joint:
            ax.scatter(100 * r.metrics["gain"], 100 * r.metrics[key], marker="x", color=colors[r.paradigm], s=60,
                       label=f"{r.paradigm} joint", zorder=3)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        if unique:
            ax.legend(unique.values(), unique.keys(), fontsize=7, loc="best")
        ax.set_xlabel("gain on the trained task (pts)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"gain vs {key.replace('_delta', ' change')}: one point per run")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- writing the report (I/O) -----------------------------------------------------------------


def write_report(runs: Sequence[RunRecord], out: Path) -> dict[str, Path]:
    """report.md, report.csv and the three figures into `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    base = out.resolve()
    summaries = summarize(runs)
    paths = {k: out / name for k, name in FILES.items()}
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(runs, base))
    plot_heatmaps(runs, paths["heatmaps"])
    plot_curves(summaries, paths["curves"])
    plot_pareto(analysed_runs(runs), paths["pareto"])
    figures = [FILES["heatmaps"], FILES["curves"], FILES["pareto"]]
    paths["md"].write_text(render_markdown(runs, summaries, base, figures))
    return paths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Cross-run report of cpt-bench runs: per-variant means over seeds, "
        "Pareto frontiers and a matched-gain comparison of the paradigms.")
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR",
                        help="a run directory, or a directory holding runs (e.g. a multirun sweep)")
    parser.add_argument("--out", type=Path, help="where to write the report (default: the single DIR)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is None and len(args.dirs) > 1:
        parser.error("--out is required with several DIRs")
    if not logging.getLogger().handlers:
        logging.basicConfig(format=f"{PROG}: %(levelname)s: %(message)s", stream=sys.stderr)
    try:
        runs = load_runs(args.dirs)
    except ReportError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.dirs[0]
    paths = write_report(runs, out)
    print(variant_table(summarize(runs)))
    print(f"\n{SIGN_NOTE}\nReport: {paths['md']} (+ report.csv, report_*.png)")
    return 0


class ReportCallback(Callback):
    """Writes the report into the sweep directory when a multirun ends.

    On by default (`hydra.callbacks.report` in conf/config.yaml). A report failure is logged and swallowed: the runs
    themselves are done and must not be marked failed because a figure could not be drawn.
    """

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        try:
            sweep = Path(config.hydra.sweep.dir)
            paths = write_report(load_runs([sweep]), sweep)
            log.info("cross-run report: %s", paths["md"])
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.warning("cross-run report not written: %s", exc, exc_info=not isinstance(exc, ReportError))


if __name__ == "__main__":
    sys.exit(main())
