"""RIF-RFT: rollout-based instance filtering before a stage.

K sampled rollouts per training item with the model as it stands at the start of the stage;
an item is kept when it can teach GRPO something:
  solvable          at least one of K correct (the authors' code)
  nonzero_variance  some right and some wrong (a group whose rewards all agree has zero
                    advantage, so contributes no GRPO signal)
Items with images are rolled out through the model's processor with their images, text-only
items through its tokenizer, each in batches of their own kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cpt_bench import faults
from cpt_bench.config import FilterConfig
from cpt_bench.model.processing import text_tokenizer
from cpt_bench.model.prompts import PromptStyle, encode_prompts, format_prompt
from cpt_bench.tasks.base import Example, Task
from cpt_bench.tasks.images import load_images

# rule name (config.KeepRule) -> does an item with `correct` of `total` rollouts right stay?
KEEP_RULES = {
    "solvable": lambda correct, total: correct >= 1,
    "nonzero_variance": lambda correct, total: 0 < correct < total,
}


def keep_item(scores: list[float], rule: str) -> bool:
    """Decide one item from its K rollout accuracies (each 0 or 1)."""
    return KEEP_RULES[rule](sum(s >= 1.0 for s in scores), len(scores))


@dataclass(frozen=True)
class Rollouts:
    """How RIF samples: `num_rollouts` completions per item at `temperature`, up to
    `max_new_tokens` tokens, `prompts_per_batch` items a generation batch."""

    num_rollouts: int
    temperature: float
    max_new_tokens: int
    prompts_per_batch: int

    @classmethod
    def of(cls, f: FilterConfig, max_new_tokens: int) -> Rollouts:
        """From `filter.*` (whose batch_size counts completions)."""
        return cls(f.num_rollouts, f.temperature, max_new_tokens, max(1, f.batch_size // f.num_rollouts))


@torch.no_grad()
def rollout_scores(model, processing_class, examples: list[Example], rollouts: Rollouts, *, tasks: dict[str, Task],
                   style: PromptStyle, engine=None) -> tuple[list[list[float]], int]:
    """`rollouts.num_rollouts` sampled completions per item, graded; returns the scores (in item
    order) and the generated token count. With an `engine` (vllm_engine.VLLMEngine) it samples
    instead of `model`."""
    num_rollouts = rollouts.num_rollouts
    if engine is not None:
        prompts = [format_prompt(processing_class, style.user_text(ex), len(ex.images)) for ex in examples]
        samples = engine.generate(prompts, [ex.images for ex in examples], num_samples=num_rollouts,
                                  temperature=rollouts.temperature, max_new_tokens=rollouts.max_new_tokens)
        tok = text_tokenizer(processing_class)
        tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for texts in samples for t in texts)
        return [[tasks[ex.task].grade(style.extract(t), ex) for t in texts]
                for ex, texts in zip(examples, samples)], tokens
    model.eval()
    tok = text_tokenizer(processing_class)
    scores: list[list[float]] = [[] for _ in examples]
    tokens = 0
    plain = [i for i, ex in enumerate(examples) if not ex.images]
    visual = [i for i, ex in enumerate(examples) if ex.images]
    for group in (plain, visual):
        for start in range(0, len(group), rollouts.prompts_per_batch):
            idx = group[start : start + rollouts.prompts_per_batch]
            chunk = [examples[i] for i in idx]
            prompts = [format_prompt(processing_class, style.user_text(ex), len(ex.images)) for ex in chunk]
            images = [load_images(ex.images) for ex in chunk] if group is visual else None
            enc = encode_prompts(processing_class, prompts, images, model.device)
            out = model.generate(**enc, do_sample=True, temperature=rollouts.temperature, top_p=1.0, top_k=0,
                                 num_return_sequences=num_rollouts, max_new_tokens=rollouts.max_new_tokens,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            new = out[:, enc["input_ids"].shape[1] :]
            tokens += int((new != tok.pad_token_id).sum())
            texts = tok.batch_decode(new, skip_special_tokens=True)
            for j, (i, ex) in enumerate(zip(idx, chunk)):
                # generate() keeps each prompt's samples together
                samples = texts[j * num_rollouts : (j + 1) * num_rollouts]
                scores[i] = [tasks[ex.task].grade(style.extract(t), ex) for t in samples]
            faults.reached("rif_rollouts")
    return scores, tokens
