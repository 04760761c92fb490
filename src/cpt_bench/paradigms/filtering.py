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

import time
from dataclasses import dataclass

import torch

from cpt_bench import faults
from cpt_bench.processing import text_tokenizer
from cpt_bench.prompts import PromptStyle, encode_prompts, format_prompt
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


@dataclass
class FilterResult:
    kept: list[Example]
    scores: list[list[float]]  # per item, its K rollout accuracies
    keep: list[bool]
    seconds: float
    generated_tokens: int

    @property
    def kept_fraction(self) -> float:
        return len(self.kept) / len(self.keep) if self.keep else 0.0


@torch.no_grad()
def rollout_scores(model, processing_class, examples: list[Example], *, tasks: dict[str, Task], style: PromptStyle,
                   num_rollouts: int, temperature: float, max_new_tokens: int,
                   batch_size: int, engine=None) -> tuple[list[list[float]], int]:
    """`num_rollouts` sampled completions per item, graded; returns the scores (in item order)
    and the generated token count. `batch_size` counts prompts. With an `engine`
    (vllm_engine.VLLMEngine) it samples instead of `model`."""
    if engine is not None:
        prompts = [format_prompt(processing_class, style.user_text(ex), len(ex.images)) for ex in examples]
        samples = engine.generate(prompts, [ex.images for ex in examples], num_samples=num_rollouts,
                                  temperature=temperature, max_new_tokens=max_new_tokens)
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
        for start in range(0, len(group), batch_size):
            idx = group[start : start + batch_size]
            chunk = [examples[i] for i in idx]
            prompts = [format_prompt(processing_class, style.user_text(ex), len(ex.images)) for ex in chunk]
            images = [load_images(ex.images) for ex in chunk] if group is visual else None
            enc = encode_prompts(processing_class, prompts, images, model.device)
            out = model.generate(**enc, do_sample=True, temperature=temperature, top_p=1.0, top_k=0,
                                 num_return_sequences=num_rollouts, max_new_tokens=max_new_tokens,
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


def filter_items(model, processing_class, examples: list[Example], *, tasks: dict[str, Task], style: PromptStyle,
                 rule: str, num_rollouts: int, temperature: float, max_new_tokens: int,
                 batch_size: int, engine=None) -> FilterResult:
    """Roll out every item and keep those `rule` accepts; `batch_size` counts completions."""
    start = time.time()
    scores, tokens = rollout_scores(model, processing_class, examples, tasks=tasks, style=style,
                                    num_rollouts=num_rollouts, temperature=temperature,
                                    max_new_tokens=max_new_tokens, batch_size=max(1, batch_size // num_rollouts),
                                    engine=engine)
    keep = [keep_item(s, rule) for s in scores]
    kept = [ex for ex, ok in zip(examples, keep) if ok]
    return FilterResult(kept, scores, keep, time.time() - start, tokens)
