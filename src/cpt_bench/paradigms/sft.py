"""SFT stage: TRL's SFTTrainer on prompt/completion pairs, loss on the completion only.

Prompts are formatted exactly as evaluation formats them (`format_prompt`), so the model
is trained on the context it is tested in.
"""

from __future__ import annotations

import time

from datasets import Dataset
from transformers import PrinterCallback, TrainerCallback
from trl import SFTConfig, SFTTrainer

from cpt_bench.models import completion_text, format_prompt
from cpt_bench.paradigms import StageContext, StageResult
from cpt_bench.tasks.base import Example


class ForwardLogs(TrainerCallback):
    """Hands every trainer log event to the stage loop (terminal, files, W&B)."""

    def __init__(self, ctx: StageContext):
        self.ctx = ctx

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.ctx.on_log(state.global_step, state.max_steps, dict(logs))


class SFT:
    name = "sft"

    def __init__(self, cfg):
        self.cfg = cfg

    def epochs_for(self, task: str) -> float:
        return float(self.cfg.epochs_per_task.get(task, self.cfg.epochs))

    def trainer_args(self, ctx: StageContext) -> SFTConfig:
        c = self.cfg
        return SFTConfig(
            output_dir=str(ctx.work_dir),
            learning_rate=c.learning_rate,
            lr_scheduler_type=c.lr_scheduler_type,
            warmup_steps=c.warmup_ratio,  # transformers 5: a float < 1 is a ratio of all steps
            weight_decay=c.weight_decay,
            num_train_epochs=self.epochs_for(ctx.task.name),
            max_steps=c.max_steps,
            per_device_train_batch_size=c.per_device_batch_size,
            gradient_accumulation_steps=c.gradient_accumulation_steps,
            activation_checkpointing=c.gradient_checkpointing,
            max_length=c.max_length,
            completion_only_loss=True,  # pinned: the loss is on the answer only
            packing=False,
            logging_steps=c.logging_steps,
            save_strategy="no",  # the stage loop saves one checkpoint per stage
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

    def train_stage(self, model, tokenizer, examples: list[Example], ctx: StageContext) -> StageResult:
        data = Dataset.from_list(
            [
                {"prompt": format_prompt(tokenizer, ex.prompt), "completion": completion_text(tokenizer, ex.answer)}
                for ex in examples
            ]
        )
        trainer = SFTTrainer(
            model=model,
            args=self.trainer_args(ctx),
            train_dataset=data,
            processing_class=tokenizer,
            callbacks=[ForwardLogs(ctx)],
        )
        trainer.remove_callback(PrinterCallback)  # the stage loop prints progress itself
        start = time.time()
        out = trainer.train()
        seconds = time.time() - start
        metrics = {"train_loss": out.training_loss}
        return StageResult(trainer.model, trainer.state.global_step, seconds, metrics)
