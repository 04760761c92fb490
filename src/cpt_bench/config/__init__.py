"""The configuration schema: typed dataclasses, registered in Hydra's ConfigStore (configstore.py).

Every YAML under conf/ is merged onto one of these nodes, so a misspelt key, a value of the
wrong type or a closed choice outside its `Enum` (choices.py) fails when the config is
composed, with Hydra's list of allowed values. Ranges and cross-field rules live in each
node's `validate()` (as TRL's configs check themselves in `__post_init__`); `validate()` turns
a composed config into the typed `Config` and runs them all before any model is built. That
`Config` is what the controller, its steps and every launched worker hold. Open choices
(paradigm, benchmark, built-in model) are names checked against their registries by the
stage loop's `plan()`. A paradigm's node lives in its own module (paradigms/), the `eval`
node in evaluation.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf, open_dict

from cpt_bench.choices import (
    DType,
    FilterName,
    GenerationBackend,
    KeepCheckpoints,
    KeepRule,
    LauncherName,
    LoggerMode,
    LoggerName,
    OrderName,
    PeftMethod,
    Schedule,
    require,
)
from cpt_bench.config.benchmarks import BenchmarkConfig, CustomBenchmarkConfig, MLLMBenchmarkConfig
from cpt_bench.config.benchmarks import CustomTaskConfig as CustomTaskConfig  # re-exported
from cpt_bench.config.benchmarks import SplitSourceConfig as SplitSourceConfig
from cpt_bench.config.benchmarks import TaskSourceConfig as TaskSourceConfig
from cpt_bench.config.evaluation import EvalConfig
from cpt_bench.config.evaluation import HarnessConfig as HarnessConfig  # re-exported
from cpt_bench.config.ignored import refuse_ignored
from cpt_bench.errors import ConfigError

log = logging.getLogger("cpt_bench")


@dataclass
class TinyRecipe:
    """Everything that determines the embedded base model (and so its cache key)."""

    seed: int = 0
    vocab_size: int = 160
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    intermediate_size: int = 384
    max_position_embeddings: int = 64
    items_per_task: int = 3000
    cot_share: float = 0.5  # share of items in CoT format (<think> ... </think> \boxed{})
    easy_share_cpt: float = 1.0  # share of easy items in the CPT tasks' pre-training mixture
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3


@dataclass
class FilterConfig:
    """RIF-RFT: keep only the items the current model can learn from, by K rollouts each."""

    name: FilterName = FilterName.none
    keep: KeepRule = KeepRule.solvable
    num_rollouts: int = 8
    temperature: float = 1.0
    batch_size: int = 256  # completions per generation batch (prompts = batch_size // num_rollouts)

    def validate(self, at: str = "filter") -> None:
        if self.name == FilterName.none:
            return
        least = 2 if self.keep == KeepRule.nonzero_variance else 1
        require(self.num_rollouts >= least, f"{at}.num_rollouts", self.num_rollouts,
                f">= {least}" + (" (keep=nonzero_variance needs a spread)" if least == 2 else ""))
        require(self.temperature > 0, f"{at}.temperature", self.temperature, "> 0")
        require(self.batch_size > 0, f"{at}.batch_size", self.batch_size, "> 0")


@dataclass
class OrderConfig:
    """default = the benchmark's order; reverse; shuffled (by `seed`); or an explicit `tasks`."""

    name: OrderName = OrderName.default
    tasks: list[str] | None = None  # an explicit order, beside name=default only (config/ignored.py)
    seed: int = 0


@dataclass
class FormatAlignment:
    """The short format-alignment step of `builtin=smollm2_135m_aligned` (builtin/aligned.py).

    SFT on the natural benchmark's *format* tasks only (twice N, letters in a word, next day,
    next month, last word of a list), disjoint from every CPT and general task, so the base
    learns to answer in the paper's format (a bare short answer; with CoT `<think>` then
    `\\boxed{}`) without being taught any task it is later tested on. Part of the base's recipe:
    its cache folder is keyed by these values.
    """

    items_per_task: int = 48
    cot_share: float = 0.5  # share of items in the CoT format
    learning_rate: float = 5e-5
    batch_size: int = 8
    epochs: float = 1.0
    seed: int = 0


@dataclass
class ModelConfig:
    name: str = MISSING
    # a local folder or a hub id; null for a model cpt-bench builds itself (`builtin`)
    path: str | None = None
    builtin: str | None = None
    cache_dir: str | None = None  # default: $CPT_BENCH_CACHE or ~/.cache/cpt-bench
    dtype: DType = DType.auto
    # vision-language models: the pixel range every image is resized into (processing.PixelBounds),
    # the same for training, evaluation, RIF and vLLM; null = the checkpoint's processor config
    min_pixels: int | None = None
    max_pixels: int | None = None
    recipe: TinyRecipe = field(default_factory=TinyRecipe)
    # builtin=tiny: load the base shipped in the package while the recipe matches it (the same
    # model on every machine); false builds it from the recipe on this machine instead
    shipped: bool = True
    align: FormatAlignment = field(default_factory=FormatAlignment)  # builtin=smollm2_135m_aligned

    def validate(self, at: str = "model") -> None:
        if self.path is None and self.builtin is None:
            raise ConfigError(f"{at} needs a `path` (local folder or hub id) or a `builtin` name")
        if self.path is not None and self.builtin is not None:
            raise ConfigError(f"{at}.path={self.path} would be ignored: model={self.name} is the built-in model "
                              f"{self.builtin!r}; to load a folder or hub id add {at}.builtin=null")
        if self.path is not None and is_local_path(self.path) and not Path(self.path).expanduser().exists():
            raise ConfigError(f"{at}.path {self.path} does not exist (a local folder, or a hub id such as "
                              "Qwen/Qwen2.5-VL-7B-Instruct)")
        for key in ("min_pixels", "max_pixels"):
            require(getattr(self, key) is None or getattr(self, key) > 0, f"{at}.{key}", getattr(self, key),
                    "> 0 or null")
        if self.min_pixels and self.max_pixels:
            require(self.min_pixels <= self.max_pixels, f"{at}.min_pixels", self.min_pixels,
                    f"<= {at}.max_pixels ({self.max_pixels})")


def is_local_path(path: str) -> bool:
    """A path written as one (absolute, ./, ../, ~), as opposed to a hub id (`org/name`)."""
    return path.startswith(("/", "./", "../", "~")) or Path(path).exists()


@dataclass
class DeepSpeedConfig:
    name: str = "none"
    config: dict[str, Any] | None = None  # a DeepSpeed JSON config, passed to the trainer


@dataclass
class LauncherConfig:
    """How the heavy steps of a stage run.

    local     in this process (the embedded default, CI, one GPU)
    torchrun  each step (RIF rollouts, training, evaluation) as a `torchrun` job over
              `nproc_per_node` x `nnodes` processes; this process stays the controller
    """

    name: LauncherName = LauncherName.local
    nproc_per_node: int = 1  # processes (GPUs) per node
    nnodes: int = 1
    # multi-node: torchrun's rendezvous endpoint host:port (default: $MASTER_ADDR:29500, or
    # the first host of the SLURM job) and one torchrun per node started through `srun`
    rdzv_endpoint: str | None = None
    srun: bool = False

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def validate(self, at: str = "launcher") -> None:
        require(self.nproc_per_node > 0, f"{at}.nproc_per_node", self.nproc_per_node, "> 0")
        require(self.nnodes > 0, f"{at}.nnodes", self.nnodes, "> 0")
        if self.name == LauncherName.local:
            require(self.world_size == 1, f"{at}.nproc_per_node x nnodes", self.world_size,
                    "1 with launcher=local (use launcher=torchrun for more processes)")


@dataclass
class LoggerConfig:
    name: LoggerName = LoggerName.wandb
    mode: LoggerMode = LoggerMode.offline
    project: str = "cpt-bench"
    entity: str | None = None
    group: str | None = None  # default: the multirun sweep's name
    tags: list[str] = field(default_factory=list)
    init_timeout: float = 60.0  # seconds logger.mode=online waits for W&B before going offline

    def validate(self, at: str = "logger") -> None:
        require(self.init_timeout > 0, f"{at}.init_timeout", self.init_timeout, "> 0")


@dataclass
class PeftConfig:
    """Parameter-efficient fine-tuning for both paradigms (TRL's `peft_config`, the peft library):
    each stage trains a fresh LoRA adapter, merged into full weights when the stage ends, so
    stages chain, resume and evaluate as with full fine-tuning; the adapter is kept beside.
    `peft=olora` is the same with O-LoRA's penalty on the new adapter's overlap with the earlier
    stages' (continual/olora.py)."""

    name: PeftMethod = PeftMethod.none
    r: int = 16  # LoRA rank
    alpha: int = 32  # LoRA scaling numerator (lora_alpha)
    dropout: float = 0.05
    target_modules: Any = "all-linear"  # peft's shorthand, or a list of module names
    # peft=olora: the weight of the new adapter's overlap with the earlier stages' subspaces
    # (O-LoRA's lambda_1, continual/olora.py)
    orthogonality: float = 0.5

    def validate(self, at: str = "peft") -> None:
        require(self.r > 0, f"{at}.r", self.r, "> 0")
        require(self.orthogonality >= 0, f"{at}.orthogonality", self.orthogonality, ">= 0")
        require(self.alpha > 0, f"{at}.alpha", self.alpha, "> 0")
        require(0 <= self.dropout < 1, f"{at}.dropout", self.dropout, "in [0, 1)")


@dataclass
class ReplayConfig:
    """Experience replay: part of each stage's training items drawn from the earlier tasks'
    training sets (uniformly over those tasks, then over their items; seeded per stage)."""

    fraction: float = 0.0  # share of a stage's training items that are replayed; 0 = none
    max_items: int | None = None  # at most this many replayed items per stage

    def validate(self, at: str = "replay") -> None:
        require(0 <= self.fraction < 1, f"{at}.fraction", self.fraction, "in [0, 1)")
        require(self.max_items is None or self.max_items > 0, f"{at}.max_items", self.max_items, "> 0 or null")


@dataclass
class CheckpointConfig:
    keep: KeepCheckpoints = KeepCheckpoints.all


@dataclass
class PreflightConfig:
    """preflight.enabled=true: the run's memory, disk and install on this node, then stop (preflight/)."""

    enabled: bool = False
    gpus: int | None = None  # GPUs per node; null = what torch.cuda sees, else launcher.nproc_per_node
    gpu_memory_gb: float | None = None  # per GPU, GiB; null = what torch.cuda sees, else 80 (A100/H100)

    def validate(self, at: str = "preflight") -> None:  # by the preflight, which alone reads the node
        for key in ("gpus", "gpu_memory_gb"):
            require(getattr(self, key) is None or getattr(self, key) > 0, f"{at}.{key}", getattr(self, key), "> 0")


@dataclass
class Config:
    paradigm: Any = MISSING
    benchmark: Any = MISSING
    order: OrderConfig = MISSING
    model: ModelConfig = MISSING
    deepspeed: DeepSpeedConfig = MISSING
    peft: PeftConfig = MISSING
    logger: LoggerConfig = MISSING
    filter: FilterConfig = MISSING
    launcher: LauncherConfig = MISSING
    cl: Any = MISSING  # the continual-learning method (continual/: none, ewc, l2, lwf, merge)
    cot: bool = False  # chain-of-thought prompts, answer extraction, rewards (training and eval)
    schedule: Schedule = Schedule.sequential
    # schedule=evaluate: the stage checkpoints of a sequence trained elsewhere (local folders,
    # one per task of the order, in order); each gives its matrix row as a trained stage would
    checkpoints: list[str] | None = None
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    preflight: PreflightConfig = field(default_factory=PreflightConfig)
    seed: int = 0  # training seed (data order, sampling, initialisation of new heads)
    threads: int | None = None  # torch CPU threads; null = torch's default
    # a run dir that holds a finished run is never overwritten unless this is true;
    # an unfinished one is resumed from its last completed stage
    overwrite: bool = False

    def validate(self) -> None:
        """Every node's range and cross-field rules (the closed choices Hydra already checked)."""
        for at in ("paradigm", "benchmark", "model", "filter", "eval", "launcher", "logger", "replay", "peft", "cl"):
            getattr(self, at).validate(at)
        self.cl.refuse(self)  # what the method cannot run with, named before any model
        refuse_ignored(self)  # a setting its choice does not read would be recorded as used
        if self.peft.name != PeftMethod.none and self.deepspeed.config and "zero3" in self.deepspeed.name:
            raise ConfigError(f"peft={self.peft.name} is not supported with ZeRO-3 here (merging partitioned adapters "
                              "is untested): use deepspeed=zero2 or none")
        if self.eval.inner_points and (self.schedule == Schedule.evaluate or self.peft.name != PeftMethod.none):
            why = (f"schedule={self.schedule}" if self.schedule == Schedule.evaluate
                   else f"peft={self.peft.name} (a snapshot would hold the adapter only)")
            raise ConfigError(f"eval.inner_points={self.eval.inner_points} needs a stage trained here with full "
                              f"weights, not {why}")
        if self.replay.fraction and self.schedule != Schedule.sequential:
            raise ConfigError(f"replay.fraction applies to schedule=sequential, not schedule={self.schedule}")
        require(self.threads is None or self.threads > 0, "threads", self.threads, "> 0 or null")
        self.paradigm.prompts_per_step(self.launcher.world_size)  # GRPO: whole groups per optimizer step
        if self.eval.backend == GenerationBackend.vllm and self.launcher.name != LauncherName.torchrun:
            # an engine per stage in one long-lived process would never give its GPU memory back
            raise ConfigError("eval.backend=vllm needs launcher=torchrun (each step's vLLM engine lives and dies "
                              "with its process)")


def as_schema(node):
    """A config node as its schema dataclass (a DictConfig is converted; a dataclass passes)."""
    return OmegaConf.to_object(node) if OmegaConf.is_config(node) else node


def validate(cfg) -> Config:
    """The typed `Config` of a composed config (a DictConfig of this schema, or a `Config`),
    checked; raises ConfigError in one line. What the controller, its steps and every worker hold."""
    if isinstance(cfg, Config):
        cfg.validate()
        return cfg
    if "hydra" in cfg:  # composed with Hydra's own node (which is not part of the schema)
        cfg = cfg.copy()
        with open_dict(cfg):
            del cfg["hydra"]
    schema = OmegaConf.to_object(cfg)
    schema.validate()
    return schema


def config_dict(cfg: Config) -> dict:
    """A config as plain data (choices as strings), as run.json records it."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)


# benchmark.name -> its schema node (the toy and natural benchmarks share the generated one)
BENCHMARK_SCHEMAS = {"toy": BenchmarkConfig, "natural": BenchmarkConfig, "mllm_cl7": MLLMBenchmarkConfig,
                     "custom": CustomBenchmarkConfig}
# every other group's schema node, stored in Hydra's ConfigStore under these names (configstore.py)
GROUP_SCHEMAS = {"filter_schema": FilterConfig, "benchmark_schema": BenchmarkConfig,
                 "benchmark_mllm_cl7_schema": MLLMBenchmarkConfig, "benchmark_custom_schema": CustomBenchmarkConfig,
                 "order_schema": OrderConfig,
                 "model_schema": ModelConfig, "deepspeed_schema": DeepSpeedConfig, "logger_schema": LoggerConfig,
                 "launcher_schema": LauncherConfig, "peft_schema": PeftConfig}
