"""Planning a run: everything that can be checked without data or a model, before anything runs.

`plan()` turns a composed config into the typed `Config` (validated node by node), builds the
benchmark (no data is drawn yet) and the task order, checks the checkpoints of
schedule=evaluate, the multi-node rendezvous, and builds the paradigm (GRPO's batch arithmetic);
every failure is one `ConfigError` line. Planning a run on the machine it is on (`here`, not
the preflight, which plans for a node described to it) also checks that machine: vLLM and the
harness installed (its tasks known, their data readable here), the ranks against its GPUs or
CPU cores, the stage seeds against NumPy's range, the dtype against its device. These are not
in the config's `validate()`, which launched workers and tests also run on other machines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cpt_bench.builtin import BUILTIN_MODELS
from cpt_bench.choices import DType, FilterName, GenerationBackend, LauncherName, Schedule
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


SEED_RANGE = (0, 2**32 - 1)  # numpy.random.seed's, which transformers.set_seed calls with each stage's seed


def plan(cfg, here: bool = True) -> Plan:
    """Validate everything that needs no data and no model; raises ConfigError in one line.
    `cfg`: a composed config (DictConfig) or a `Config`; `here`: the run is on this machine."""
    config = validate(cfg)
    config.paradigm.settle(config)  # e.g. GRPO's KL reference under LoRA: what the run will really do
    if config.model.builtin is not None and config.model.builtin not in BUILTIN_MODELS:
        raise unknown("built-in model", config.model.builtin, BUILTIN_MODELS)
    benchmark = build_benchmark(config.benchmark)
    order = resolve_order(benchmark, config.order)
    check_checkpoints(config, order)
    check_seeds(config, 1 if config.schedule == Schedule.joint else len(order))
    if here:
        if config.launcher.name == LauncherName.torchrun and config.launcher.nnodes > 1:
            rendezvous(config.launcher)  # where the nodes meet: known now, not after stage 0 has run
        check_installed(config)
        check_node(config)
    paradigm = build_paradigm(config.paradigm, config.launcher.world_size)  # e.g. GRPO's batch arithmetic
    return Plan(config, benchmark, order, paradigm)


def check_installed(config: Config) -> None:
    """vLLM where the run asks for it; the harness installed, every task known, its data readable here."""
    from cpt_bench.model.vllm_engine import require_vllm

    if config.eval.backend == GenerationBackend.vllm:
        require_vllm("eval.backend=vllm")
    if getattr(config.paradigm, "use_vllm", False):
        require_vllm("paradigm.use_vllm=true")
    check_harness(config.eval.harness)


def check_seeds(config: Config, stages: int) -> None:
    """`seed` and every stage seed (seed + stage) inside NumPy's range (a seed outside it would
    end in a traceback after the run directory is made); any machine, so the preflight too."""
    low, high = SEED_RANGE
    if not (low <= config.seed and config.seed + stages <= high):
        raise ConfigError(f"seed={config.seed} is outside NumPy's seed range: seed and the {stages} stage seeds "
                          f"(seed + 1 .. seed + {stages}) must lie in [{low}, {high}]; use a seed in "
                          f"[{low}, {high - stages}]")
    # the other seeds that reach NumPy (the rest go to random.Random or torch, which take any int)
    others = {"model.align.seed": config.model.align.seed if config.model.builtin == "smollm2_135m_aligned" else 0,
              "eval.harness.seed": config.eval.harness.seed if config.eval.harness.backend != "none" else 0}
    for key, value in others.items():
        if not low <= value <= high:
            raise ConfigError(f"{key}={value} is outside NumPy's seed range: use a seed in [{low}, {high}]")


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_node(config: Config, gpus: int | None = None, cores: int | None = None) -> None:
    """What this machine cannot run: more ranks per node than its GPUs (a CUDA node) or its
    usable CPU cores (gloo ranks on a CPU node), a dtype its device cannot compute in."""
    import torch

    gpus = torch.cuda.device_count() if gpus is None else gpus
    ranks = config.launcher.nproc_per_node
    if config.launcher.name == LauncherName.torchrun and gpus and ranks > gpus:
        raise ConfigError(f"launcher.nproc_per_node={ranks} is more than the {gpus} GPU(s) visible here "
                          f"(CUDA_VISIBLE_DEVICES): use launcher.nproc_per_node<={gpus}, or more launcher.nnodes")
    cores = usable_cores() if cores is None else cores
    if config.launcher.name == LauncherName.torchrun and not gpus and ranks > cores:
        raise ConfigError(f"launcher.nproc_per_node={ranks} is more than the {cores} CPU core(s) this process may use "
                          f"(no GPU here: each rank is a gloo process): use launcher.nproc_per_node<={cores}")
    dtype = config.model.dtype
    if not gpus and dtype == DType.fp16:
        raise ConfigError("model.dtype=fp16 cannot be computed on this machine's CPU (no GPU visible): use "
                          "model.dtype=bf16 (mixed precision on a CPU) or fp32")
    if gpus and dtype == DType.bf16 and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"model.dtype=bf16 is not supported by {torch.cuda.get_device_name(0)}: use model.dtype=fp16 "
                          "or fp32 (model.dtype=auto picks the best this GPU has)")


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
