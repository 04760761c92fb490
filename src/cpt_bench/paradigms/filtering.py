"""RIF-RFT: rollout-based instance filtering before a stage.

K sampled rollouts per training item with the model as it stands at the start of the stage;
an item is kept when it can teach GRPO something:
  solvable          at least one of K correct (the authors' code)
  nonzero_variance  some right and some wrong (a group whose rewards all agree has zero
                    advantage, so contributes no GRPO signal)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from cpt_bench.models import format_prompt
from cpt_bench.prompts import PromptStyle
from cpt_bench.tasks.base import Example, Task

KEEP_RULES = ("solvable", "nonzero_variance")


def keep_item(scores: list[float], rule: str) -> bool:
    """Decide one item from its K rollout accuracies (each 0 or 1)."""
    correct = sum(s >= 1.0 for s in scores)
    if rule == "solvable":
        return correct >= 1
    if rule == "nonzero_variance":
        return 0 < correct < len(scores)
    raise ValueError(f"unknown keep rule {rule!r}; use one of {KEEP_RULES}")


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
def rollout_scores(model, tokenizer, examples: list[Example], tasks: dict[str, Task], style: PromptStyle,
                   k: int, temperature: float, max_new_tokens: int, batch_size: int) -> tuple[list[list[float]], int]:
    """K sampled completions per item, graded; returns the scores and the generated token count."""
    model.eval()
    tokenizer.padding_side = "left"
    scores: list[list[float]] = []
    tokens = 0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        enc = tokenizer([format_prompt(tokenizer, style.user_text(ex)) for ex in chunk], return_tensors="pt",
                        padding=True, add_special_tokens=False).to(model.device)
        out = model.generate(**enc, do_sample=True, temperature=temperature, top_p=1.0, top_k=0,
                             num_return_sequences=k, max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        new = out[:, enc["input_ids"].shape[1] :]
        tokens += int((new != tokenizer.pad_token_id).sum())
        texts = tokenizer.batch_decode(new, skip_special_tokens=True)
        for i, ex in enumerate(chunk):
            group = texts[i * k : (i + 1) * k]  # generate() keeps each prompt's K samples together
            scores.append([tasks[ex.task].grade(style.extract(t), ex) for t in group])
    return scores, tokens


def filter_items(model, tokenizer, examples: list[Example], tasks: dict[str, Task], style: PromptStyle,
                 rule: str, k: int, temperature: float, max_new_tokens: int, batch_size: int) -> FilterResult:
    start = time.time()
    scores, tokens = rollout_scores(model, tokenizer, examples, tasks, style, k, temperature, max_new_tokens,
                                    max(1, batch_size // k))
    keep = [keep_item(s, rule) for s in scores]
    kept = [ex for ex, ok in zip(examples, keep) if ok]
    return FilterResult(kept, scores, keep, time.time() - start, tokens)
