"""Batched greedy evaluation of every task: one row of the accuracy matrix per call.

Prompts are left-padded (right padding silently corrupts batched generation of a causal
LM) and sorted by length so a batch wastes little padding. Every generation is kept with
its score, so a matrix entry can always be traced back to the responses behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cpt_bench.grading import format_ok
from cpt_bench.models import format_prompt
from cpt_bench.prompts import PromptStyle
from cpt_bench.tasks.base import Example, Task


@dataclass
class EvalRecord:
    task: str
    prompt: str  # the exact text the model was conditioned on
    answer: str  # the reference
    response: str  # the raw generation
    extracted: str | None  # what was graded (the boxed answer with CoT)
    score: float  # 0/1 accuracy
    format_ok: float  # follows <think>...</think> ... \boxed{} (meaningful with CoT)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], batch_size: int, max_new_tokens: int) -> list[str]:
    """Greedy completions for `prompts`, in their order."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    tokenizer.padding_side = "left"
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(model.device)
        gen = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        texts = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        for i, text in zip(idx, texts):
            out[i] = text
    return out


def evaluate_tasks(
    model,
    tokenizer,
    tasks: dict[str, Task],
    test_sets: dict[str, list[Example]],
    style: PromptStyle,
    batch_size: int = 128,
    max_new_tokens: int = 32,
) -> dict[str, list[EvalRecord]]:
    """Generate for all tasks' test items in one pass and grade each with its task's grader."""
    items = [ex for name in test_sets for ex in test_sets[name]]
    prompts = [format_prompt(tokenizer, style.user_text(ex)) for ex in items]
    responses = generate(model, tokenizer, prompts, batch_size, max_new_tokens)
    records: dict[str, list[EvalRecord]] = {name: [] for name in test_sets}
    for ex, prompt, resp in zip(items, prompts, responses):
        extracted = style.extract(resp)
        score = tasks[ex.task].grade(extracted, ex)
        records[ex.task].append(EvalRecord(ex.task, prompt, ex.answer, resp, extracted, score, format_ok(resp)))
    return records


def accuracy(records: list[EvalRecord]) -> float:
    return sum(r.score for r in records) / len(records) if records else 0.0
