"""The configuration schema: typed dataclasses registered in Hydra's ConfigStore.

Every YAML under conf/ is merged onto one of these nodes, so a misspelt key or a value of
the wrong type fails when the config is composed, before any model is built. Each config
group (paradigm, benchmark, order, model, deepspeed, logger) has its own schema node;
a new paradigm or benchmark adds a dataclass here and a YAML in its group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from cpt_bench.models import TinyRecipe


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


@dataclass
class SFTParadigm(StageTraining):
    """Supervised fine-tuning through TRL's SFTTrainer, loss on the completion only."""

    name: str = "sft"
    learning_rate: float = 3e-4
    epochs: float = 5.0
    max_length: int = 128


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
    kl_coef: float = 0.01  # the paper's 0.01; 0 turns the KL penalty (and the reference) off
    kl_reference: str = "base"  # base = the original model (paper) | previous = the stage's start
    loss_type: str = "dapo"  # token-level mean, as verl/EasyR1's "token-mean"
    scale_rewards: str = "group"  # group | batch | none
    epsilon: float = 0.2  # PPO clip low (paper 0.2)
    epsilon_high: float = 0.3  # PPO clip high (paper 0.3)
    num_iterations: int = 1
    reward_accuracy_weight: float = 0.9  # with CoT: w_acc * accuracy + w_fmt * format
    reward_format_weight: float = 0.1
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    logging_steps: int = 1


@dataclass
class FilterConfig:
    """RIF-RFT: keep only the items the current model can learn from, by K rollouts each."""

    name: str = "none"  # none | rif
    keep: str = "solvable"  # solvable (>= 1 of K correct; the authors' code) | nonzero_variance
    num_rollouts: int = 8
    temperature: float = 1.0
    batch_size: int = 256  # completions per generation batch (prompts = batch_size // num_rollouts)


@dataclass
class BenchmarkConfig:
    name: str = MISSING
    seed: int = 0  # which items are drawn; train and test stay disjoint for every seed
    train_size: int = 512  # per task
    test_size: int = 100  # per task
    tasks: list[str] = MISSING  # the CPT tasks in the benchmark's own order
    general: list[str] = field(default_factory=list)  # held-out general-ability suite


@dataclass
class SplitSourceConfig:
    """One split of a real task: a local `path`, or a dataset on the Hugging Face Hub."""

    path: Optional[str] = None  # ShareGPT JSON/JSONL, parquet file, or a dataset folder
    hf_id: Optional[str] = None
    hf_config: Optional[str] = None
    images_hf_config: Optional[str] = None  # GQA on lmms-lab: images in a config of their own
    split: Optional[str] = None  # the hub (or dataset folder) split name


@dataclass
class TaskSourceConfig:
    format: str = "auto"  # auto | sharegpt | easyr1 | native (the dataset's own columns)
    image_root: Optional[str] = None  # image paths are relative to this
    max_train: Optional[int] = None  # overrides the benchmark's for this task
    max_test: Optional[int] = None
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
    data_dir: Optional[str] = None  # a folder of the authors' ShareGPT files
    image_root: Optional[str] = None  # default: data_dir
    max_train: Optional[int] = None  # per task; null = every item
    max_test: Optional[int] = None
    sources: dict[str, TaskSourceConfig] = field(default_factory=dict)


@dataclass
class OrderConfig:
    """default = the benchmark's order; reverse; shuffled (by `seed`); or an explicit `tasks`."""

    name: str = "default"
    tasks: Optional[list[str]] = None  # an explicit list wins over `name`
    seed: int = 0


@dataclass
class ModelConfig:
    name: str = MISSING
    # a local folder or a hub id; null for a model cpt-bench builds itself (`builtin`)
    path: Optional[str] = None
    builtin: Optional[str] = None
    cache_dir: Optional[str] = None  # default: $CPT_BENCH_CACHE or ~/.cache/cpt-bench
    dtype: str = "auto"  # auto = bf16 on a GPU that supports it, else fp32
    recipe: TinyRecipe = field(default_factory=TinyRecipe)


@dataclass
class DeepSpeedConfig:
    name: str = "none"
    config: Optional[dict[str, Any]] = None  # a DeepSpeed JSON config, passed to the trainer


@dataclass
class LoggerConfig:
    name: str = "wandb"  # wandb | none
    mode: str = "offline"  # offline | online | disabled
    project: str = "cpt-bench"
    entity: Optional[str] = None
    group: Optional[str] = None  # default: the multirun sweep's name
    tags: list[str] = field(default_factory=list)


@dataclass
class EvalConfig:
    batch_size: int = 256
    max_new_tokens: int = 32
    general: bool = True  # also evaluate the benchmark's general suite


@dataclass
class CheckpointConfig:
    keep: str = "all"  # all | last: keep every stage's model, or only the latest


@dataclass
class Config:
    paradigm: Any = MISSING
    benchmark: Any = MISSING
    order: OrderConfig = MISSING
    model: ModelConfig = MISSING
    deepspeed: DeepSpeedConfig = MISSING
    logger: LoggerConfig = MISSING
    filter: FilterConfig = MISSING
    cot: bool = False  # chain-of-thought prompts, answer extraction, rewards (training and eval)
    schedule: str = "sequential"  # sequential (one stage per task) | joint (one stage, all tasks)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    seed: int = 0  # training seed (data order, sampling, initialisation of new heads)
    threads: Optional[int] = None  # torch CPU threads; null = torch's default
    # a run dir that holds a finished run is never overwritten unless this is true;
    # an unfinished one is resumed from its last completed stage
    overwrite: bool = False


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    # group schemas are root configs (not groups), so `--help` lists only real choices; each
    # YAML extends its schema with `- /<group>_schema@_here_` in its defaults list
    for name, node in [("paradigm_sft_schema", SFTParadigm), ("paradigm_rft_schema", RFTParadigm),
                       ("filter_schema", FilterConfig), ("benchmark_schema", BenchmarkConfig),
                       ("benchmark_mllm_cl7_schema", MLLMBenchmarkConfig), ("order_schema", OrderConfig),
                       ("model_schema", ModelConfig), ("deepspeed_schema", DeepSpeedConfig),
                       ("logger_schema", LoggerConfig)]:
        cs.store(name=name, node=node)
