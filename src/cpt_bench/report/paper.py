"""The paper's published figures beside the runs of a paper preset (`+experiment=paper_*`).

The figures are docs/paper.md's "Reported numbers" (arXiv 2507.05386 through a third-party
summary, unverified; the paper prints forgetting negative, here it is cpt-bench's sign,
positive = lost); tests/test_preflight.py checks they match that page. The paper's per-task
accuracies are not in docs/paper.md, so none are shown. On the paper's model and benchmark the
difference is a reproduction gap; on any other it is a reference only, and labelled so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cpt_bench.report.runs import RunRecord
from cpt_bench.report.summary import mean_std

SOURCE = "arXiv 2507.05386 as docs/paper.md reports it (third-party summary, unverified)"
PAPER_MODEL, PAPER_BENCHMARK = "qwen2_5_vl_7b", "mllm_cl7"
GENERAL_BASE = {"mmmu": 52.1, "mmlu_pro": 47.5}  # the base model's general scores, percent


@dataclass(frozen=True)
class PaperFigures:
    method: str  # the paper's row
    final_avg_acc: float  # percent
    forgetting: float | None = None  # percent, cpt-bench's sign (positive = lost)
    general: dict[str, float] = field(default_factory=dict)  # general column -> percent after the sequence


FIGURES = {
    ("paper_sft", "sequential"): PaperFigures("SFT", 54.0, 10.4, {"mmmu": 40.1, "mmlu_pro": 30.6}),
    ("paper_sft", "joint"): PaperFigures("joint multi-task", 62.9),
    ("paper_rft", "sequential"): PaperFigures("GRPO", 60.0, 2.3, {"mmmu": 54.2}),
    ("paper_rft_no_kl", "sequential"): PaperFigures("GRPO, no KL", 59.5),
    ("paper_rft_no_cot", "sequential"): PaperFigures("GRPO, no CoT", 59.4),
    ("paper_rif_rft", "sequential"): PaperFigures("RIF-RFT", 57.5, 4.5),
}


def figures_for(run: RunRecord) -> PaperFigures | None:
    return FIGURES.get((run.experiment or "", run.schedule))


def final_general(run: RunRecord, column: str) -> float | None:
    """A general column's accuracy after the last stage, percent (None: the run has no such column)."""
    rows = [r for r in run.matrix if r["eval_task"] == column]
    return 100 * max(rows, key=lambda r: r["stage"])["accuracy"] if rows else None


def mean(values: Sequence[float | None]) -> float | None:
    return mean_std(values)[0]


def cells(ours: float | None, paper: float) -> list[str]:
    return ["-" if ours is None else f"{ours:.1f}", f"{paper:.1f}", "-" if ours is None else f"{ours - paper:+.1f}"]


def paper_section(groups: Sequence[tuple[str, Sequence[RunRecord]]]) -> str:
    """Per variant of a paper preset (label, its runs): the runs' means beside the paper's, with
    the differences; "" when no variant is a paper preset's."""
    rows, other = [], set()
    for label, runs in groups:
        figures = figures_for(runs[0]) if runs else None
        if figures is None:
            continue
        same = all(r.setting("model.name") == PAPER_MODEL and r.setting("benchmark.name") == PAPER_BENCHMARK
                   for r in runs)
        if not same:
            other |= {f"model={r.setting('model.name')} benchmark={r.setting('benchmark.name')}" for r in runs}
        tag = "" if same else " (reference only)"
        avg = mean([100 * r.metrics["final_avg_acc"] if r.metrics.get("final_avg_acc") is not None else None
                    for r in runs])
        rows.append([label, figures.method + tag, "final avg acc", *cells(avg, figures.final_avg_acc)])
        if figures.forgetting is not None:
            fm = mean([100 * r.metrics["forgetting"] if r.metrics.get("forgetting") is not None else None
                       for r in runs])
            rows.append([label, figures.method + tag, "forgetting", *cells(fm, figures.forgetting)])
        for column, value in figures.general.items():
            got, name = mean([final_general(r, column) for r in runs]), f"{column} (base {GENERAL_BASE[column]:.1f})"
            rows.append([label, figures.method + tag, name, *cells(got, value)])
    if not rows:
        return ""
    header = ["variant", "paper's method", "metric", "runs", "paper's", "runs - paper's"]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    note = (f"The paper's published figures ({SOURCE}), in percent; forgetting in cpt-bench's sign (positive = "
            "lost). ")
    note += ("These runs are on the paper's model and benchmark: the difference is the reproduction gap."
             if not other else
             f"Reference only: these runs are on {', '.join(sorted(other))}, not the paper's Qwen2.5-VL-7B on the "
             "seven MLLM-CL tasks, so the differences measure nothing about the paper.")
    return "\n".join(["## The paper's published figures (reference)", "", note, "", *table])
