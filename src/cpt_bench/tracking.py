"""Where results go: plain files in the run directory and one W&B run per CPT sequence.

Files are rewritten after every stage, so a run that dies keeps everything it computed.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from cpt_bench.results import MATRIX_COLUMNS, StageEval, long_rows

log = logging.getLogger(__name__)

PACKAGES = ["cpt-bench", "torch", "transformers", "trl", "datasets", "accelerate", "deepspeed",
            "hydra-core", "omegaconf", "wandb", "tokenizers"]


# --- plain files ---------------------------------------------------------------------------


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a file


def read_json(path: Path):
    return json.loads(path.read_text())


def write_matrix_csv(path: Path, stages: list[StageEval]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MATRIX_COLUMNS)
        writer.writeheader()
        for row in long_rows(stages):
            writer.writerow({**row, "accuracy": f"{row['accuracy']:.6f}"})


def read_matrix_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [
            {**r, "stage": int(r["stage"]), "accuracy": float(r["accuracy"]), "n": int(r["n"])}
            for r in csv.DictReader(f)
        ]


def write_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def package_versions() -> dict[str, str | None]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def hardware() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


# --- Weights & Biases ------------------------------------------------------------------------


class NullTracker:
    """logger=none: every call is a no-op; the files above are the record."""

    def log_stage(self, stage: StageEval, metrics: dict | None, diagnostics: dict) -> None: ...

    def log_train(self, step: int, stage: int, logs: dict) -> None: ...

    def finish(self, stages: list[StageEval], metrics: dict | None, images: dict[str, Path], ok: bool) -> None: ...


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

    def log_stage(self, stage: StageEval, metrics: dict | None, diagnostics: dict) -> None:
        row = {"cpt/stage": stage.stage}
        row.update({f"cpt/diag/{k}": v for k, v in diagnostics.items() if isinstance(v, (int, float))})
        row.update({f"cpt/acc/{task}": acc for task, acc in stage.accuracy.items()})
        for key in ("final_avg_acc", "forgetting", "bwt", "plasticity", "general_delta"):
            if metrics and metrics.get(key) is not None:
                row[f"cpt/{key}"] = metrics[key]
        self.run.log(row)

    def log_train(self, step: int, stage: int, logs: dict) -> None:
        row = {"train/step": step, "train/stage": stage}
        row.update({f"train/{k}": v for k, v in logs.items() if isinstance(v, (int, float))})
        self.run.log(row)

    def finish(self, stages: list[StageEval], metrics: dict | None, images: dict[str, Path], ok: bool) -> None:
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


def make_tracker(cfg, run_dir: Path, config: dict, name: str, group: str | None):
    if cfg.name == "none" or cfg.mode == "disabled":
        return NullTracker()
    if cfg.name == "wandb":
        return WandbTracker(cfg, run_dir, config, name, group)
    from cpt_bench.tasks import ConfigError

    raise ConfigError(f"unknown logger {cfg.name!r}; available: wandb, none")
