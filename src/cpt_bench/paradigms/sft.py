"""SFT stage: TRL's SFTTrainer on prompt/completion pairs, loss on the completion only.

Prompts are formatted exactly as evaluation formats them (`format_prompt`), so the model
is trained on the context it is tested in. Items with images add TRL's `images` column (a
list of PIL images per row, one per placeholder in the prompt) and the trainer gets the
model's processor: SFTTrainer then collates with `DataCollatorForVisionLanguageModeling`,
which runs the processor on prompt and images (expanding each placeholder into the image's
tokens, adding `pixel_values` and `image_grid_thw`) and masks the loss to the completion.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cpt_bench.choices import require
from cpt_bench.config import as_schema
from cpt_bench.model.prompts import completion_text, format_prompt
from cpt_bench.paradigms.base import (
    ParadigmSpec,
    StageContext,
    StageResult,
    StageTraining,
    common_trainer_args,
    forward_logs,
    lora_config,
    mean_logs,
    save_stage,
)
from cpt_bench.tasks.base import Example
from cpt_bench.tasks.images import load_images


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



class SFT:
    name = "sft"
    completions_per_prompt = 1
    completion_length = None  # SFT generates nothing

    def __init__(self, cfg, world_size: int = 1):
        self.cfg = cfg = as_schema(cfg)
        self.prompts_per_step = cfg.prompts_per_step(world_size)

    def trainer_args(self, ctx: StageContext):
        from trl import SFTConfig

        return SFTConfig(
            **common_trainer_args(self.cfg, ctx),
            max_length=self.cfg.max_length,
            completion_only_loss=True,  # pinned: the loss is on the answer only
            packing=False,
        )

    def dataset(self, processing_class, examples: list[Example], ctx: StageContext):
        """prompt/completion rows (standard format: the prompt already rendered), plus `images`."""
        from datasets import Dataset

        rows = [
            {
                "prompt": format_prompt(processing_class, ctx.style.user_text(ex), len(ex.images)),
                "completion": completion_text(processing_class, ctx.style.target(ex)),
            }
            for ex in examples
        ]
        if any(ex.images for ex in examples):
            for row, ex in zip(rows, examples):
                row["images"] = load_images(ex.images)
        return Dataset.from_list(rows)

    def train_stage(self, model, processing_class, examples: list[Example], ctx: StageContext) -> StageResult:
        from transformers import PrinterCallback
        from trl import SFTTrainer

        data = self.dataset(processing_class, examples, ctx)
        logs = forward_logs(ctx)
        trainer = SFTTrainer(
            model=model,
            args=self.trainer_args(ctx),
            train_dataset=data,
            processing_class=processing_class,
            callbacks=[logs],
            peft_config=lora_config(ctx),
        )
        trainer.remove_callback(PrinterCallback)  # the stage loop prints progress itself
        start = time.time()
        out = trainer.train()
        seconds = time.time() - start
        metrics = {"train_loss": out.training_loss, **mean_logs(logs.logs, ["entropy", "mean_token_accuracy"])}
        saved, model = save_stage(trainer, ctx)
        return StageResult(model=model, optimizer_steps=trainer.state.global_step, train_seconds=seconds,
                           metrics=metrics, save_seconds=saved)


PARADIGM = ParadigmSpec("sft", SFTParadigm, SFT)
