"""Resume and the disk budget: what a run directory already holds decides what runs.

A finished run of the same config is never redone (a re-submitted sweep returns its stored
metrics) and never overwritten without `overwrite=true`; an unfinished one resumes after its
last complete stage (an unbroken prefix of `stage.json` files), but only with the same config.
Before anything runs, the checkpoints still to be written must fit on the disk.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from cpt_bench.choices import KeepCheckpoints
from cpt_bench.config import Config, config_dict
from cpt_bench.errors import ConfigError
from cpt_bench.outputs.records import StageRecord
from cpt_bench.outputs.rundir import (
    DAMAGED,
    METRICS_JSON,
    RESULT_FILES,
    RUN_JSON,
    STAGE_JSON,
    disk_bytes,
    read_json,
    stage_dir,
    why,
)

log = logging.getLogger("cpt_bench")

def read_record(path: Path, what_to_do: str) -> dict:
    """A JSON record of the run directory, or one line naming the file, what is wrong with it
    and what to do (never a traceback)."""
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} cannot be read ({why(exc)}); {what_to_do}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a record (a JSON {type(data).__name__}, not an object); {what_to_do}")
    return data


RESTORE = "restore it from a copy, or pass overwrite=true to start this run over"


def comparable(cfg: Config) -> dict:
    """The config that defines the results (what must match to resume a run), as run.json keeps it."""
    data = config_dict(cfg)
    data.pop("overwrite", None)
    data.pop("preflight", None)  # the node a preflight described, not what the run computes
    for key in ("mode", "init_timeout"):  # how to reach W&B, not what the run computes
        data.get("logger", {}).pop(key, None)
    return data


def finished_metrics(cfg: Config, run_dir: Path) -> dict | None:
    """The stored metrics of a finished run of this same config in `run_dir`, else None."""
    run_json = run_dir / RUN_JSON
    if cfg.overwrite or not run_json.exists():
        return None
    previous = read_record(run_json, RESTORE)
    if previous.get("status") != "finished" or previous.get("config") != comparable(cfg):
        return None
    return read_json(run_dir / METRICS_JSON) if (run_dir / METRICS_JSON).exists() else {}


def checkpoint_space(per_checkpoint: int, stages_left: int, keep: KeepCheckpoints, inner_points: int = 0) -> int:
    """Bytes the stage checkpoints still to be written will hold at most at one time: every one
    with keep=all; else two (a stage's new checkpoint is published before the previous goes);
    and one stage's `inner_points` snapshots (eval.inner_points: deleted once evaluated)."""
    stages = stages_left if keep == KeepCheckpoints.all else min(stages_left, 2)
    return per_checkpoint * (stages + (inner_points if stages_left else 0))


def human_bytes(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def prepare_run_dir(cfg: Config, run_dir: Path) -> list[StageRecord]:
    """Refuse to clobber a finished run; return the records of the stages an unfinished one
    completed (an unbroken prefix), which the resumed run carries on from."""
    run_json = run_dir / RUN_JSON
    if not run_json.exists():
        return []
    if cfg.overwrite:
        log.warning("overwrite=true: clearing the previous run in %s", run_dir)
        shutil.rmtree(run_dir / "stages", ignore_errors=True)
        shutil.rmtree(run_dir / "wandb", ignore_errors=True)
        for name in [RUN_JSON, *RESULT_FILES]:
            (run_dir / name).unlink(missing_ok=True)
        return []
    previous = read_record(run_json, RESTORE)
    if previous.get("status") == "finished":
        raise ConfigError(
            f"{run_dir} already holds a finished run; pick another hydra.run.dir or pass overwrite=true"
        )
    if previous.get("config") != comparable(cfg):
        raise ConfigError(
            f"{run_dir} holds an unfinished run with a different config; "
            "rerun it with the same overrides to resume, or pass overwrite=true"
        )
    records = completed_stages(run_dir)
    if records:
        log.info("resuming %s after stage %d", run_dir, records[-1].stage)
    return records


def completed_stages(run_dir: Path) -> list[StageRecord]:
    """The unbroken prefix of stages whose stage.json reads back. A damaged stage.json (a kill
    while it was written, a disk error) ends the prefix: that stage is redone from the model it
    started from, as after a kill, where that model is still on disk; where it is gone
    (checkpoint.keep=last or none), one line says so."""
    records: list[StageRecord] = []
    for path in sorted((run_dir / "stages").glob(f"*/{STAGE_JSON}")):
        try:
            record = StageRecord.from_json(read_json(path))
        except DAMAGED as exc:
            stage = len(records)
            last = records[-1] if stage > 1 else None  # stage 0 is the base's evaluation, stage 1 starts from the base
            start = last and (last.model or str(stage_dir(run_dir, last.stage, last.trained_task) / "model"))
            if start is not None and not (Path(start) / "config.json").exists():
                raise ConfigError(f"{path} cannot be read ({why(exc)}) and stage {stage} cannot be redone: the "
                                  f"model it started from ({start}) is gone (checkpoint.keep); restore the file, "
                                  "or pass overwrite=true to run the sequence again") from None
            log.warning("%s cannot be read (%s): stage %d is redone, as after a kill", path, why(exc), stage)
            break
        if record.stage != len(records):
            break  # only an unbroken prefix counts
        records.append(record)
    return records


def check_disk(run_dir: Path, base_path: str, stages_left: int, keep: KeepCheckpoints, inner_points: int = 0) -> None:
    """Refuse to start when the checkpoints this run will hold at once cannot fit on the disk
    (estimated from the base model's folder; a hub id is not measured)."""
    base = Path(base_path)
    if not base.is_dir():
        return
    size = disk_bytes(base)
    need = checkpoint_space(size, stages_left, keep, inner_points)
    free = shutil.disk_usage(run_dir).free
    if need > free:
        raise ConfigError(
            f"not enough disk in {run_dir}: {stages_left} stage checkpoints of about {human_bytes(size)} "
            + (f"(and {inner_points} snapshots a stage for eval.inner_points) " if inner_points else "") +
            f"with checkpoint.keep={keep} need about {human_bytes(need)}, "
            f"{human_bytes(free)} are free; free space or pick another hydra.run.dir"
            + (" or pass checkpoint.keep=last" if keep == KeepCheckpoints.all else "")
            + (" or fewer eval.inner_points" if inner_points else ""))
