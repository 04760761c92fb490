"""SFT stage: TRL's SFTTrainer on prompt/completion pairs, loss on the completion only.

Prompts are formatted exactly as evaluation formats them (`format_prompt`), so the model
is trained on the context it is tested in. Items with images add TRL's `images` column (a
list of PIL images per row, one per placeholder in the prompt) and the trainer gets the
model's processor: SFTTrainer then collates with `DataCollatorForVisionLanguageModeling`,
which runs the processor on prompt and images (expanding each placeholder into the image's
tokens, adding `pixel_values` and `image_grid_thw`) and masks the loss to the completion.

`weighting` scales each item's loss by its reward variance under the current model:
p(1-p) (`reward_variance`, the scale of a GRPO gradient on a prompt whose K rewards have mean
p, before normalisation) or sqrt(p(1-p)) (`reward_std`, what is left of it after GRPO's
group normalisation divides by the group's standard deviation, TRL's `scale_rewards=group`),
p the item's success rate over `num_rollouts` samples drawn before the stage (the paradigm's
rollout step). Weights are normalised to mean 1 over the items with a non-zero weight; an
item the model always or never solves (p in {0, 1}) weighs 0 and is not trained on, which is
what RIF's `nonzero_variance` filter does with a hard 0/1 weight instead of a graded one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from cpt_bench.choices import SFTWeighting, require
from cpt_bench.config import as_schema
from cpt_bench.model.prompts import completion_text
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
from cpt_bench.paradigms.rollouts import Rollouts, Sampled
from cpt_bench.tasks.base import Example
from cpt_bench.tasks.images import load_images


@dataclass
class SFTParadigm(StageTraining):
    """Supervised fine-tuning through TRL's SFTTrainer, loss on the completion only."""

    name: str = "sft"
    learning_rate: float = 3e-4
    epochs: float = 5.0
    max_length: int = 128
    weighting: SFTWeighting = SFTWeighting.none
    # the rollout step (weighting, self-SFT): K samples per item at this temperature, this many
    # completions per generation batch
    num_rollouts: int = 8
    rollout_temperature: float = 1.0
    rollout_batch_size: int = 256

    def validate(self, at: str = "paradigm") -> None:
        super().validate(at)
        require(self.max_length > 0, f"{at}.max_length", self.max_length, "> 0")
        require(self.num_rollouts >= 2 or self.weighting == SFTWeighting.none, f"{at}.num_rollouts",
                self.num_rollouts, ">= 2 with weighting (a success rate from one sample is 0 or 1: every weight 0)")
        require(self.num_rollouts >= 1, f"{at}.num_rollouts", self.num_rollouts, ">= 1")
        require(self.rollout_temperature > 0, f"{at}.rollout_temperature", self.rollout_temperature, "> 0")
        require(self.rollout_batch_size > 0, f"{at}.rollout_batch_size", self.rollout_batch_size, "> 0")


# p -> an item's raw weight (normalised afterwards)
WEIGHTS = {SFTWeighting.reward_variance: lambda p: p * (1 - p),
           SFTWeighting.reward_std: lambda p: math.sqrt(p * (1 - p))}


def item_weights(success_rates: list[float], weighting: SFTWeighting) -> list[float]:
    """Each item's loss weight from its success rate p: WEIGHTS[weighting](p), divided by the
    mean over the items whose weight is not 0 (so those average 1); all 0 if every one is."""
    raw = [WEIGHTS[weighting](p) for p in success_rates]
    nonzero = [w for w in raw if w > 0]
    mean = sum(nonzero) / len(nonzero) if nonzero else 1.0
    return [w / mean for w in raw]


class SFT:
    name = "sft"
    completions_per_prompt = 1
    completion_length = None  # SFT generates nothing (its rollout step samples up to eval.max_new_tokens)

    def __init__(self, cfg, world_size: int = 1):
        self.cfg = cfg = as_schema(cfg)
        self.prompts_per_step = cfg.prompts_per_step(world_size)
        self.rollouts = None if cfg.weighting == SFTWeighting.none else Rollouts.of(
            cfg.num_rollouts, cfg.rollout_temperature, None, cfg.rollout_batch_size, purpose=str(cfg.weighting))

    def rows(self, examples: list[Example], sampled: list[Sampled] | None) -> list[TrainRow]:
        """Every item towards its reference answer; with weighting, weighted (weight 0: dropped)."""
        if self.cfg.weighting == SFTWeighting.none or sampled is None:
            return reference_rows(examples)
        weights = item_weights([s.success_rate for s in sampled], self.cfg.weighting)
        return [TrainRow(ex, None, w) for ex, w in zip(examples, weights) if w > 0]

    def trainer_args(self, ctx: StageContext):
        from trl import SFTConfig

        return SFTConfig(
            **common_trainer_args(self.cfg, ctx),
            max_length=self.cfg.max_length,
            completion_only_loss=True,  # pinned: the loss is on the answer only
            packing=False,
        )

    @property
    def weighted(self) -> bool:
        return self.cfg.weighting != SFTWeighting.none

    def dataset(self, processing_class, rows: list[TrainRow], ctx: StageContext):
        """prompt/completion rows (standard format: the prompt already rendered), plus `images`,
        plus `weight` when the loss is weighted. A sampled completion (decoded, so without the
        leading space a tokenizer without a chat template puts before a continuation) becomes a
        target exactly as a reference answer does (`completion_text`)."""
        from datasets import Dataset

        data = [
            {
                "prompt": ctx.style.prompt(processing_class, row.example),
                "completion": completion_text(processing_class, ctx.style.target(row.example)
                                              if row.completion is None else row.completion),
            }
            for row in rows
        ]
        if self.weighted:
            for out, row in zip(data, rows):
                out["weight"] = row.weight
        if any(row.example.images for row in rows):
            for out, row in zip(data, rows):
                out["images"] = load_images(row.example.images)
        return Dataset.from_list(data)

    def train_stage(self, model, processing_class, examples: list[Example], ctx: StageContext) -> StageResult:
        from trl import SFTTrainer

        data = self.dataset(processing_class, self.rows(examples, ctx.rollouts), ctx)
        logs = forward_logs(ctx)
        trainer_cls = with_loss_terms(weighted_trainer() if self.weighted else SFTTrainer, ctx.loss_terms)
        trainer = trainer_cls(
            model=model,
            args=self.trainer_args(ctx),
            train_dataset=data,
            processing_class=processing_class,
            callbacks=[logs],
            peft_config=lora_config(ctx),
        )
        prepare_trainer(trainer, ctx)
        start = time.time()
        out = trainer.train()
        seconds = time.time() - start
        metrics = {"train_loss": out.training_loss, **mean_logs(logs.logs, ["entropy", "mean_token_accuracy"])}
        saved, model = save_stage(trainer, ctx)
        return StageResult(model=model, optimizer_steps=trainer.state.global_step, train_seconds=seconds,
                           metrics=metrics, save_seconds=saved)


def weighted_trainer():
    """TRL's SFTTrainer with a per-row loss weight (the dataset's `weight` column): the loss is
    sum over rows of weight x the row's summed token NLL, over the batch's completion tokens
    (TRL's own normalisation), so weights of 1 give SFTTrainer's loss."""
    import torch
    from trl import SFTTrainer

    class WeightedSFTTrainer(SFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.data_collator = _WithWeights(self.data_collator)
            self.compute_loss_func = self._weighted_loss  # TRL calls it with the full logits
            self._weights = None

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if "weight" not in self._signature_columns:  # else the trainer drops the column
                self._signature_columns = [*self._signature_columns, "weight"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            self._weights = inputs.pop("weight")
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

        def _weighted_loss(self, outputs, labels, num_items_in_batch=None):
            logits, targets = outputs.logits[:, :-1].float(), labels[:, 1:]
            mask = targets != -100
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")
            per_row = (nll * mask).sum(1) * self._weights.to(nll)
            tokens = mask.sum() if num_items_in_batch is None else num_items_in_batch
            return per_row.sum() / torch.as_tensor(tokens, device=nll.device).clamp(min=1)

    return WeightedSFTTrainer


class _WithWeights:
    """A collator that sets each row's `weight` aside, collates the rest with TRL's own
    collator and adds the weights as one tensor."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples):
        import torch

        weights = torch.tensor([float(ex["weight"]) for ex in examples])
        batch = self.inner([{k: v for k, v in ex.items() if k != "weight"} for ex in examples])
        batch["weight"] = weights
        return batch


PARADIGM = ParadigmSpec("sft", SFTParadigm, SFT)
