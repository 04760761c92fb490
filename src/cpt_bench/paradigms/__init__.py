"""Paradigms: how one stage trains the model on one task.

A paradigm is a thin adapter over a TRL trainer. The stage loop hands it the model as it
stands, the task's training items and a `StageContext`; it returns the trained model and
what the stage cost. Adding a paradigm = one module here + a schema in config.py + a YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from cpt_bench.tasks.base import Example, Task


@dataclass
class StageContext:
    index: int  # 1-based stage number
    total: int  # number of stages in the sequence
    task: Task
    work_dir: Path  # scratch space for the trainer (logs; checkpoints are saved by the loop)
    seed: int
    use_cpu: bool
    bf16: bool
    deepspeed: dict | None = None
    # called with (global_step, max_steps, logs) on every trainer log event
    on_log: Callable[[int, int, dict[str, float]], None] = lambda step, total, logs: None


@dataclass
class StageResult:
    model: Any
    optimizer_steps: int
    train_seconds: float
    metrics: dict[str, float] = field(default_factory=dict)


class Paradigm(Protocol):
    name: str

    def train_stage(self, model, tokenizer, examples: list[Example], ctx: StageContext) -> StageResult: ...


def build_paradigm(cfg) -> Paradigm:
    from cpt_bench.tasks import ConfigError

    if cfg.name == "sft":
        from cpt_bench.paradigms.sft import SFT

        return SFT(cfg)
    raise ConfigError(f"unknown paradigm {cfg.name!r}; available: sft")
