"""What crosses the process boundary between the controller and a launched step (launch.py ->
worker.py): the run's `Config` once (YAML), one typed spec per step in, typed results out,
each as a JSON file.

Every record is a dataclass written by `write_record` and read back by `read_record` into the
same class, so neither side reads a file by string keys and a field added on one side is seen
on the other (a missing or unknown field fails loudly instead of reading as a default).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TypeVar

from omegaconf import OmegaConf

from cpt_bench.config import BENCHMARK_SCHEMAS, Config, validate
from cpt_bench.continual import method_spec
from cpt_bench.outputs.rundir import read_json, write_json, write_text
from cpt_bench.paradigms import paradigm_spec
from cpt_bench.paradigms.rollouts import Rollouts

R = TypeVar("R")


@dataclass
class EvalSpec:
    """Evaluate `model_path` on every test set; with `drift_from`, also measure the drift from it."""

    dir: str  # the stage's eval/ folder: shard-<rank>.jsonl and drift.json go here
    model_path: str
    seed: int
    drift_from: str | None = None  # the base model
    task: str | None = None  # the trained task (output drift is measured on its prompts)
    base_samples: str | None = None  # the folder of the forward KL's draws from the base (steps.base_samples_dir)
    # then the stage's inner points (eval.inner_points): each snapshot into its folder, no drift
    points: list[str] = field(default_factory=list)
    point_dirs: list[str] = field(default_factory=list)


POINT_SECONDS = "seconds.json"  # an inner point's folder: rank 0's seconds for it, read by the controller


@dataclass
class RolloutSpec:
    """K rollouts per item with `model_path`, the stage's start: RIF's on every training item of
    the stage, or a paradigm's rollout step on the kept ones (`item_indices`). The sampling
    settings are a `paradigms.rollouts.Rollouts`, flat."""

    stage: int
    task: str
    dir: str
    seed: int
    model_path: str
    purpose: str  # Rollouts.purpose: names the shard files
    num_rollouts: int
    temperature: float
    max_new_tokens: int | None
    prompts_per_batch: int
    item_indices: list[int] | None = None  # None: every item of the stage

    @classmethod
    def of(cls, rollouts: Rollouts, **fields) -> RolloutSpec:
        return cls(**fields, **asdict(rollouts))

    @property
    def rollouts(self) -> Rollouts:
        return Rollouts(self.num_rollouts, self.temperature, self.max_new_tokens, self.prompts_per_batch,
                        self.purpose)


@dataclass
class TrainSpec:
    """Train one stage from `start_path` on the stage's items at `item_indices` (after RIF)."""

    stage: int
    task: str
    dir: str
    seed: int
    base_path: str
    start_path: str
    item_indices: list[int]
    rollouts_file: str | None = None  # the paradigm's rollout step (rollouts.jsonl), in item order


@dataclass
class TrainResult:
    """What a training step reports back (rank 0's, tokens summed over ranks)."""

    optimizer_steps: int
    generated_tokens: int
    train_seconds: float
    save_seconds: float
    metrics: dict[str, float] = field(default_factory=dict)  # the paradigm's per-stage means


@dataclass
class EvalShard:
    """One rank's evaluation: its items' global indices and their graded records (`EvalRecord`)."""

    indices: list[int]
    records: list[dict]


@dataclass
class RolloutShard:
    """One rank's rollouts: its items' indices, their K completions and scores each, the tokens
    generated."""

    indices: list[int]
    completions: list[list[str]]
    scores: list[list[float]]
    generated_tokens: int


SPECS = {"evaluate": EvalSpec, "rollout": RolloutSpec, "train": TrainSpec}  # the worker's steps


def write_record(path: Path, record) -> None:
    write_json(path, asdict(record))


def read_record(path: Path, cls: type[R]) -> R:
    data = read_json(path)
    names = {f.name for f in fields(cls)}
    if set(data) - names:
        raise ValueError(f"{path}: fields {sorted(set(data) - names)} are not part of {cls.__name__}")
    return cls(**data)


def write_config(path: Path, cfg: Config) -> None:
    """The run's resolved config, as every launched step reads it back (`read_config`)."""
    write_text(path, OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def read_config(path: Path) -> Config:
    """The typed, validated `Config` of a file `write_config` wrote: the paradigm's, the
    method's and the benchmark's nodes typed by their names, then every rule checked as the controller did."""
    data = OmegaConf.load(path)
    node = OmegaConf.merge(OmegaConf.structured(Config), {k: v for k, v in data.items()
                                                            if k not in ("paradigm", "benchmark", "cl")})
    node.paradigm = OmegaConf.merge(OmegaConf.structured(paradigm_spec(data.paradigm.name).schema), data.paradigm)
    node.cl = OmegaConf.merge(OmegaConf.structured(method_spec(data.cl.name).schema), data.cl)
    node.benchmark = OmegaConf.merge(OmegaConf.structured(BENCHMARK_SCHEMAS[data.benchmark.name]), data.benchmark)
    return validate(node)
