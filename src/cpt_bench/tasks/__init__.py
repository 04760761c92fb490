"""Benchmarks: a named set of tasks, their default order and a held-out general suite."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from cpt_bench.tasks.base import ConfigError, Example, Task


@dataclass
class Benchmark:
    name: str
    tasks: dict[str, Task]  # CPT tasks and general-suite tasks, by name
    order: list[str]  # the benchmark's own CPT order
    general: list[str]
    cot_instruction: str  # appended to each question when cot=true
    direct_instruction: str  # appended when cot=false
    separator: str = " "

    def prompt_style(self, cot: bool):
        from cpt_bench.prompts import PromptStyle

        return PromptStyle(cot, self.cot_instruction, self.direct_instruction, self.separator)


def _toy(cfg) -> Benchmark:
    from cpt_bench.tasks.toy import COT_INSTRUCTION, DIRECT_INSTRUCTION, toy_tasks

    tasks = toy_tasks(seed=cfg.seed, train_size=cfg.train_size, test_size=cfg.test_size)
    unknown = [t for t in [*cfg.tasks, *cfg.general] if t not in tasks]
    if unknown:
        raise ConfigError(f"benchmark toy has no task {unknown[0]!r}; its tasks: {', '.join(tasks)}")
    return Benchmark("toy", tasks, list(cfg.tasks), list(cfg.general), COT_INSTRUCTION, DIRECT_INSTRUCTION)


def _mllm_cl7(cfg) -> Benchmark:
    from cpt_bench.tasks.mllm import build_mllm_cl7

    return build_mllm_cl7(cfg)


BENCHMARKS: dict[str, Callable[..., Benchmark]] = {"toy": _toy, "mllm_cl7": _mllm_cl7}


def build_benchmark(cfg) -> Benchmark:
    """Instantiate the benchmark named by `cfg.name` (cheap: no data is generated yet)."""
    if cfg.name not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {cfg.name!r}; available: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[cfg.name](cfg)


def resolve_order(benchmark: Benchmark, order_cfg) -> list[str]:
    """The task sequence to train, validated against the benchmark's CPT tasks."""
    valid = benchmark.order
    if order_cfg.tasks is not None:
        tasks = list(order_cfg.tasks)
    elif order_cfg.name == "default":
        tasks = list(valid)
    elif order_cfg.name == "reverse":
        tasks = list(reversed(valid))
    elif order_cfg.name == "shuffled":
        tasks = list(valid)
        random.Random(order_cfg.seed).shuffle(tasks)
    else:
        raise ConfigError(
            f"unknown order {order_cfg.name!r}; use default, reverse, shuffled or order.tasks=[...]"
        )
    names = ", ".join(valid)
    if not tasks:
        raise ConfigError(f"the task order is empty; valid tasks: {names}")
    unknown = [t for t in tasks if t not in valid]
    if unknown:
        raise ConfigError(f"unknown task {unknown[0]!r} in the order; valid tasks: {names}")
    dupes = sorted({t for t in tasks if tasks.count(t) > 1})
    if dupes:
        raise ConfigError(f"task {dupes[0]!r} appears twice in the order; valid tasks: {names}")
    return tasks


__all__ = ["Benchmark", "ConfigError", "Example", "Task", "build_benchmark", "resolve_order"]
