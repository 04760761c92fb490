"""Figures of one run: an annotated heatmap of the matrix and accuracy-vs-stage curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from cpt_bench.results import StageEval  # noqa: E402


def _row_labels(stages: list[StageEval]) -> list[str]:
    return [f"{s.stage}: {s.trained_task or 'base'}" for s in stages]


def heatmap(stages: list[StageEval], order: list[str], general: list[str], path: Path, title: str = "") -> Path:
    cols = [*order, *[g for g in general if g in stages[0].accuracy]]
    data = [[100 * s.accuracy[c] for c in cols] for s in stages]
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(cols), 1.2 + 0.45 * len(stages)))
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for i, row in enumerate(data):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if v < 60 else "black")
    ax.set_xticks(range(len(cols)), [c + ("*" if c in general else "") for c in cols], rotation=45, ha="right")
    ax.set_yticks(range(len(stages)), _row_labels(stages))
    if len(cols) > len(order):
        ax.axvline(len(order) - 0.5, color="white", linewidth=2)
    ax.set_xlabel("evaluated task (* = general suite, never trained)")
    ax.set_ylabel("after stage")
    ax.set_title(title or "accuracy (%)")
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def curves(stages: list[StageEval], order: list[str], general: list[str], path: Path, title: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [s.stage for s in stages]
    for j, task in enumerate(order):
        line, = ax.plot(xs, [100 * s.accuracy[task] for s in stages], marker="o", label=task)
        if j + 1 < len(stages):  # mark the stage that trained this task
            ax.plot([j + 1], [100 * stages[j + 1].accuracy[task]], marker="*", markersize=13, color=line.get_color())
    for g in general:
        if g in stages[0].accuracy:
            ax.plot(xs, [100 * s.accuracy[g] for s in stages], linestyle="--", label=f"{g} (general)")
    ax.set_xticks(xs, _row_labels(stages), rotation=30, ha="right")
    ax.set_ylim(-2, 102)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or "accuracy per task after each stage (star = stage that trained it)")
    ax.legend(fontsize=7, ncol=2, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
