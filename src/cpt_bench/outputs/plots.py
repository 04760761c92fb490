"""Figures of one run: an annotated heatmap of the matrix and accuracy-vs-stage curves.

`draw_heatmap` draws a matrix onto a given axis; the run's heatmap and the report's grid of
heatmaps both use it.
"""

from __future__ import annotations

import math
from pathlib import Path


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (never needs a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def panel_grid(n: int, max_cols: int, width: float, height: float):
    """A figure of `n` panels, at most `max_cols` a row, each `width` x `height` inches; the
    unused cells of the last row are blank. Returns (figure, the `n` axes in reading order)."""
    ncols = min(max_cols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = pyplot().subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def _row_labels(stages) -> list[str]:
    return [f"{s.stage}: {s.trained_task or 'base'}" for s in stages]


def draw_heatmap(ax, data: list[list[float]], rows: list[str], columns: list[str], fontsize: int = 8):
    """Accuracies in percent (NaN = not evaluated) as an annotated 0-100 colour grid on `ax`."""
    image = ax.imshow(data, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for i, row in enumerate(data):
        for j, v in enumerate(row):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=fontsize,
                        color="white" if v < 60 else "black")
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=fontsize if fontsize < 8 else None)
    ax.set_yticks(range(len(rows)), rows, fontsize=fontsize if fontsize < 8 else None)
    return image


def heatmap(stages, order: list[str], general: list[str], path: Path, title: str = "") -> Path:
    plt = pyplot()
    cols = [*order, *[g for g in general if g in stages[0].accuracy]]
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(cols), 1.2 + 0.45 * len(stages)))
    im = draw_heatmap(ax, [[100 * s.accuracy[c] for c in cols] for s in stages], _row_labels(stages),
                      [c + ("*" if c in general else "") for c in cols])
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


def curves(stages, order: list[str], general: list[str], path: Path, title: str = "") -> Path:
    plt = pyplot()
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
