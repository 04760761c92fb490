"""Experiment tracking: one W&B run per CPT sequence (`logger=wandb`), or none (`logger=none`).

The run directory's plain files (rundir.py) are the record of a run; a tracker mirrors them
and nothing depends on it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cpt_bench.errors import unknown
from cpt_bench.metrics import HEADLINE_METRICS
from cpt_bench.records import StageRecord
from cpt_bench.results import long_rows
from cpt_bench.rundir import MATRIX_COLUMNS

log = logging.getLogger(__name__)


class NullTracker:
    """logger=none (or logger.mode=disabled): every call is a no-op; the run's files are the record."""

    def __init__(self, cfg=None, run_dir: Path | None = None, config: dict | None = None, name: str = "",
                 group: str | None = None): ...

    def log_stage(self, record: StageRecord, metrics: dict | None) -> None: ...

    def log_train(self, step: int, stage: int, logs: dict) -> None: ...

    def finish(self, stages: list[StageRecord], metrics: dict | None, images: dict[str, Path], ok: bool) -> None: ...


class WandbTracker:
    """One W&B run per CPT sequence.

    Stage metrics live on their own `cpt/stage` axis and training metrics on a `train/step`
    axis that keeps counting across stages, so no stage's curve overwrites another's (the
    HF trainer's own W&B callback restarts `train/global_step` every stage and is off).
    """

    def __init__(self, cfg, run_dir: Path, config: dict, name: str, group: str | None):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            group=cfg.group or group,
            name=name,
            tags=list(cfg.tags),
            config=config,
            dir=str(run_dir),
            mode=cfg.mode,
            job_type="cpt-sequence",
            settings=wandb.Settings(console="off", silent=True),
        )
        self.run.define_metric("cpt/stage")
        self.run.define_metric("cpt/*", step_metric="cpt/stage")
        self.run.define_metric("train/step")
        self.run.define_metric("train/*", step_metric="train/step")

    def log_stage(self, record: StageRecord, metrics: dict | None) -> None:
        row = {"cpt/stage": record.stage}
        row.update({f"cpt/diag/{k}": v for k, v in record.diagnostics.items() if isinstance(v, (int, float))})
        row.update({f"cpt/acc/{task}": acc for task, acc in record.accuracy.items()})
        for key in HEADLINE_METRICS:
            if metrics and metrics.get(key) is not None:
                row[f"cpt/{key}"] = metrics[key]
        self.run.log(row)

    def log_train(self, step: int, stage: int, logs: dict) -> None:
        row = {"train/step": step, "train/stage": stage}
        row.update({f"train/{k}": v for k, v in logs.items() if isinstance(v, (int, float))})
        self.run.log(row)

    def finish(self, stages: list[StageRecord], metrics: dict | None, images: dict[str, Path], ok: bool) -> None:
        try:
            rows = long_rows(stages)
            if rows:
                table = self.wandb.Table(columns=MATRIX_COLUMNS, data=[[r[c] for c in MATRIX_COLUMNS] for r in rows])
                payload = {"cpt/matrix": table}
                payload.update({f"cpt/{k}": self.wandb.Image(str(p)) for k, p in images.items() if p.exists()})
                self.run.log(payload)
            if metrics:
                self.run.summary.update({k: v for k, v in metrics.items() if v is not None})
        finally:
            self.run.finish(exit_code=0 if ok else 1)


LOGGERS = {"wandb": WandbTracker, "none": NullTracker}


def make_tracker(cfg, run_dir: Path, config: dict, name: str, group: str | None):
    """The tracker `logger.name` names; `logger.mode=disabled` tracks nothing either."""
    if cfg.name not in LOGGERS:
        raise unknown("logger", cfg.name, LOGGERS)
    tracker = NullTracker if cfg.mode == "disabled" else LOGGERS[cfg.name]
    return tracker(cfg, run_dir, config, name, group)
