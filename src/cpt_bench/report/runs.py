"""The runs a report compares: finding run directories, reading them, labelling variants.

A run's *variant* is the set of config keys that set it apart from the other runs compared
(seed excluded); runs of one variant are averaged over seeds.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpt_bench.errors import ReportError
from cpt_bench.metrics import HEADLINE_METRICS
from cpt_bench.outputs.flips import FlipRow
from cpt_bench.outputs.records import Compute, Diagnostics, HarnessResult, RolloutStats, StageRecord
from cpt_bench.outputs.rundir import (
    DAMAGED,
    FLIPS_CSV,
    MATRIX_CSV,
    METRICS_JSON,
    RUN_JSON,
    STAGE_JSON,
    read_flips_csv,
    read_json,
    read_matrix_csv,
    why,
)
from cpt_bench.report.text import relative

log = logging.getLogger("cpt_bench.report")

# The built-in base model's recipe seed: a base model drawn from the same recipe, a source of
# variation like the training seed (variants average over both; the matched-gain bootstrap
# resamples base models as clusters).
BASE_KEY = "model.recipe.seed"
COMPUTE = ["optimizer_steps", "generated_tokens", "train_seconds", "wall_seconds"]  # shown per variant
# Config keys that say how a run was executed or logged, not what was measured: two runs
# that differ only here are the same experiment. `seed` is what the variant averages over.
NOT_EXPERIMENT = ("seed", BASE_KEY, "hydra", "logger", "launcher", "model.cache_dir", "overwrite", "threads",
                  "checkpoint", "deepspeed", "eval.batch_size")
PARADIGM_RANK = {"sft": 0, "rft": 1}  # table and comparison order; others follow by name
SKIP_DIRS = {"wandb", "stages", "calibration"}  # never hold a run of the study (calibration: a
# calibrated study's one-seed probes, which must never enter a mean; `cpt-bench-report D/calibration` reads them)


@dataclass(frozen=True)
class Unread:
    """A file of a run the report could not read, and what that leaves out of the report."""

    path: Path
    problem: str  # "missing", or what was wrong with it
    leaves_out: str  # the report's part it was needed for

    def line(self, base: Path | None = None) -> str:
        return f"{relative(self.path, base)}: {self.problem}; left out: {self.leaves_out}"


@dataclass
class RunRecord:
    """What the report needs from one run directory."""

    path: Path
    status: str  # running | finished | failed
    config: dict
    seed: int | None
    metrics: dict
    matrix: list[dict]  # matrix.csv rows
    order: list[str]
    general: list[str]
    compute: Compute | None  # None: a run.json without a compute block (nothing to report)
    variant: str = ""
    diagnostics: dict[int, Diagnostics] = field(default_factory=dict)  # stage -> its stage.json diagnostics
    harness: dict[int, HarnessResult] = field(default_factory=dict)  # stage -> its eval.harness scores
    flips: list[FlipRow] = field(default_factory=list)  # flips.csv rows (none: a run from before it)
    experiment: str | None = None  # the +experiment preset it was composed with (run.json)
    rollouts: dict[int, RolloutStats] = field(default_factory=dict)  # stage -> a paradigm's rollout step
    unread: list[Unread] = field(default_factory=list)  # its files the report could not read
    hardware: dict = field(default_factory=dict)  # run.json's: where it ran
    versions: dict = field(default_factory=dict)  # run.json's: the packages it ran with

    def setting(self, dotted: str, default=None):
        """A config value by its dotted key ("paradigm.kl_coef"); `default` where the run has none."""
        return _get(self.config, dotted, default)

    @property
    def paradigm(self) -> str:
        return str(_get(self.config, "paradigm.name") or "unknown")

    @property
    def family(self) -> str:
        """The series a run belongs to when paradigms are compared along a learning-rate grid:
        its paradigm and what else sets its variant apart, but not the learning rate nor the
        schedule (the series hold sequential runs only): "rft kl_coef=0.01"; just the paradigm
        when nothing else varies."""
        keys = [(part, part.partition("=")[0]) for part in self.variant.split() if "=" in part]
        rest = [part for part, key in keys
                if key not in ("paradigm", "schedule") and not key.endswith("learning_rate")]
        return " ".join([self.paradigm, *rest])

    @property
    def lr(self) -> float | None:
        return _get(self.config, "paradigm.learning_rate")

    @property
    def schedule(self) -> str:
        return str(_get(self.config, "schedule") or "sequential")

    @property
    def joint(self) -> bool:
        return self.schedule == "joint"

    @property
    def finished(self) -> bool:
        return self.status == "finished"


# --- loading (I/O) ----------------------------------------------------------------------------


def find_runs(paths: Iterable[Path | str], skipped: list[Unread] | None = None) -> list[Path]:
    """Run directories (holding run.json) at or under each path, in natural order.

    A run with no metrics.json has not finished a stage yet and has nothing to report: it is
    skipped, and named in `skipped` when one is given (a warning otherwise). Raises ReportError
    for a path that does not exist or holds no reportable run, so a typo is not mistaken for an
    empty sweep.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise ReportError(f"{path}: no such directory")
        here = []
        for root, dirs, files in os.walk(path):
            if RUN_JSON in files:
                dirs.clear()  # a run dir holds no further runs (only stages/, wandb/, .hydra/)
                if (Path(root) / METRICS_JSON).exists():
                    here.append(Path(root))
                elif skipped is not None:
                    skipped.append(Unread(Path(root) / METRICS_JSON, "missing (no stage finished)", "the whole run"))
                else:
                    log.warning("skipping %s: no metrics.json (no stage finished)", root)
                continue
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        if not here:
            raise ReportError(f"{path}: no run with results (run.json and metrics.json) found")
        found += sorted(here, key=natural_key)
    return list(dict.fromkeys(p.resolve() for p in found))  # a run named twice counts once


def _optional(path: Path, reader, leaves_out: str, unread: list[Unread]):
    """`reader(path)`, or None with the file named in `unread` when it is missing or damaged: one
    file must not hide the rest of its run."""
    if not path.exists():
        unread.append(Unread(path, "missing", leaves_out))
        return None
    try:
        return reader(path)
    except DAMAGED as exc:
        unread.append(Unread(path, f"unreadable ({why(exc)})", leaves_out))
        return None


def load_run(path: Path) -> RunRecord:
    """One run directory. run.json and metrics.json are the run itself (a damaged one raises); any
    other file that is missing or damaged is recorded in `unread` with the part it leaves out."""
    info = read_json(path / RUN_JSON)
    metrics = read_json(path / METRICS_JSON)
    config = info.get("config") or {}
    unread: list[Unread] = []
    matrix = _optional(path / MATRIX_CSV, read_matrix_csv, "this run's heatmap", unread) or []
    flips = _optional(path / FLIPS_CSV, read_flips_csv, "this run in 'Forgetting item by item'", unread) or []
    stages = [r for p in sorted((path / "stages").glob(f"*/{STAGE_JSON}"))
              if (r := _optional(p, lambda q: StageRecord.from_json(read_json(q)),
                                 "this stage's diagnostics, harness scores and rollouts", unread))]
    return RunRecord(
        path=path,
        status=info.get("status") or "unknown",
        config=config,
        seed=info.get("seed", config.get("seed")),
        metrics=metrics,
        matrix=matrix,
        order=list(info.get("order") or metrics.get("order") or []),
        general=list(info.get("general_suite") or metrics.get("general_suite") or []),
        compute=Compute.from_json(info["compute"]) if info.get("compute") else None,
        diagnostics={r.stage: r.diagnostics for r in stages},
        harness={r.stage: r.harness for r in stages if r.harness},
        flips=flips,
        experiment=info.get("experiment"),
        rollouts={r.stage: r.rollouts for r in stages if r.rollouts},
        unread=unread,
        hardware=dict(info.get("hardware") or {}),
        versions=dict(info.get("versions") or {}),
    )


@dataclass
class Study:
    """The runs a report reads, and what it could not read: whole runs (a damaged run.json or
    metrics.json, no stage finished) and single files of the runs it kept (`RunRecord.unread`)."""

    runs: list[RunRecord]
    skipped: list[Unread] = field(default_factory=list)

    @property
    def unread(self) -> list[Unread]:
        return [*self.skipped, *(u for r in self.runs for u in r.unread)]


def read_study(paths: Iterable[Path | str]) -> Study:
    """Every run under `paths`, labelled with its variant; each file it could not read is named
    on the terminal (a warning) and kept in the study for the report."""
    skipped: list[Unread] = []
    runs = []
    for path in find_runs(paths, skipped):
        try:
            runs.append(load_run(path))
        except DAMAGED as exc:  # a damaged run must not hide the rest
            skipped.append(Unread(path, f"unreadable run.json or metrics.json ({why(exc)})",
                                  "the whole run"))
    if not runs:
        raise ReportError("no readable runs" + (f" ({skipped[0].line()})" if skipped else ""))
    for run, label in zip(runs, variant_labels([r.config for r in runs])):
        run.variant = label
    study = Study(runs, skipped)
    for u in study.unread:
        log.warning("%s", u.line())
    return study


def load_runs(paths: Iterable[Path | str]) -> list[RunRecord]:
    """Load every run under `paths` and label it with its variant (`read_study` without what it
    could not read)."""
    return read_study(paths).runs


def load_report_csv(path: Path) -> list[RunRecord]:
    """The runs of a report.csv (one row per run, as `write_report` writes it), so a study whose
    run directories are gone can be re-analysed: headline metrics, compute and the variant
    labels of the report that wrote it; no matrices, diagnostics or harness scores. The base
    model (column `base_model`) is the `model.recipe.seed` it came from, blank for one base."""
    def number(text: str, kind=float):
        return kind(float(text)) if text not in ("", None) else None

    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise ReportError(f"{path}: {exc.strerror}") from exc
    missing = {"run_dir", "variant", "paradigm", "seed", "lr", *HEADLINE_METRICS} - set(rows[0] if rows else {})
    if not rows or missing:
        raise ReportError(f"{path}: not a report.csv with runs (missing columns: {sorted(missing) or 'all rows'})")
    runs = []
    for row in rows:
        config: dict[str, Any] = {"paradigm": {"name": row["paradigm"], "learning_rate": number(row["lr"])},
                                  "schedule": row.get("schedule") or "sequential", "seed": number(row["seed"], int)}
        if row.get("base_model"):
            config["model"] = {"recipe": {"seed": number(row["base_model"], int)}}
        metrics = {k: number(row.get(k, "")) for k in HEADLINE_METRICS}
        metrics |= {k: number(row.get(k, ""), int) for k in ("stages_completed", "num_tasks")}
        spent = {k: number(row[k], float if k.endswith("seconds") else int) for k in COMPUTE if row.get(k)}
        compute = Compute(**spent) if spent else None  # blank: a run.json without a compute block
        runs.append(RunRecord(path=Path(row["run_dir"]), status=row.get("status") or "finished", config=config,
                              seed=config["seed"], metrics=metrics, matrix=[], order=[], general=[],
                              compute=compute, variant=row["variant"]))
    return runs


# --- pure logic: labels -----------------------------------------------------------------------

_MISSING = object()  # a key absent from a run's config (distinct from a null value)


def _get(d: dict, dotted: str, default=None):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return default
        d = d[part]
    return d


def _hashable(v):
    if isinstance(v, list | tuple):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return v


def flatten_config(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists become tuples so values can be compared and hashed."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten_config(value, dotted + "."))
        elif not isinstance(value, dict):
            out[dotted] = _hashable(value)
    return out


def _is_experiment_key(key: str) -> bool:
    return not any(key == k or key.startswith(k + ".") for k in NOT_EXPERIMENT)


def _short_names(keys: list[str], all_keys: list[str]) -> dict[str, str]:
    """The shortest dotted suffix of each key that no other config key ends with.

    `paradigm.kl_coef` -> `kl_coef`, but `order.seed` stays `order.seed` because `seed` alone
    would read as the training seed. A group choice `<group>.name` is written `<group>`, as in
    a Hydra override (`paradigm=rft`).
    """
    names = {}
    for key in keys:
        parts = key.split(".")
        if len(parts) == 2 and parts[1] == "name":
            names[key] = parts[0]
            continue
        for i in range(len(parts) - 1, -1, -1):
            suffix = ".".join(parts[i:])
            if not any(other != key and (other == suffix or other.endswith("." + suffix)) for other in all_keys):
                names[key] = suffix
                break
    return names


def _fmt_value(v) -> str:
    """Hydra override syntax, so a label reads like the command line that made the run."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, tuple):
        return "[" + ",".join(_fmt_value(x) for x in v) + "]"
    return str(v)


def varying_keys(configs: Sequence[dict]) -> list[str]:
    """The config keys that tell the runs apart, in config order.

    A key varies if two runs disagree on it (an absent key counts as its own value), unless it
    is excluded (NOT_EXPERIMENT) or it lives in a config group and is fixed by that group's
    choice, e.g. `paradigm.kl_coef` when every rft run has the same value: it is then a
    property of `paradigm=rft`, not a separate variable.
    """
    flats = [flatten_config(c) for c in configs]
    all_keys = list(dict.fromkeys(k for f in flats for k in f))
    varying = [k for k in all_keys if _is_experiment_key(k) and len({f.get(k, _MISSING) for f in flats}) > 1]

    def fixed_by_group_choice(key: str) -> bool:
        choice = key.split(".")[0] + ".name"
        if key == choice or "." not in key or choice not in all_keys:
            return False
        seen: dict[Any, set] = {}
        for f in flats:
            seen.setdefault(f.get(choice, _MISSING), set()).add(f.get(key, _MISSING))
        return all(len(values) == 1 for values in seen.values())

    return [k for k in varying if not fixed_by_group_choice(k)]


def variant_labels(configs: Sequence[dict]) -> list[str]:
    """A label per run from the keys that vary (seed excluded): "paradigm=rft kl_coef=0.0".

    Runs with the same label are one variant, averaged over seeds. When nothing but the seed
    varies, the label is the paradigm's name.
    """
    flats = [flatten_config(c) for c in configs]
    keys = varying_keys(configs)
    names = _short_names(keys, list(dict.fromkeys(k for f in flats for k in f)))
    labels = []
    for cfg, flat in zip(configs, flats):
        parts = [f"{names[k]}={_fmt_value(flat[k])}" for k in keys if k in flat]
        labels.append(" ".join(parts) or str(_get(cfg, "paradigm.name") or "run"))
    return labels


def base_model(config: dict):
    """The base model a run started from, as far as runs of one sweep differ in it."""
    return _get(config, BASE_KEY)


def natural_key(value) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(value))]


def paradigm_key(name: str) -> tuple:
    """A paradigm, or a family led by its paradigm's name, in table order."""
    return PARADIGM_RANK.get(name.split(" ")[0], len(PARADIGM_RANK)), name
