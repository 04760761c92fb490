"""What every paradigm shares: the stage context it is handed, the result it returns, the
training settings of its schema (`StageTraining`) and the trainer plumbing (TrainingArguments,
LoRA, saving the stage, forwarding the trainer's log).

A paradigm is a thin adapter over a TRL trainer. The stage loop hands it the model as it
stands, its processing class, the task's training items and a `StageContext`; it trains,
saves the stage checkpoint through its trainer (`save_stage`) and returns the trained model
and what the stage cost.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from omegaconf import MISSING

from cpt_bench import faults
from cpt_bench.choices import require
from cpt_bench.config import PeftConfig
from cpt_bench.model.prompts import PromptStyle
from cpt_bench.outputs.curves import inner_steps, point_name
from cpt_bench.paradigms.rollouts import Rollouts, Sampled
from cpt_bench.tasks.base import Example, Task


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

    def settle(self, cfg) -> None:
        """Set this node to what the run will really do, given the whole config (`config.Config`),
        before the config is recorded; nothing by default."""

    def prompts_per_step(self, world_size: int) -> int:
        """Training prompts per optimizer step over all processes."""
        return self.per_device_batch_size * self.gradient_accumulation_steps * world_size


@dataclass(frozen=True)
class ParadigmSpec:
    """What a paradigm module registers as its `PARADIGM` (found by `paradigms.paradigms()`)."""

    name: str  # paradigm.name
    schema: type  # its config node (a StageTraining dataclass)
    build: Callable[..., Paradigm]  # (its validated node, world size) -> the paradigm


@dataclass
class StageContext:
    stage: int  # 1-based stage number
    task_name: str  # the trained task ("joint" for the multi-task baseline)
    tasks: dict[str, Task]  # graders for every item's task
    style: PromptStyle  # prompt format (CoT or direct), shared with evaluation
    base_path: str  # the original base model (the paper's KL reference)
    start_path: str  # the checkpoint this stage starts from (a plain trainer's reference)
    work_dir: Path  # scratch space for the trainer
    save_dir: Path  # where the trained stage's Hugging Face checkpoint goes
    seed: int
    use_cpu: bool
    bf16: bool
    deepspeed: dict | None = None
    peft: PeftConfig | None = None  # the stage's LoRA adapter (peft=lora or olora); None = full fine-tuning
    # ZeRO-3 over several ranks with a vision-language model: every model the trainer runs
    # forward passes through (the policy, GRPO's KL reference) runs its vision tower on
    # text-only batches too (vision_zero3.py)
    align_vision: bool = False
    # called with (global_step, max_steps, logs) on every trainer log event
    on_log: Callable[[int, int, dict[str, float]], None] = lambda step, total, logs: None
    # the paradigm's rollout step (`Paradigm.rollouts`): one `Sampled` per training item, in order
    rollouts: list[Sampled] | None = None
    # terms the run's continual-learning method adds to the paradigm's loss (continual/base.py):
    # the paradigm's trainer class goes through `loss_terms.with_loss_terms`
    loss_terms: list = field(default_factory=list)
    # eval.inner_points: a snapshot of the model at that many evenly spaced optimizer steps inside
    # the stage (`Snapshots`), each saved as `snapshot_dir/step-<n>/`; the seconds they took
    inner_points: int = 0
    snapshot_dir: Path | None = None
    snapshot_seconds: float = 0.0


@dataclass(frozen=True)
class TrainRow:
    """One row a stage trains on: an item, the completion it is trained towards (None: the
    item's reference answer) and its loss weight."""

    example: Example
    completion: str | None = None
    weight: float = 1.0


def reference_rows(examples: list[Example]) -> list[TrainRow]:
    """Every item towards its reference answer, weight 1 (a paradigm without a rollout step)."""
    return [TrainRow(ex) for ex in examples]


@dataclass(kw_only=True)
class StageResult:
    model: Any
    optimizer_steps: int
    train_seconds: float
    generated_tokens: int = 0  # rollout tokens (RFT); 0 for SFT
    metrics: dict[str, float] = field(default_factory=dict)  # stage-level diagnostics
    save_seconds: float = 0.0


def lora_config(ctx: StageContext):
    """The stage's fresh LoRA adapter for TRL's `peft_config`; None for full fine-tuning."""
    if not ctx.peft:
        return None
    from peft import LoraConfig

    target = ctx.peft.target_modules
    return LoraConfig(r=ctx.peft.r, lora_alpha=ctx.peft.alpha, lora_dropout=ctx.peft.dropout,
                      target_modules=target if isinstance(target, str) else list(target), task_type="CAUSAL_LM")


def save_stage(trainer, ctx: StageContext) -> tuple[float, Any]:
    """Write the stage checkpoint; returns the seconds it took and the model the stage ends with.

    Full fine-tuning saves through the trainer, the one save that knows about DeepSpeed: under
    ZeRO-3 the model's weights are partitioned (empty in this process) and `save_model` gathers
    them (`stage3_gather_16bit_weights_on_model_save`) into a full, loadable Hugging Face
    folder. With LoRA the adapter is saved into `adapter/` and then merged into the weights,
    which are saved in full, so the next stage, resume and evaluation see a plain checkpoint."""
    start = time.time()
    model = trainer.model
    if ctx.peft:
        if trainer.args.process_index == 0:
            model.save_pretrained(str(ctx.save_dir / "adapter"))
        model = model.merge_and_unload()
        if trainer.args.process_index == 0:
            model.save_pretrained(str(ctx.save_dir))
    else:
        trainer.save_model(str(ctx.save_dir))
    faults.reached("checkpoint_save")
    return time.time() - start, model


def common_trainer_args(cfg, ctx: StageContext) -> dict[str, Any]:
    """TrainingArguments every paradigm passes the same way (a stage = one trainer run)."""
    epochs = float(cfg.epochs_per_task.get(ctx.task_name, cfg.epochs))
    return dict(
        output_dir=str(ctx.work_dir),
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float < 1 is a ratio of all steps
        weight_decay=cfg.weight_decay,
        num_train_epochs=epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        activation_checkpointing=cfg.gradient_checkpointing,
        logging_steps=cfg.logging_steps,
        save_strategy="no",  # one checkpoint per stage, written at its end (save_stage)
        report_to=[],  # the stage loop owns W&B (one run per sequence)
        disable_tqdm=True,
        seed=ctx.seed,
        data_seed=ctx.seed,
        use_cpu=ctx.use_cpu,
        bf16=ctx.bf16,
        fp16=False,
        deepspeed=ctx.deepspeed,
        dataloader_num_workers=0,
    )


def mean_logs(logs: list[dict], keys: list[str]) -> dict[str, float]:
    """Average each trainer log key over a stage (diagnostics are per-step means)."""
    out = {}
    for key in keys:
        values = [row[key] for row in logs if isinstance(row.get(key), (int, float))]
        if values:
            out[key] = sum(values) / len(values)
    return out


class Paradigm(Protocol):
    name: str
    prompts_per_step: int  # training prompts per optimizer step (all processes together)
    completions_per_prompt: int  # 1 for SFT; the group size for GRPO
    completion_length: int | None  # the longest rollout it generates; None if it generates nothing
    # the rollout step it asks for before each stage's training (None: none): the stage loop
    # samples these with the stage's starting model and hands them over as `StageContext.rollouts`
    rollouts: Rollouts | None

    def rows(self, examples: list[Example], sampled: list[Sampled] | None) -> list[TrainRow]:
        """What the stage trains on, given its items and (with a rollout step) their rollouts;
        pure, so the stage loop records it and every rank trains on the same rows. No rows:
        the stage trains nothing."""
        ...

    def train_stage(self, model, processing_class, examples: list[Example], ctx: StageContext) -> StageResult: ...


def forward_logs(ctx: StageContext):
    """A trainer callback that hands every log event to the stage loop (terminal, files, W&B)
    and keeps it (built here so transformers is imported only by a stage that trains)."""
    from transformers import TrainerCallback

    class ForwardLogs(TrainerCallback):
        """Hands every trainer log event to the stage loop (terminal, files, W&B) and keeps it."""

        def __init__(self, ctx: StageContext):
            self.ctx, self.logs = ctx, []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                self.logs.append(dict(logs))
                self.ctx.on_log(state.global_step, state.max_steps, dict(logs))

    return ForwardLogs(ctx)


def prepare_trainer(trainer, ctx: StageContext) -> None:
    """What every paradigm does to its trainer once built: no progress printing of its own (the
    stage loop prints), and with `ctx.inner_points` the snapshots inside the stage."""
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    if ctx.inner_points and ctx.snapshot_dir is not None:
        trainer.add_callback(snapshots(trainer, ctx))


def save_snapshot(trainer, ctx: StageContext, step: int) -> float:
    """The model at optimizer step `step` as a loadable checkpoint, `snapshot_dir/step-<n>/`,
    written through the trainer's own save on every process (under ZeRO-3 it gathers the
    shards), into `<name>.partial` and renamed by the main process once complete. Nothing the
    training depends on is touched (weights, optimizer, random state). Returns the seconds."""
    start = time.time()
    final = ctx.snapshot_dir / point_name(step)
    partial = final.with_name(final.name + ".partial")
    main = trainer.args.process_index == 0
    if main:
        shutil.rmtree(partial, ignore_errors=True)
    trainer.save_model(str(partial))
    if main:
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
    return time.time() - start


def snapshots(trainer, ctx: StageContext):
    """A trainer callback that saves a snapshot (`save_snapshot`) at each of the stage's inner
    steps (`outputs.curves.inner_steps` of the trainer's max_steps), adding its seconds to
    `ctx.snapshot_seconds`."""
    from transformers import TrainerCallback

    class Snapshots(TrainerCallback):
        def __init__(self):
            self.at: set[int] = set()

        def on_train_begin(self, args, state, control, **kwargs):
            self.at = set(inner_steps(state.max_steps, ctx.inner_points))

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in self.at:
                ctx.snapshot_seconds += save_snapshot(trainer, ctx, state.global_step)

    return Snapshots()
