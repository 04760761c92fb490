"""SmolLM2-135M-Instruct after a short format-alignment step (`model=smollm2_135m_aligned`).

The paper starts from an instruct model that already answers in its format. SmolLM2-135M-
Instruct knows many answers of the natural benchmark ("The capital of France is Paris.") but
never gives one bare, nor inside `\\boxed{}`, so every exact grader scores it 0 and GRPO gets
no reward to learn from. This step teaches the format and nothing else: SFT (TRL's
SFTTrainer, loss on the answer) on the benchmark's format tasks, which share no question type
with any CPT or general task, half of the items in the CoT format. It is part of the base's
recipe: the cache folder is keyed by the recipe, and build.json records it with the loss.

    model=smollm2_135m_aligned   ->   <cache>/smollm2-135m-aligned-<hash>/   (once; 30 optimizer steps)
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from cpt_bench.builtin.cache import cache_root, publish_build
from cpt_bench.config import FormatAlignment
from cpt_bench.progress import trainer_progress

log = logging.getLogger(__name__)

ALIGN_VERSION = 1  # bump when the step below changes


def alignment_rows(processing_class, recipe: FormatAlignment) -> list[dict]:
    """prompt/completion rows in the exact format SFT, RFT and evaluation use (`PromptStyle`)."""
    from cpt_bench.model.prompts import PromptStyle, completion_text
    from cpt_bench.tasks.natural import COT_INSTRUCTION, FORMAT_GENERATORS, SHORT_ANSWER, natural_tasks

    styles = {cot: PromptStyle(cot, COT_INSTRUCTION, SHORT_ANSWER, "\n") for cot in (False, True)}
    rng = random.Random(recipe.seed)
    rows = []
    for task in natural_tasks(seed=recipe.seed, generators=FORMAT_GENERATORS).values():
        for ex in task.items(recipe.items_per_task, stream="align"):
            style = styles[rng.random() < recipe.cot_share]
            rows.append({"prompt": style.prompt(processing_class, ex),
                         "completion": completion_text(processing_class, style.target(ex))})
    rng.shuffle(rows)
    return rows


def aligned_key(base: Path, recipe: FormatAlignment, rows: list[dict]) -> str:
    h = hashlib.sha256(json.dumps({"base": base.name, **asdict(recipe), "v": ALIGN_VERSION}, sort_keys=True).encode())
    for row in rows:
        h.update((row["prompt"] + row["completion"]).encode())
    return h.hexdigest()[:12]


def build_aligned_smollm2(recipe: FormatAlignment, cache_dir: str | Path | None = None) -> Path:
    """Return the aligned model's folder, building it from the converted SmolLM2 on first use."""
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from cpt_bench.builtin.smollm2 import build_smollm2
    from cpt_bench.model.loading import load_checkpoint, resolve_precision

    base = build_smollm2(cache_dir)
    model, tokenizer = load_checkpoint(base)
    rows = alignment_rows(tokenizer, recipe)
    target = cache_root(cache_dir) / f"smollm2-135m-aligned-{aligned_key(base, recipe, rows)}"
    if (target / "build.json").exists():
        return target
    log.info("format-aligning SmolLM2-135M-Instruct on %d items of the format tasks into %s (once)",
             len(rows), target)
    start = time.time()
    # TRL's SFTConfig defaults to bf16, which a CPU without native bf16 emulates: 2.5 min a step
    # on an AVX2-only AMD EPYC, 17x fp32. `auto`: bf16 where the hardware has it, as a run's.
    precision = resolve_precision("auto")
    torch.manual_seed(recipe.seed)
    with tempfile.TemporaryDirectory() as work:
        trainer = SFTTrainer(
            model=model, processing_class=tokenizer, train_dataset=Dataset.from_list(rows),
            args=SFTConfig(output_dir=work, learning_rate=recipe.learning_rate, num_train_epochs=recipe.epochs,
                           per_device_train_batch_size=recipe.batch_size, lr_scheduler_type="constant",
                           seed=recipe.seed, data_seed=recipe.seed, use_cpu=not torch.cuda.is_available(),
                           completion_only_loss=True, packing=False, save_strategy="no", report_to=[],
                           logging_steps=5, disable_tqdm=True, bf16=precision.trainer_bf16),
            callbacks=[trainer_progress("format alignment")])
        trainer.remove_callback(PrinterCallback)
        out = trainer.train()
    publish_build(target, trainer.model, tokenizer, {
        "model": "SmolLM2-135M-Instruct, format-aligned",
        "base": base.name,
        "recipe": {**asdict(recipe), "version": ALIGN_VERSION},
        "items": len(rows),
        "precision": precision.describe(),
        "optimizer_steps": trainer.state.global_step,
        "train_loss": out.training_loss,
        "build_seconds": round(time.time() - start, 1),
    })
    log.info("format-aligned SmolLM2 in %.0f s (%d steps, loss %.3f)", time.time() - start,
             trainer.state.global_step, out.training_loss)
    return target
