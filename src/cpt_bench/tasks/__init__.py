"""Benchmarks: a named set of tasks, their default order and a held-out general suite."""

from __future__ import annotations

import random
from collections.abc import Callable

from cpt_bench.errors import ConfigError, unknown
from cpt_bench.tasks.base import Benchmark, Example, Task


def _toy(cfg) -> Benchmark:
    from cpt_bench.tasks.toy import COT_INSTRUCTION, DIRECT_INSTRUCTION, toy_tasks

    tasks = toy_tasks(seed=cfg.seed, train_size=cfg.train_size, test_size=cfg.test_size)
    unknown = [t for t in [*cfg.tasks, *cfg.general] if t not in tasks]
    if unknown:
        raise ConfigError(f"benchmark toy has no task {unknown[0]!r}; its tasks: {', '.join(tasks)}")
    return Benchmark("toy", tasks, list(cfg.tasks), list(cfg.general), COT_INSTRUCTION, DIRECT_INSTRUCTION)


def _natural(cfg) -> Benchmark:
    from cpt_bench.tasks.natural import COT_INSTRUCTION, SHORT_ANSWER, natural_tasks

    tasks = natural_tasks(seed=cfg.seed, train_size=cfg.train_size, test_size=cfg.test_size)
    missing = [t for t in [*cfg.tasks, *cfg.general] if t not in tasks]
    if missing:
        raise ConfigError(f"benchmark natural has no task {missing[0]!r}; its tasks: {', '.join(tasks)}")
    return Benchmark("natural", tasks, list(cfg.tasks), list(cfg.general), COT_INSTRUCTION, SHORT_ANSWER,
                     separator="\n")


def _mllm_cl7(cfg) -> Benchmark:
    from cpt_bench.tasks.mllm import build_mllm_cl7

    return build_mllm_cl7(cfg)


def _custom(cfg) -> Benchmark:
    from cpt_bench.tasks.custom import build_custom

    return build_custom(cfg)


BENCHMARKS: dict[str, Callable[..., Benchmark]] = {"toy": _toy, "natural": _natural, "mllm_cl7": _mllm_cl7,
                                                   "custom": _custom}


def build_benchmark(cfg) -> Benchmark:
    """Instantiate the benchmark named by `cfg.name` (cheap: no data is generated yet)."""
    if cfg.name not in BENCHMARKS:
        raise unknown("benchmark", cfg.name, BENCHMARKS)
    return BENCHMARKS[cfg.name](cfg)


def _shuffled(tasks: list[str], seed: int) -> list[str]:
    out = list(tasks)
    random.Random(seed).shuffle(out)
    return out


# order.name (config.OrderName) -> the sequence, from the benchmark's own order and order.seed
ORDERS: dict[str, Callable[[list[str], int], list[str]]] = {
    "default": lambda tasks, seed: list(tasks),
    "reverse": lambda tasks, seed: list(reversed(tasks)),
    "shuffled": _shuffled,
}


def resolve_order(benchmark: Benchmark, order_cfg) -> list[str]:
    """The task sequence to train, validated against the benchmark's CPT tasks."""
    valid = benchmark.order
    tasks = list(order_cfg.tasks) if order_cfg.tasks is not None else ORDERS[order_cfg.name](valid, order_cfg.seed)
    names = ", ".join(valid)
    if not tasks:
        raise ConfigError(f"the task order is empty; valid tasks: {names}")
    unknown_tasks = [t for t in tasks if t not in valid]
    if unknown_tasks:
        raise ConfigError(f"unknown task {unknown_tasks[0]!r} in the order; valid tasks: {names}")
    dupes = sorted({t for t in tasks if tasks.count(t) > 1})
    if dupes:
        raise ConfigError(f"task {dupes[0]!r} appears twice in the order; valid tasks: {names}")
    return tasks


__all__ = ["Benchmark", "ConfigError", "Example", "Task", "build_benchmark", "resolve_order"]
