"""The run directory's file names, and the readers and writers of its files.

Used by the stage loop (writing), resume and the report (reading) and the tests, so a file
is named and parsed in one place. Every writer is atomic (a temporary file, then a rename):
a run killed mid-write leaves the previous complete file, never half of one.

    <run dir>/run.json  matrix.csv  metrics.json  summary.txt  heatmap.png  curves.png
             stages/<kk>-<task>/stage.json  model/  eval/<task>.jsonl  train_log.jsonl  filter.jsonl
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

RUN_JSON = "run.json"
MATRIX_CSV = "matrix.csv"
METRICS_JSON = "metrics.json"
SUMMARY_TXT = "summary.txt"
STAGE_JSON = "stage.json"  # written last: marks a stage complete
WANDB_RUN_ID = "wandb/run_id"  # the run's W&B id: a resumed run logs into the same W&B run
RESULT_FILES = [MATRIX_CSV, METRICS_JSON, "heatmap.png", "curves.png", SUMMARY_TXT]
MATRIX_COLUMNS = ["stage", "trained_task", "eval_task", "accuracy", "n"]


def stage_dir(run_dir: Path, stage: int, task: str) -> Path:
    """`stages/<kk>-<task>`: one folder per stage (`00-base` for the base model's evaluation)."""
    return run_dir / "stages" / f"{stage:02d}-{task or 'base'}"


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def disk_bytes(path: Path) -> int:
    """Bytes of the files under `path` (a stage folder: its checkpoint, records and logs)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path):
    return json.loads(path.read_text())


def write_jsonl(path: Path, records: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_matrix_csv(path: Path, rows: list[dict]) -> None:
    """The long-format matrix (`MATRIX_COLUMNS`), accuracies with six decimals."""
    with open(path.with_name(f".{path.name}.{os.getpid()}.tmp"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MATRIX_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "accuracy": f"{row['accuracy']:.6f}"})
    Path(f.name).replace(path)


def read_matrix_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [
            {**r, "stage": int(r["stage"]), "accuracy": float(r["accuracy"]), "n": int(r["n"])}
            for r in csv.DictReader(f)
        ]
