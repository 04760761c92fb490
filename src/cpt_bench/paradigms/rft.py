"""RFT stage: GRPO with verifiable rewards through TRL's GRPOTrainer.

The reward is the task's own grader on the extracted answer (accuracy) plus, with CoT, a
format reward; evaluation reports the accuracy part only. The KL reference is chosen
explicitly: TRL builds it from the directory named in the policy's config
(`_name_or_path`), not from the in-memory weights, so we point that at the original base
model (the paper) or at this stage's starting checkpoint (a plain trainer).

Items with images: GRPOTrainer takes images only with conversational prompts, so such rows
carry the user turn as a message list (`[{"role": "user", "content": text}]`) plus TRL's
`images` column; the trainer puts one image placeholder per image before the text
(`prepare_multimodal_messages`), renders the chat template with the model's processor and
passes `pixel_values`/`image_grid_thw` to generation and to every forward pass. That renders
exactly the prompt evaluation uses (`format_prompt`, same placement). Completions then come
back as messages, and the rewards read their text.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch

from cpt_bench.choices import KLReference, PeftMethod, RewardScaling, RFTEstimator, VLLMMode, require
from cpt_bench.config import as_schema
from cpt_bench.errors import ConfigError
from cpt_bench.model.vision_zero3 import align_vision_tower
from cpt_bench.paradigms.base import (
    ParadigmSpec,
    StageContext,
    StageResult,
    StageTraining,
    TrainRow,
    common_trainer_args,
    forward_logs,
    lora_config,
    mean_logs,
    prepare_trainer,
    reference_rows,
    save_stage,
)
from cpt_bench.paradigms.loss_terms import with_loss_terms
from cpt_bench.paradigms.vllm_sync import cpu_engine_settings, sync_by_reload
from cpt_bench.progress import reporting_rank
from cpt_bench.tasks.base import Example
from cpt_bench.tasks.grading import format_ok
from cpt_bench.tasks.images import load_images

log = logging.getLogger(__name__)


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
        require(self.vllm_tensor_parallel_size > 0, f"{at}.vllm_tensor_parallel_size", self.vllm_tensor_parallel_size,
                "> 0")
        require(0 < self.vllm_gpu_memory_utilization <= 1, f"{at}.vllm_gpu_memory_utilization",
                self.vllm_gpu_memory_utilization, "in (0, 1]")
        require(self.vllm_max_model_length is None or self.vllm_max_model_length > self.max_completion_length,
                f"{at}.vllm_max_model_length", self.vllm_max_model_length,
                f"> max_completion_length ({self.max_completion_length}) or null")

    def settle(self, cfg) -> None:
        """With peft=lora (or olora), TRL's GRPO computes the KL against the model with its adapter disabled:
        the stage's starting weights. Say so and record it (kl_reference=previous) rather than let
        the config claim the original base."""
        if cfg.peft.name != PeftMethod.none and self.kl_coef and self.kl_reference == KLReference.base:
            log.warning("peft=%s: GRPO's KL reference is the stage's starting weights (the adapter disabled), "
                        "so paradigm.kl_reference is set to previous", cfg.peft.name)
            self.kl_reference = KLReference.previous

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



DIAGNOSTICS = ["reward", "reward_std", "frac_reward_zero_std", "kl", "entropy",
               "completions/mean_length", "rewards/accuracy/mean", "rewards/format/mean"]


def partition_note(model) -> str:
    """How much of `model` this process holds: under ZeRO-3 a partition (DeepSpeed's
    `ds_numel` is a parameter's full size, `ds_tensor` this rank's share), else all of it."""
    full = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    held = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in model.parameters())
    return f"this rank holds {held} of {full} parameters ({100 * held / max(full, 1):.0f} %)"


def vllm_model_length(processing_class, examples: list[Example], style, completion_length: int,
                      multiple: int = 256, limit: int | None = None) -> int:
    """The context colocated vLLM must hold for a stage: its longest prompt in tokens (text and
    image tokens, at the processor's resolution bounds) plus the completion length, rounded up
    to `multiple`, never beyond the model's own context `limit` (vLLM refuses a longer one).
    Without it vLLM sizes its KV cache for the model's whole context (128k tokens for
    Qwen2.5-VL), which does not fit in a 0.3 share of a GPU beside the policy."""
    from cpt_bench.model.processing import image_tokens, text_tokenizer
    from cpt_bench.tasks.images import image_size

    tok = text_tokenizer(processing_class)
    longest = 0
    for ex in examples:
        text = style.prompt(processing_class, ex)
        tokens = len(tok(text, add_special_tokens=False)["input_ids"])
        tokens += sum(image_tokens(processing_class, image_size(ref)) for ref in ex.images)
        longest = max(longest, tokens)
    length = -(-(longest + completion_length) // multiple) * multiple
    return min(length, limit) if limit else length


def cached_autocast(trainer_cls: type) -> type:
    """`trainer_cls` whose rollouts run inside one bf16 autocast region (CPU mixed precision).

    Accelerate autocasts each forward call on its own, and leaving the region drops its cache
    of bf16 weight copies, so every generated token cast every float32 weight again: a third of
    a GRPO step on SmolLM2-135M. Inside one region around the whole generation the copies are
    made once (the weights do not change while it generates); training forwards keep
    accelerate's per-call regions, so no copy outlives an optimizer step."""

    class Trainer(trainer_cls):
        def _generate(self, prompts):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return super()._generate(prompts)

    Trainer.__name__ = Trainer.__qualname__ = trainer_cls.__name__
    return Trainer


def completion_str(completion) -> str:
    """A completion's text: TRL gives plain strings, or messages for conversational prompts."""
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] if isinstance(m["content"], str) else
                   "".join(part.get("text", "") for part in m["content"]) for m in completion)


class RFT:
    name = "rft"
    rollouts = None  # GRPO samples inside its trainer

    @staticmethod
    def rows(examples: list[Example], sampled=None) -> list[TrainRow]:
        return reference_rows(examples)

    def __init__(self, cfg, world_size: int = 1):
        self.cfg = cfg = as_schema(cfg)
        # the schema checks GRPO's batch arithmetic over all processes: a bad batch fails before any work
        self.prompts_per_step = cfg.prompts_per_step(world_size)
        self.completions_per_prompt = cfg.num_generations
        self.completion_length = cfg.max_completion_length

    def trainer_args(self, ctx: StageContext, reward_weights: list[float], model_length: int | None = None):
        """The trainer's config (GRPO's or RLOO's); `model_length`: colocated vLLM's context for this stage."""
        from trl import GRPOConfig, RLOOConfig

        c = self.cfg
        rloo = c.estimator == "rloo"
        # GRPO's own loss aggregation and reward scaling; RLOO's advantages are leave-one-out
        own = {} if rloo else {"loss_type": c.loss_type, "scale_rewards": c.scale_rewards}
        return (RLOOConfig if rloo else GRPOConfig)(
            **common_trainer_args(c, ctx),
            **own,
            # pinned explicitly: these defaults changed across TRL versions
            num_generations=c.num_generations,
            temperature=c.temperature,
            top_p=c.top_p,
            max_completion_length=c.max_completion_length,
            beta=c.kl_coef,
            epsilon=c.epsilon,
            epsilon_high=c.epsilon_high,
            num_iterations=c.num_iterations,
            steps_per_generation=c.generation_steps * c.gradient_accumulation_steps,
            reward_weights=reward_weights,
            use_vllm=c.use_vllm,
            vllm_mode=str(c.vllm_mode),
            vllm_gpu_memory_utilization=c.vllm_gpu_memory_utilization,
            vllm_enable_sleep_mode=c.vllm_enable_sleep_mode,
            vllm_tensor_parallel_size=c.vllm_tensor_parallel_size,
            vllm_max_model_length=model_length,
            # TRL gathers the rollouts' images for its completion log only on ranks whose batch has
            # images: with a text-only batch on another rank the collectives no longer pair up and
            # the job hangs (mixed image/text data over several ranks); the log is not used here
            log_multimodal=False,
        )

    def build_trainer(self, model, processing_class, examples: list[Example], ctx: StageContext):
        """The stage's GRPO (or RLOO) trainer, the callback that keeps its log, the rollout counters."""
        from trl import GRPOTrainer, RLOOTrainer

        style, tasks = ctx.style, ctx.tasks
        counters = {"generated_tokens": 0}
        per_batch = self.prompts_per_step * self.cfg.generation_steps  # one generation batch
        if len(examples) < per_batch:  # e.g. RIF kept few items: GRPO would form no batch at all
            log.warning("only %d items for %d prompts per generation batch: repeating them to fill one",
                        len(examples), per_batch)
            examples = (examples * math.ceil(per_batch / len(examples)))[:per_batch]

        def accuracy(completions, idx, completion_ids=None, **_):
            if completion_ids is not None:  # called once per generation batch: count rollout tokens
                counters["generated_tokens"] += sum(len(ids) for ids in completion_ids)
            return [tasks[examples[i].task].grade(style.extract(completion_str(c)), examples[i])
                    for c, i in zip(completions, idx)]

        def format(completions, **_):  # noqa: A001 - TRL logs the reward under the function's name
            return [format_ok(completion_str(c)) for c in completions]

        funcs, weights = [accuracy], [1.0]
        if style.cot:
            funcs, weights = [accuracy, format], [self.cfg.reward_accuracy_weight, self.cfg.reward_format_weight]
        data = self.dataset(processing_class, examples, style)
        model_length = self.cfg.vllm_max_model_length or (
            vllm_model_length(processing_class, examples, style, self.cfg.max_completion_length,
                              limit=getattr(model.config.get_text_config(), "max_position_embeddings", None))
            if self.cfg.use_vllm else None)
        # which weights the KL reference holds: the original base (paper) or this stage's start
        if self.cfg.kl_coef:
            model.config._name_or_path = ctx.base_path if self.cfg.kl_reference == "base" else ctx.start_path
        logs = forward_logs(ctx)
        if self.cfg.use_vllm and ctx.use_cpu:
            cpu_engine_settings()
        trainer_cls = with_loss_terms(RLOOTrainer if self.cfg.estimator == "rloo" else GRPOTrainer, ctx.loss_terms)
        if ctx.use_cpu and ctx.bf16:
            trainer_cls = cached_autocast(trainer_cls)
        trainer = trainer_cls(
            model=model,
            reward_funcs=funcs,
            args=self.trainer_args(ctx, weights, model_length),
            train_dataset=data,
            processing_class=processing_class,
            callbacks=[logs],
            peft_config=lora_config(ctx),
        )
        prepare_trainer(trainer, ctx)
        if self.cfg.use_vllm and ctx.use_cpu and sync_by_reload(trainer) and reporting_rank():
            log.warning("GRPO through colocated vLLM on a CPU: correct, but slower than paradigm.use_vllm=false here "
                        "(engine and trainer share the cores; measured in docs/cluster.md)")
        reference = getattr(getattr(trainer, "ref_model", None), "module", getattr(trainer, "ref_model", None))
        if reference is not None:
            if ctx.align_vision:
                align_vision_tower(reference, processing_class, training_only=False)
            log.info("KL reference model: %s", partition_note(reference))
        return trainer, logs, counters

    @staticmethod
    def dataset(processing_class, examples: list[Example], style):
        """GRPO rows: `prompt` and `idx` (the item's position, for the reward), plus `images`.

        Text-only: the prompt rendered by `format_prompt`. With images: the user turn as a
        conversation and the images in TRL's `images` column (TRL renders it the same way).
        """
        from datasets import Dataset

        if not any(ex.images for ex in examples):
            return Dataset.from_list([{"prompt": style.prompt(processing_class, ex), "idx": i}
                                      for i, ex in enumerate(examples)])
        return Dataset.from_list([{"prompt": style.messages(ex), "images": load_images(ex.images),
                                   "idx": i} for i, ex in enumerate(examples)])

    def train_stage(self, model, processing_class, examples: list[Example], ctx: StageContext) -> StageResult:
        trainer, logs, counters = self.build_trainer(model, processing_class, examples, ctx)
        start = time.time()
        out = trainer.train()
        seconds = time.time() - start
        metrics = {"train_loss": out.training_loss, **mean_logs(logs.logs, DIAGNOSTICS)}
        saved, model = save_stage(trainer, ctx)
        steps = trainer.state.global_step
        del trainer  # frees the reference model before evaluation
        return StageResult(model=model, optimizer_steps=steps, train_seconds=seconds,
                           generated_tokens=counters["generated_tokens"], metrics=metrics, save_seconds=saved)


PARADIGM = ParadigmSpec("rft", RFTParadigm, RFT)
