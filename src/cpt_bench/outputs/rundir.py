"""The run directory's file names, and the readers and writers of its files.

Used by the stage loop (writing), resume and the report (reading) and the tests, so a file
is named and parsed in one place. Every writer is atomic (a temporary file, then a rename):
a run killed mid-write leaves the previous complete file, never half of one.

    <run dir>/run.json  matrix.csv  flips.csv  metrics.json  summary.txt  heatmap.png  curves.png
             curves.csv (eval.inner_points: outputs/curves.py)
             stages/<kk>-<task>/stage.json  model/  eval/<task>.jsonl  train_log.jsonl  filter.jsonl
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from cpt_bench.outputs.curves import CURVES_CSV
from cpt_bench.outputs.flips import FlipRow, Flips, ItemOutcome, StageOutcomes, chance_level, flip_rows
from cpt_bench.outputs.records import HARNESS_PREFIX, StageRecord

RUN_JSON = "run.json"
MATRIX_CSV = "matrix.csv"
FLIPS_CSV = "flips.csv"
METRICS_JSON = "metrics.json"
SUMMARY_TXT = "summary.txt"
STAGE_JSON = "stage.json"  # written last: marks a stage complete
WANDB_RUN_ID = "wandb/run_id"  # the run's W&B id: a resumed run logs into the same W&B run
RESULT_FILES = [MATRIX_CSV, FLIPS_CSV, METRICS_JSON, "heatmap.png", "curves.png", SUMMARY_TXT, CURVES_CSV]
MATRIX_COLUMNS = ["stage", "trained_task", "eval_task", "accuracy", "n"]
# flips.csv (outputs/flips.py): counts, then shares and the chance-corrected estimates (blank: undefined)
FLIPS_COLUMNS = ["stage", "trained_task", "eval_task", "since", "reference_stage", "n", "correct_before",
                 "correct_after", "correct_to_wrong", "wrong_to_correct", "lost_share", "chance",
                 "forgotten_corrected", "gained_corrected", "lost_share_corrected"]


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


# What reading a truncated, garbled or wrongly shaped record raises (a list where a dict belongs
# raises AttributeError on `.get`); every reader that names a damaged file catches these.
DAMAGED = (OSError, ValueError, KeyError, TypeError, AttributeError)


def why(exc: Exception) -> str:
    """What is wrong with a file, in a few words: the OS's reason, or the parser's."""
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"


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


# --- per-item flips (outputs/flips.py) ---------------------------------------------------------


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def flips_csv_row(row: FlipRow) -> dict:
    f, cc = row.flips, row.corrected
    return {"stage": row.stage, "trained_task": row.trained_task, "eval_task": row.eval_task, "since": row.since,
            "reference_stage": row.reference_stage, "n": f.n, "correct_before": f.correct_before,
            "correct_after": f.correct_after, "correct_to_wrong": f.correct_to_wrong,
            "wrong_to_correct": f.wrong_to_correct, "lost_share": _number(f.lost_share),
            "chance": _number(row.chance), "forgotten_corrected": _number(cc.forgotten if cc else None),
            "gained_corrected": _number(cc.gained if cc else None),
            "lost_share_corrected": _number(cc.lost_share if cc else None)}


def write_flips_csv(path: Path, rows: Sequence[FlipRow]) -> None:
    """flips.csv in `FLIPS_COLUMNS`, shares and estimates with six decimals."""
    with open(path.with_name(f".{path.name}.{os.getpid()}.tmp"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FLIPS_COLUMNS)
        writer.writeheader()
        writer.writerows(flips_csv_row(r) for r in rows)
    Path(f.name).replace(path)


def read_flips_csv(path: Path) -> list[FlipRow]:
    """flips.csv's rows (the derived columns are recomputed from the counts and the chance level)."""
    with open(path, newline="") as f:
        return [FlipRow(stage=int(r["stage"]), trained_task=r["trained_task"], eval_task=r["eval_task"],
                        since=r["since"], reference_stage=int(r["reference_stage"]),
                        flips=Flips(*(int(r[k]) for k in ("n", "correct_before", "correct_after", "correct_to_wrong",
                                                          "wrong_to_correct"))),
                        chance=float(r["chance"]) if r["chance"] else None)
                for r in csv.DictReader(f)]


def read_outcomes(path: Path) -> list[ItemOutcome]:
    """A task's eval records (`<stage>/eval/<task>.jsonl`) as item outcomes, in file order; an
    item is correct when its 0/1 score is (at least 0.5)."""
    return [ItemOutcome(r["prompt"], r["answer"], r["score"] >= 0.5) for r in read_jsonl(path)]


def stage_outcomes(run_dir: Path, record: StageRecord) -> StageOutcomes:
    """A completed stage's per-item results, read back from its eval folder: every evaluated
    task that has eval records; `harness:<task>` columns have none (lm-eval scores its own items)."""
    folder = stage_dir(run_dir, record.stage, record.trained_task) / "eval"
    tasks = [t for t in record.accuracy if not t.startswith(HARNESS_PREFIX)]
    return StageOutcomes(record.stage, record.trained_task, {t: read_outcomes(folder / f"{t}.jsonl") for t in tasks},
                         where=str(folder.relative_to(run_dir)))


def write_flips(run_dir: Path, stages: Sequence[StageRecord], tasks: Mapping[str, object]) -> list[FlipRow]:
    """flips.csv of the completed `stages` (the matrix's rows, row 0 first), recomputed from their
    eval records on disk, so a resumed run counts the stages an earlier process ran; `tasks`
    (the benchmark's `Task`s, by name) give the chance levels. Returns the rows written."""
    outcomes = [stage_outcomes(run_dir, r) for r in stages]
    evaluated = {t for o in outcomes for t in o.tasks}
    rows = flip_rows(outcomes, {t: chance_level(tasks[t]) for t in evaluated if t in tasks})
    write_flips_csv(run_dir / FLIPS_CSV, rows)
    return rows
