"""The accuracy matrix in its two shapes: long rows (files, W&B) and R[t][j] (metrics).

Pure functions; the stage loop appends one `StageRecord` per stage and everything written
about a run is derived from that list.
"""

from __future__ import annotations

from cpt_bench.metrics import HEADLINE_METRICS, SIGN_CONVENTIONS, compute_joint_metrics, compute_metrics
from cpt_bench.outputs.records import StageRecord

JOINT = "joint"  # the trained_task of the joint baseline's single stage


def long_rows(stages: list[StageRecord]) -> list[dict]:
    """One row per (stage, eval task), CPT and general tasks alike, in `MATRIX_COLUMNS` order."""
    return [
        {"stage": s.stage, "trained_task": s.trained_task, "eval_task": task,
         "accuracy": s.accuracy[task], "n": s.n[task]}
        for s in stages
        for task in s.accuracy
    ]


def square_matrix(stages: list[StageRecord], order: list[str]) -> list[list[float]]:
    """R[t][j]: accuracy on the j-th task of `order` after stage t (row 0 = base)."""
    return [[s.accuracy[task] for task in order] for s in stages]


def general_series(stages: list[StageRecord], general: list[str]) -> dict[str, list[float]]:
    return {g: [s.accuracy[g] for s in stages] for g in general if all(g in s.accuracy for s in stages)}


def run_metrics(stages: list[StageRecord], order: list[str], general: list[str]) -> dict | None:
    """All metrics as of the last completed stage; None before any stage has trained."""
    if len(stages) < 2:
        return None
    series = general_series(stages, general) or None
    if stages[1].trained_task == JOINT:
        return compute_joint_metrics(*square_matrix(stages, order), general=series)
    return compute_metrics(square_matrix(stages, order), series)


def format_summary(stages: list[StageRecord], order: list[str], general: list[str], metrics: dict | None) -> str:
    """The terminal's closing table: the matrix in percent, then each metric with its sign."""
    cols = [*order, *[g for g in general if g in stages[0].accuracy]]
    width = max(8, *(len(c) + 1 for c in cols))
    head = f"{'stage':<6}{'trained':<{width}}" + "".join(f"{c:>{width}}" for c in cols)
    lines = ["Accuracy matrix (%; rows = after stage, columns = evaluated task"
             + ("; general suite on the right)" if len(cols) > len(order) else ")"), head, "-" * len(head)]
    for s in stages:
        cells = "".join(f"{100 * s.accuracy[c]:>{width}.1f}" for c in cols)
        lines.append(f"{s.stage:<6}{(s.trained_task or '(base)'):<{width}}{cells}")
    if metrics:
        lines += ["", "Metrics (percentage points; sign convention on the right)"]
        for key in HEADLINE_METRICS:
            value = metrics.get(key)
            signed = key not in ("final_avg_acc", "plasticity")
            shown = "n/a" if value is None else f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"
            lines.append(f"  {key:<15}{shown:>8}   {SIGN_CONVENTIONS[key]}")
    return "\n".join(lines)
