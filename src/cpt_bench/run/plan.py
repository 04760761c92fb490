"""Planning a run: everything that can be checked without data or a model, before anything runs.

`plan()` turns a composed config into the typed `Config` (validated node by node), builds the
benchmark (no data is drawn yet) and the task order, checks the checkpoints of
schedule=evaluate, the multi-node rendezvous, vLLM's presence and the harness (installed, its
tasks known, their data readable here), and builds the paradigm (GRPO's batch arithmetic);
every failure is one `ConfigError` line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cpt_bench.builtin import BUILTIN_MODELS
from cpt_bench.choices import FilterName, GenerationBackend, LauncherName, Schedule
from cpt_bench.config import Config, validate
from cpt_bench.errors import ConfigError, unknown
from cpt_bench.model.harness import check_harness
from cpt_bench.paradigms import build_paradigm
from cpt_bench.paradigms.base import Paradigm
from cpt_bench.run.launch import rendezvous
from cpt_bench.tasks import Benchmark, build_benchmark, resolve_order


@dataclass
class Plan:
    """A validated config with what it names: the benchmark, the task order, the paradigm."""

    config: Config
    benchmark: Benchmark
    order: list[str]
    paradigm: Paradigm


def plan(cfg) -> Plan:
    """Validate everything that needs no data and no model; raises ConfigError in one line.
    `cfg`: a composed config (DictConfig) or a `Config`."""
    config = validate(cfg)
    config.paradigm.settle(config)  # e.g. GRPO's KL reference under LoRA: what the run will really do
    if config.model.builtin is not None and config.model.builtin not in BUILTIN_MODELS:
        raise unknown("built-in model", config.model.builtin, BUILTIN_MODELS)
    benchmark = build_benchmark(config.benchmark)
    order = resolve_order(benchmark, config.order)
    check_checkpoints(config, order)
    if config.launcher.name == LauncherName.torchrun and config.launcher.nnodes > 1:
        rendezvous(config.launcher)  # where the nodes meet: known now, not after stage 0 has run
    if config.eval.backend == GenerationBackend.vllm:
        from cpt_bench.model.vllm_engine import require_vllm

        require_vllm("eval.backend=vllm")
    check_harness(config.eval.harness)  # installed, every task known, its data readable here
    paradigm = build_paradigm(config.paradigm, config.launcher.world_size)  # e.g. GRPO's batch arithmetic
    return Plan(config, benchmark, order, paradigm)


def check_checkpoints(cfg: Config, order: list[str]) -> None:
    """schedule=evaluate needs one existing checkpoint folder per task; other schedules none."""
    given = list(cfg.checkpoints) if cfg.checkpoints is not None else None
    if cfg.schedule != Schedule.evaluate:
        if given:
            raise ConfigError(f"checkpoints are only read with schedule=evaluate, not schedule={cfg.schedule}")
        return
    if not given or len(given) != len(order):
        raise ConfigError(f"schedule=evaluate needs checkpoints=[...] with one folder per task of the order "
                          f"({len(order)}: {', '.join(order)}), not {len(given or [])}")
    if cfg.filter.name != FilterName.none:
        raise ConfigError(f"schedule=evaluate trains nothing, so it filters nothing: drop filter={cfg.filter.name}")
    for i, (task, path) in enumerate(zip(order, given), start=1):
        if not (Path(path) / "config.json").is_file():
            raise ConfigError(f"checkpoint {i} (after task {task!r}) is not a model folder: {path}")
