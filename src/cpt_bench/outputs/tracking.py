"""Experiment tracking: one W&B run per CPT sequence (`logger=wandb`), or none (`logger=none`).

The run directory's plain files (rundir.py) are the record of a run; a tracker mirrors them
and nothing depends on it: `logger.mode=online` without a key or a network falls back to
offline with one warning, and a W&B call that fails later stops the mirroring (one warning),
not the run. A run's W&B id is kept in its directory (`wandb/run_id`), so a resumed run
continues the same W&B run instead of opening a second one.
"""

from __future__ import annotations

import functools
import logging
import secrets
import string
from collections.abc import Sequence
from pathlib import Path

from cpt_bench.errors import unknown
from cpt_bench.metrics import HEADLINE_METRICS
from cpt_bench.outputs.curves import CurveRow, balance
from cpt_bench.outputs.flips import FlipRow, stage_scalars
from cpt_bench.outputs.records import StageRecord
from cpt_bench.outputs.results import long_rows
from cpt_bench.outputs.rundir import MATRIX_COLUMNS, WANDB_RUN_ID

log = logging.getLogger(__name__)

# online W&B failed once in this process: later runs (a sweep's) go offline without waiting again
_online_failed = False


class NullTracker:
    """logger=none (or logger.mode=disabled): every call is a no-op; the run's files are the record."""

    def __init__(self, cfg=None, run_dir: Path | None = None, config: dict | None = None, name: str = "",
                 group: str | None = None): ...

    def log_stage(self, record: StageRecord, metrics: dict | None, flips: Sequence[FlipRow] = ()) -> None: ...

    def log_train(self, step: int, stage: int, logs: dict) -> None: ...

    def log_curve(self, rows: Sequence[CurveRow], order: Sequence[str], general: Sequence[str]) -> None: ...

    def finish(self, stages: list[StageRecord], metrics: dict | None, images: dict[str, Path], ok: bool) -> None: ...


def new_run_id() -> str:
    """A W&B run id in W&B's own style (8 lower-case letters and digits)."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


class WandbTracker:
    """One W&B run per CPT sequence.

    Stage metrics live on their own `cpt/stage` axis and training metrics on a `train/step`
    axis that keeps counting across stages, so no stage's curve overwrites another's (the
    HF trainer's own W&B callback restarts `train/global_step` every stage and is off).
    """

    def __init__(self, cfg, run_dir: Path, config: dict, name: str, group: str | None):
        import wandb

        global _online_failed
        self.wandb, self.broken = wandb, False
        id_file = run_dir / WANDB_RUN_ID
        run_id = id_file.read_text().strip() if id_file.exists() else new_run_id()
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run_id + "\n")
        init = functools.partial(
            wandb.init, project=cfg.project, entity=cfg.entity, group=cfg.group or group, name=name,
            tags=list(cfg.tags), config=config, dir=str(run_dir), id=run_id, resume="allow",
            job_type="cpt-sequence",
            settings=wandb.Settings(console="off", silent=True, init_timeout=cfg.init_timeout))
        mode = "offline" if cfg.mode == "online" and _online_failed else str(cfg.mode)
        started = False  # whether W&B's service was asked to start the run
        try:
            if mode == "online":
                # the key and the server first: a failed online init would keep the run id
                # busy in W&B's service, and the offline fallback needs that same id
                wandb.login(verify=True, timeout=cfg.init_timeout)
            started = True
            self.run = init(mode=mode)
        except Exception as exc:  # noqa: BLE001 - no key, no network, a server error: all go offline
            if mode != "online":
                raise
            _online_failed = True
            if started:  # only a failed init holds the id; after a failed login, teardown can
                wandb.teardown()  # wait forever on a service that has nothing to end
            log.warning("W&B online is unavailable (%s: %s); logging offline to %s/wandb instead "
                        "(`wandb sync` uploads it later)", type(exc).__name__, str(exc).splitlines()[0], run_dir)
            self.run = init(mode="offline")
        self.run.define_metric("cpt/stage")
        self.run.define_metric("cpt/*", step_metric="cpt/stage")
        self.run.define_metric("train/step")
        self.run.define_metric("train/*", step_metric="train/step")
        self.run.define_metric("curve/global_step")  # eval.inner_points: optimizer steps through the sequence
        self.run.define_metric("curve/*", step_metric="curve/global_step")

    def _log(self, row: dict) -> None:
        """Log to W&B unless a call already failed; a failure warns once and never stops the run."""
        if self.broken:
            return
        try:
            self.run.log(row)
        except Exception as exc:  # noqa: BLE001 - the run's files are the record, not W&B
            self.broken = True
            log.warning("W&B logging failed (%s: %s); the run goes on, its files are complete",
                        type(exc).__name__, exc)

    def log_stage(self, record: StageRecord, metrics: dict | None, flips: Sequence[FlipRow] = ()) -> None:
        """The stage's row on the `cpt/stage` axis; `flips`: the run's flips.csv rows (this stage's are logged)."""
        row = {"cpt/stage": record.stage}
        row.update({f"cpt/diag/{k}": v for k, v in record.diagnostics.to_json().items() if isinstance(v, int | float)})
        row.update({f"cpt/acc/{task}": acc for task, acc in record.accuracy.items()})  # harness:<task> too
        if record.harness:
            row.update({f"cpt/harness_stderr/{s.task}": s.stderr for s in record.harness.scores
                        if s.stderr is not None})
        for key in HEADLINE_METRICS:
            if metrics and metrics.get(key) is not None:
                row[f"cpt/{key}"] = metrics[key]
        row.update(stage_scalars(flips, record.stage))
        if record.cl and record.cl.unmerged_accuracy:  # cl=merge: the stage's own model, before the merge
            row.update({f"cpt/cl/unmerged_acc/{t}": a for t, a in record.cl.unmerged_accuracy.items()})
        if record.rollouts:  # a paradigm's rollout step: what the samples left to train on
            row.update({f"cpt/rollouts/{k}": getattr(record.rollouts, k)
                        for k in ("kept_fraction", "rows", "mean_success", "rollout_tokens")})
        self._log(row)

    def log_train(self, step: int, stage: int, logs: dict) -> None:
        row = {"train/step": step, "train/stage": stage}
        row.update({f"train/{k}": v for k, v in logs.items() if isinstance(v, (int, float))})
        self._log(row)

    def log_curve(self, rows: Sequence[CurveRow], order: Sequence[str], general: Sequence[str]) -> None:
        """Evaluation points (curves.csv's rows: an inner point, or a stage's end) on the
        `curve/global_step` axis: each task's accuracy, and plasticity against stability (the
        trained task's accuracy, the earlier tasks' mean, the general suite's mean)."""
        points = balance(rows, order, general)
        for p in points:
            row = {"curve/global_step": p.global_step, "curve/stage": p.stage, "curve/step": p.step}
            row.update({f"curve/acc/{r.eval_task}": r.accuracy for r in rows if (r.stage, r.step) == (p.stage, p.step)})
            row.update({f"curve/{k}_acc": v for k in ("trained", "earlier", "general")
                        if (v := getattr(p, k)) is not None})
            self._log(row)

    def finish(self, stages: list[StageRecord], metrics: dict | None, images: dict[str, Path], ok: bool) -> None:
        try:
            rows = long_rows(stages)
            if rows:
                table = self.wandb.Table(columns=MATRIX_COLUMNS, data=[[r[c] for c in MATRIX_COLUMNS] for r in rows])
                payload = {"cpt/matrix": table}
                payload.update({f"cpt/{k}": self.wandb.Image(str(p)) for k, p in images.items() if p.exists()})
                self._log(payload)
            if metrics and not self.broken:
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
