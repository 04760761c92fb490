"""The configuration schema: typed dataclasses registered in Hydra's ConfigStore.

Every YAML under conf/ is merged onto one of these nodes, so a misspelt key, a value of the
wrong type or a closed choice outside its `Enum` fails when the config is composed, with
Hydra's list of allowed values. Ranges and cross-field rules live in each node's
`validate()` (as TRL's configs check themselves in `__post_init__`); `Config.validate()`
runs them all on the composed config before any model is built. Open choices (paradigm,
benchmark, built-in model, logger, filter) are names checked against their registries by
the stage loop's `plan()`. Each config group has its own schema node; a new paradigm or
benchmark adds a dataclass here and a YAML in its group.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf, open_dict

from cpt_bench.choices import (
    DType,
    GenerationBackend,
    KeepCheckpoints,
    KeepRule,
    KLReference,
    LoggerMode,
    OrderName,
    PeftMethod,
    RewardScaling,
    RFTEstimator,
    Schedule,
    VLLMMode,
    require,
)
from cpt_bench.errors import ConfigError

log = logging.getLogger("cpt_bench")

RECIPE_VERSION = 2  # bump when the recipe below changes in a way the cache key cannot see


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

    def key(self, corpus: list[str]) -> str:
        """Hash of the recipe and of the corpus itself, so edited task code rebuilds."""
        h = hashlib.sha256(json.dumps({**asdict(self), "v": RECIPE_VERSION}, sort_keys=True).encode())
        for text in corpus:
            h.update(text.encode() + b"\n")
        return h.hexdigest()[:12]


@dataclass
class StageTraining:
    """Optimisation settings every paradigm shares (one stage = one trainer run)."""

    name: str = MISSING
    learning_rate: float = MISSING
    lr_scheduler_type: str = "constant"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    epochs: float = 1.0
    # per-task epoch overrides, e.g. {geometry3k: 10} as in the paper
    epochs_per_task: dict[str, float] = field(default_factory=dict)
    max_steps: int = -1  # > 0 caps the optimizer steps of every stage
    per_device_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    logging_steps: int = 4

    def validate(self, at: str = "paradigm") -> None:
        require(self.learning_rate > 0, f"{at}.learning_rate", self.learning_rate, "> 0")
        require(self.epochs > 0, f"{at}.epochs", self.epochs, "> 0")
        for task, epochs in self.epochs_per_task.items():
            require(epochs > 0, f"{at}.epochs_per_task.{task}", epochs, "> 0")
        require(self.max_steps == -1 or self.max_steps > 0, f"{at}.max_steps", self.max_steps, "-1 (no cap) or > 0")
        require(self.per_device_batch_size > 0, f"{at}.per_device_batch_size", self.per_device_batch_size, "> 0")
        require(self.gradient_accumulation_steps > 0, f"{at}.gradient_accumulation_steps",
                self.gradient_accumulation_steps, "> 0")
        require(0 <= self.warmup_ratio < 1, f"{at}.warmup_ratio", self.warmup_ratio, "in [0, 1)")
        require(self.weight_decay >= 0, f"{at}.weight_decay", self.weight_decay, ">= 0")
        require(self.logging_steps > 0, f"{at}.logging_steps", self.logging_steps, "> 0")

    def prompts_per_step(self, world_size: int) -> int:
        """Training prompts per optimizer step over all processes."""
        return self.per_device_batch_size * self.gradient_accumulation_steps * world_size


@dataclass
class SFTParadigm(StageTraining):
    """Supervised fine-tuning through TRL's SFTTrainer, loss on the completion only."""

    name: str = "sft"
    learning_rate: float = 3e-4
    epochs: float = 5.0
    max_length: int = 128

    def validate(self, at: str = "paradigm") -> None:
        super().validate(at)
        require(self.max_length > 0, f"{at}.max_length", self.max_length, "> 0")


@dataclass
class RFTParadigm(StageTraining):
    """GRPO with verifiable rewards through TRL's GRPOTrainer.

    Our own defaults are pinned here because TRL's changed across versions (beta, loss_type,
    scale_rewards, epsilon). Batch: `per_device_batch_size` counts completions, so the prompts
    per optimizer step are per_device_batch_size x gradient_accumulation_steps x processes /
    num_generations, which must divide evenly.
    """

    name: str = "rft"
    learning_rate: float = 2e-4
    weight_decay: float = 0.01
    num_generations: int = 8  # the group size (the paper's 8 rollouts per prompt)
    per_device_batch_size: int = 128  # completions per device per micro-step
    temperature: float = 1.0
    top_p: float = 1.0
    max_completion_length: int = 32
    # the policy-gradient estimator on the same rewards: grpo, or rloo (TRL's RLOOTrainer, which
    # has no loss_type / scale_rewards: its advantages are leave-one-out, not std-scaled)
    estimator: RFTEstimator = RFTEstimator.grpo
    kl_coef: float = 0.01  # the paper's 0.01; 0 turns the KL penalty (and the reference) off
    kl_reference: KLReference = KLReference.base  # the original model (paper) | the stage's start
    loss_type: str = "dapo"  # token-level mean, as verl/EasyR1's "token-mean"
    scale_rewards: RewardScaling = RewardScaling.group
    epsilon: float = 0.2  # PPO clip low (paper 0.2)
    epsilon_high: float = 0.3  # PPO clip high (paper 0.3)
    num_iterations: int = 1
    # optimizer steps trained on one generation batch (TRL's steps_per_generation, counted in
    # optimizer steps): 1 = every step on its own fresh rollouts; k > 1 generates k steps' prompts
    # at once and trains the later steps off-policy, clipped by epsilon (the paper's rollout batch
    # 512 over global batch 128 is 4); the same prompts and groups either way
    generation_steps: int = 1
    reward_accuracy_weight: float = 0.9  # with CoT: w_acc * accuracy + w_fmt * format
    reward_format_weight: float = 0.1
    # GRPO rollouts through vLLM (TRL's integration; optional extra `cpt-bench[vllm]`)
    use_vllm: bool = False
    vllm_mode: VLLMMode = VLLMMode.colocate
    vllm_gpu_memory_utilization: float = 0.3  # colocate: the share of each GPU vLLM may take
    vllm_enable_sleep_mode: bool = False  # colocate: offload vLLM's weights during the optimizer step
    vllm_tensor_parallel_size: int = 1  # colocate: must divide the number of processes
    # colocate: the context vLLM sizes its KV cache for; null = the stage's longest prompt
    # (text and image tokens) + max_completion_length, not the model's whole context
    vllm_max_model_length: int | None = None
    logging_steps: int = 1

    def validate(self, at: str = "paradigm") -> None:
        super().validate(at)
        require(self.num_generations >= 2, f"{at}.num_generations", self.num_generations,
                ">= 2 (GRPO compares completions within a group)")
        require(self.temperature > 0, f"{at}.temperature", self.temperature, "> 0")
        require(0 < self.top_p <= 1, f"{at}.top_p", self.top_p, "in (0, 1]")
        require(self.max_completion_length > 0, f"{at}.max_completion_length", self.max_completion_length, "> 0")
        require(self.kl_coef >= 0, f"{at}.kl_coef", self.kl_coef, ">= 0")
        require(self.epsilon >= 0, f"{at}.epsilon", self.epsilon, ">= 0")
        require(self.epsilon_high >= 0, f"{at}.epsilon_high", self.epsilon_high, ">= 0")
        require(self.num_iterations > 0, f"{at}.num_iterations", self.num_iterations, "> 0")
        require(self.generation_steps > 0, f"{at}.generation_steps", self.generation_steps, "> 0")
        for key in ("reward_accuracy_weight", "reward_format_weight"):
            require(getattr(self, key) >= 0, f"{at}.{key}", getattr(self, key), ">= 0")
        require(0 < self.vllm_gpu_memory_utilization <= 1, f"{at}.vllm_gpu_memory_utilization",
                self.vllm_gpu_memory_utilization, "in (0, 1]")
        require(self.vllm_max_model_length is None or self.vllm_max_model_length > self.max_completion_length,
                f"{at}.vllm_max_model_length", self.vllm_max_model_length,
                f"> max_completion_length ({self.max_completion_length}) or null")
        if self.use_vllm:
            from cpt_bench.vllm_engine import require_vllm

            require_vllm(f"{at}.use_vllm=true")

    def prompts_per_step(self, world_size: int) -> int:
        """Prompts per optimizer step; the effective batch (completions) must divide by the group."""
        batch = super().prompts_per_step(world_size)  # counts completions here
        if batch % self.num_generations:
            raise ConfigError(
                f"effective batch {batch} (paradigm.per_device_batch_size={self.per_device_batch_size} x "
                f"gradient_accumulation_steps={self.gradient_accumulation_steps} x {world_size} processes) is not "
                f"divisible by paradigm.num_generations={self.num_generations}"
            )
        return batch // self.num_generations


@dataclass
class FilterConfig:
    """RIF-RFT: keep only the items the current model can learn from, by K rollouts each."""

    name: str = "none"  # none | rif
    keep: KeepRule = KeepRule.solvable
    num_rollouts: int = 8
    temperature: float = 1.0
    batch_size: int = 256  # completions per generation batch (prompts = batch_size // num_rollouts)

    def validate(self, at: str = "filter") -> None:
        if self.name == "none":
            return
        least = 2 if self.keep == KeepRule.nonzero_variance else 1
        require(self.num_rollouts >= least, f"{at}.num_rollouts", self.num_rollouts,
                f">= {least}" + (" (keep=nonzero_variance needs a spread)" if least == 2 else ""))
        require(self.temperature > 0, f"{at}.temperature", self.temperature, "> 0")
        require(self.batch_size > 0, f"{at}.batch_size", self.batch_size, "> 0")


@dataclass
class BenchmarkConfig:
    name: str = MISSING
    seed: int = 0  # which items are drawn; train and test stay disjoint for every seed
    train_size: int = 512  # per task
    test_size: int = 100  # per task
    tasks: list[str] = MISSING  # the CPT tasks in the benchmark's own order
    general: list[str] = field(default_factory=list)  # held-out general-ability suite

    def validate(self, at: str = "benchmark") -> None:
        require(self.train_size > 0, f"{at}.train_size", self.train_size, "> 0")
        require(self.test_size > 0, f"{at}.test_size", self.test_size, "> 0")


@dataclass
class SplitSourceConfig:
    """One split of a real task: a local `path`, or a dataset on the Hugging Face Hub."""

    path: str | None = None  # ShareGPT JSON/JSONL, parquet file, or a dataset folder
    hf_id: str | None = None
    hf_config: str | None = None
    images_hf_config: str | None = None  # GQA on lmms-lab: images in a config of their own
    split: str | None = None  # the hub (or dataset folder) split name


@dataclass
class TaskSourceConfig:
    format: str = "auto"  # auto | sharegpt | easyr1 | native (the dataset's own columns)
    image_root: str | None = None  # this task's images; overrides benchmark.image_root
    max_train: int | None = None  # overrides the benchmark's for this task
    max_test: int | None = None
    train: SplitSourceConfig = field(default_factory=SplitSourceConfig)
    test: SplitSourceConfig = field(default_factory=SplitSourceConfig)


@dataclass
class MLLMBenchmarkConfig:
    """The paper's seven multimodal tasks and the general suite (benchmark=mllm_cl7).

    Each split is read from, in order: `sources.<task>.<split>.path`, the authors' file under
    `data_dir` (ScienceQA_test.json, ...), `sources.<task>.<split>.hf_id`.
    """

    name: str = "mllm_cl7"
    seed: int = 0  # which items a capped split draws
    tasks: list[str] = MISSING  # the CPT tasks in the paper's order
    general: list[str] = field(default_factory=list)  # held-out general-ability suite
    data_dir: str | None = None  # a folder of the authors' ShareGPT files
    # where image paths are looked up (default: data_dir, or an explicit file's folder): as
    # written, else under this root by their trailing components, longest first, so a file
    # written on another machine (/home/them/data/VizWiz/val/1.jpg) finds <root>/VizWiz/val/1.jpg
    image_root: str | None = None
    max_train: int | None = None  # per task; null = every item
    max_test: int | None = None
    # a drawn split with fewer items (or than its cap, if smaller), or with more of its rows
    # skipped (image missing or unreadable, empty answer), stops the run before any model loads
    min_items: int = 1
    max_skipped_fraction: float = 0.05
    sources: dict[str, TaskSourceConfig] = field(default_factory=dict)

    def validate(self, at: str = "benchmark") -> None:
        require(self.min_items >= 1, f"{at}.min_items", self.min_items, ">= 1")
        require(0 <= self.max_skipped_fraction <= 1, f"{at}.max_skipped_fraction", self.max_skipped_fraction,
                "in [0, 1]")
        caps = [("max_train", self.max_train), ("max_test", self.max_test)]
        caps += [(f"sources.{t}.{k}", getattr(src, k))
                 for t, src in self.sources.items() for k in ("max_train", "max_test")]
        for key, cap in caps:
            require(cap is None or cap > 0, f"{at}.{key}", cap, "> 0 or null (every item)")


@dataclass
class OrderConfig:
    """default = the benchmark's order; reverse; shuffled (by `seed`); or an explicit `tasks`."""

    name: OrderName = OrderName.default
    tasks: list[str] | None = None  # an explicit list wins over `name`
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
        for key in ("min_pixels", "max_pixels"):
            require(getattr(self, key) is None or getattr(self, key) > 0, f"{at}.{key}", getattr(self, key),
                    "> 0 or null")
        if self.min_pixels and self.max_pixels:
            require(self.min_pixels <= self.max_pixels, f"{at}.min_pixels", self.min_pixels,
                    f"<= {at}.max_pixels ({self.max_pixels})")


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

    name: str = "local"  # local | torchrun
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
        if self.name == "local":
            require(self.world_size == 1, f"{at}.nproc_per_node x nnodes", self.world_size,
                    "1 with launcher=local (use launcher=torchrun for more processes)")


@dataclass
class LoggerConfig:
    name: str = "wandb"  # wandb | none
    mode: LoggerMode = LoggerMode.offline
    project: str = "cpt-bench"
    entity: str | None = None
    group: str | None = None  # default: the multirun sweep's name
    tags: list[str] = field(default_factory=list)
    init_timeout: float = 60.0  # seconds logger.mode=online waits for W&B before going offline

    def validate(self, at: str = "logger") -> None:
        require(self.init_timeout > 0, f"{at}.init_timeout", self.init_timeout, "> 0")


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

    def validate(self, at: str = "eval") -> None:
        require(self.batch_size > 0, f"{at}.batch_size", self.batch_size, "> 0")
        require(self.kl_samples >= 0, f"{at}.kl_samples", self.kl_samples, ">= 0")
        require(self.max_new_tokens > 0, f"{at}.max_new_tokens", self.max_new_tokens, "> 0")
        if self.backend == GenerationBackend.vllm:
            from cpt_bench.vllm_engine import require_vllm

            require_vllm(f"{at}.backend=vllm")


@dataclass
class PeftConfig:
    """Parameter-efficient fine-tuning for both paradigms (TRL's `peft_config`, the peft library):
    each stage trains a fresh LoRA adapter, merged into full weights when the stage ends, so
    stages chain, resume and evaluate as with full fine-tuning; the adapter is kept beside."""

    name: PeftMethod = PeftMethod.none
    r: int = 16  # LoRA rank
    alpha: int = 32  # LoRA scaling numerator (lora_alpha)
    dropout: float = 0.05
    target_modules: Any = "all-linear"  # peft's shorthand, or a list of module names

    def validate(self, at: str = "peft") -> None:
        require(self.r > 0, f"{at}.r", self.r, "> 0")
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
    cot: bool = False  # chain-of-thought prompts, answer extraction, rewards (training and eval)
    schedule: Schedule = Schedule.sequential
    # schedule=evaluate: the stage checkpoints of a sequence trained elsewhere (local folders,
    # one per task of the order, in order); each gives its matrix row as a trained stage would
    checkpoints: list[str] | None = None
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    seed: int = 0  # training seed (data order, sampling, initialisation of new heads)
    threads: int | None = None  # torch CPU threads; null = torch's default
    # a run dir that holds a finished run is never overwritten unless this is true;
    # an unfinished one is resumed from its last completed stage
    overwrite: bool = False

    def validate(self) -> None:
        """Every node's range and cross-field rules (the closed choices Hydra already checked)."""
        for at in ("paradigm", "benchmark", "model", "filter", "eval", "launcher", "logger", "replay", "peft"):
            getattr(self, at).validate(at)
        if self.peft.name == PeftMethod.lora and self.deepspeed.config and "zero3" in self.deepspeed.name:
            raise ConfigError("peft=lora is not supported with ZeRO-3 here (merging partitioned adapters is "
                              "untested): use deepspeed=zero2 or none")
        if self.replay.fraction and self.schedule != Schedule.sequential:
            raise ConfigError(f"replay.fraction applies to schedule=sequential, not schedule={self.schedule}")
        require(self.threads is None or self.threads > 0, "threads", self.threads, "> 0 or null")
        self.paradigm.prompts_per_step(self.launcher.world_size)  # GRPO: whole groups per optimizer step
        if self.eval.backend == GenerationBackend.vllm and self.launcher.name != "torchrun":
            # an engine per stage in one long-lived process would never give its GPU memory back
            raise ConfigError("eval.backend=vllm needs launcher=torchrun (each step's vLLM engine lives and dies "
                              "with its process)")


def as_schema(node):
    """A config node as its schema dataclass (a DictConfig is converted; a dataclass passes)."""
    return OmegaConf.to_object(node) if OmegaConf.is_config(node) else node


def lora_kl_reference(cfg) -> None:
    """With peft=lora, TRL's GRPO computes the KL against the model with its adapter disabled:
    the stage's starting weights. Say so and record it (kl_reference=previous) rather than let
    the config claim the original base."""
    paradigm = cfg.paradigm
    if cfg.peft.name == PeftMethod.lora and paradigm.get("kl_coef") and paradigm.kl_reference == KLReference.base:
        log.warning("peft=lora: GRPO's KL reference is the stage's starting weights (the adapter disabled), "
                    "so paradigm.kl_reference is set to previous")
        paradigm.kl_reference = KLReference.previous


def validate(cfg) -> Config:
    """Check a composed config (a DictConfig of this schema); raises ConfigError in one line."""
    if "hydra" in cfg:  # composed with Hydra's own node (which is not part of the schema)
        cfg = cfg.copy()
        with open_dict(cfg):
            del cfg["hydra"]
    schema = OmegaConf.to_object(cfg)
    schema.validate()
    return schema


PARADIGM_SCHEMAS = {"sft": SFTParadigm, "rft": RFTParadigm}  # paradigm.name -> its schema node


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    # group schemas are root configs (not groups), so `--help` lists only real choices; each
    # YAML extends its schema with `- /<group>_schema@_here_` in its defaults list
    for name, node in [("paradigm_sft_schema", SFTParadigm), ("paradigm_rft_schema", RFTParadigm),
                       ("filter_schema", FilterConfig), ("benchmark_schema", BenchmarkConfig),
                       ("benchmark_mllm_cl7_schema", MLLMBenchmarkConfig), ("order_schema", OrderConfig),
                       ("model_schema", ModelConfig), ("deepspeed_schema", DeepSpeedConfig),
                       ("logger_schema", LoggerConfig), ("launcher_schema", LauncherConfig),
                       ("peft_schema", PeftConfig)]:
        cs.store(name=name, node=node)
