"""`calibration.png`: gain against learning rate per family, with its probes, the monotone
fit through them, the targets, the chosen rates and the seeds' mean gain at each."""

from __future__ import annotations

from pathlib import Path

from matplotlib.ticker import NullFormatter

from cpt_bench.calibrate.record import CalibrationRecord
from cpt_bench.calibrate.search import monotone_fit
from cpt_bench.outputs.plots import panel_grid, pyplot

FIGURE = "calibration.png"


def plot_calibration(rec: CalibrationRecord, folder: Path) -> Path:
    fig, axes = panel_grid(len(rec.families), 3, 5.0, 3.8)
    tol = 100 * rec.tolerance
    for ax, fam in zip(axes, rec.families):
        if fam.probes:
            ax.scatter([p.lr for p in fam.probes], [100 * p.gain for p in fam.probes], color="C0", zorder=3,
                       label="probes (calibration seed)")
            fit = monotone_fit(fam.probes)
            ax.plot(fit.lrs, [100 * g for g in fit.gains], color="C0", alpha=0.6, label="monotone fit")
        for i, t in enumerate(rec.targets or []):
            ax.axhspan(100 * t - tol, 100 * t + tol, color="C2", alpha=0.12,
                       label="targets ± tolerance" if not i else None)
            ax.axhline(100 * t, color="C2", lw=0.8)
        chosen = [p for p in fam.placements if p.lr is not None]
        for i, p in enumerate(chosen):
            ax.axvline(p.lr, color="C1", ls="--", lw=0.8, label="chosen rates" if not i else None)
        seeds = [s for s in fam.seeds if s.mean is not None]
        if seeds:
            ax.scatter([s.lr for s in seeds], [100 * s.mean for s in seeds], marker="D", color="C3", zorder=4,
                       label="the seeds' mean")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow range labelled every minor tick, overlapping
        ax.set_title(fam.name, fontsize=10)
        ax.set_xlabel("learning rate")
        ax.set_ylabel("gain (pts)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{rec.study}: calibration to shared gains", fontsize=11)
    fig.tight_layout()
    path = folder / FIGURE
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path
