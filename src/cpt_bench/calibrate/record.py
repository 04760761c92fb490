"""What a calibration found, as `calibration.json` in the study folder: each family's probes,
its fit, where each target landed, and the seeds' mean gain there (pure, but for reading and
writing the file)."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cpt_bench.calibrate.search import Placement, Probe, falls, monotone_fit
from cpt_bench.outputs.rundir import read_json, write_json

RECORD = "calibration.json"


@dataclass(frozen=True)
class SeedsAt:
    """The study's seeds at one chosen rate: their gains and whether their mean hit the target."""

    lr: float
    target: float
    gains: tuple[float, ...]  # one per finished seed run

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.gains) if self.gains else None

    def reached(self, tolerance: float) -> bool | None:
        return None if self.mean is None else abs(self.mean - self.target) <= tolerance


@dataclass
class FamilyRecord:
    name: str
    overrides: list[str]
    folder: str  # the probes' folder, relative to the study folder
    probes: list[Probe] = field(default_factory=list)  # in the order they were run
    placements: list[Placement] = field(default_factory=list)
    seeds: list[SeedsAt] = field(default_factory=list)

    def not_monotone(self, tolerance: float) -> list[str]:
        """Where gain fell at a higher rate by more than one-seed noise explains."""
        return [f"lr {p.lr:g} gains {100 * p.gain:+.1f} pts, lr {q.lr:g} only {100 * q.gain:+.1f}"
                for p, q in falls(self.probes, tolerance)]


@dataclass
class CalibrationRecord:
    study: str
    tolerance: float  # fraction
    targets: list[float] | None  # fractions; None: no common range (see note)
    automatic: bool
    note: str
    families: list[FamilyRecord]

    def to_json(self) -> dict:
        fams = []
        for f in self.families:
            fit = monotone_fit(f.probes) if f.probes else None
            fams.append({
                "name": f.name, "overrides": f.overrides, "probes_folder": f.folder,
                "probes": [asdict(p) for p in f.probes],
                "fit": None if fit is None else {"lrs": list(fit.lrs), "gains": list(fit.gains)},
                "gain_not_monotone": f.not_monotone(self.tolerance),
                "placements": [asdict(p) for p in f.placements],
                "seeds": [{**asdict(s), "mean": s.mean, "reached": s.reached(self.tolerance)} for s in f.seeds],
            })
        return {"study": self.study, "tolerance": self.tolerance, "targets": self.targets,
                "automatic_targets": self.automatic, "note": self.note, "families": fams}

    def write(self, folder: Path) -> Path:
        write_json(folder / RECORD, self.to_json())
        return folder / RECORD


def read_record(folder: Path) -> dict | None:
    path = folder / RECORD
    return read_json(path) if path.is_file() else None
