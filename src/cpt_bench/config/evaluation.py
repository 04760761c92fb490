"""The `eval` node: how every stage (and the base) is evaluated, the general ability by a
harness, output drift, and the evaluation points inside each stage (`inner_points`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpt_bench.choices import GenerationBackend, HarnessBackend, require
from cpt_bench.errors import ConfigError


@dataclass
class HarnessConfig:
    """General ability by a standard harness, after the base model and every stage
    (model/harness.py): each task's primary metric becomes a general-suite column
    `harness:<task>` of the matrix, counted in the general change like the built-in suite."""

    backend: HarnessBackend = HarnessBackend.none
    tasks: list[str] = field(default_factory=list)  # the harness's task (or group) names
    include_path: str | None = None  # a folder of task YAMLs beside the harness's own (e.g. local JSON data)
    num_fewshot: int | None = None  # null = each task's own
    limit: float | None = None  # items per task: a count (>= 1) or a fraction (< 1); null = all
    batch_size: int = 16
    apply_chat_template: bool = False  # render prompts with the model's chat template
    gen_kwargs: dict[str, Any] = field(default_factory=dict)  # for generate-until tasks, e.g. {max_gen_toks: 256}
    seed: int = 0  # the harness's few-shot sampling and random seeds

    def validate(self, at: str = "eval.harness") -> None:
        if self.backend == HarnessBackend.none:
            return
        if not self.tasks:
            raise ConfigError(f"{at}.backend={self.backend} needs {at}.tasks=[...] (the harness's task names)")
        require(self.batch_size > 0, f"{at}.batch_size", self.batch_size, "> 0")
        require(self.num_fewshot is None or self.num_fewshot >= 0, f"{at}.num_fewshot", self.num_fewshot,
                ">= 0 or null")
        require(self.limit is None or self.limit > 0, f"{at}.limit", self.limit, "> 0 or null (every item)")
        if self.include_path is not None and not Path(self.include_path).expanduser().is_dir():
            raise ConfigError(f"{at}.include_path {self.include_path} is not a folder of task YAMLs")


@dataclass
class EvalConfig:
    batch_size: int = 256
    max_new_tokens: int = 32
    general: bool = True  # also evaluate the benchmark's general suite
    # the generation engine of evaluation and RIF rollouts; vllm needs launcher=torchrun
    backend: GenerationBackend = GenerationBackend.hf
    # output drift after each stage: KL to the base on this many sampled prompts of the trained
    # task and of the general suite (drift.py); 0 = off
    kl_samples: int = 64
    kl_seed: int = 0
    harness: HarnessConfig = field(default_factory=HarnessConfig)
    # evaluation points inside each stage besides its end: K evenly spaced optimizer steps at
    # which every task is evaluated too (curves.csv, outputs/curves.py); 0 = the stage's end only
    inner_points: int = 0

    def validate(self, at: str = "eval") -> None:
        require(self.batch_size > 0, f"{at}.batch_size", self.batch_size, "> 0")
        require(self.inner_points >= 0, f"{at}.inner_points", self.inner_points, ">= 0")
        require(self.kl_samples >= 0, f"{at}.kl_samples", self.kl_samples, ">= 0")
        require(self.max_new_tokens > 0, f"{at}.max_new_tokens", self.max_new_tokens, "> 0")
        self.harness.validate(f"{at}.harness")
