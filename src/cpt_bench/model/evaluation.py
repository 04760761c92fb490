"""Batched greedy evaluation of every task: one row of the accuracy matrix per call.

Prompts are left-padded (right padding silently corrupts batched generation of a causal
LM) and sorted by length so a batch wastes little padding: items with images by their
tokens, image tokens included (a photo can be thousands of tokens under a one-line
question), text-only items by their characters (a close proxy, and the order the pinned
reference matrices were made with). Items with images go through the
model's processor (their images loaded a batch at a time); text-only items take the plain
tokenizer path. Every generation is kept with its score, so a matrix entry can always be
traced back to the responses behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cpt_bench.model.processing import image_tokens, text_tokenizer
from cpt_bench.model.prompts import PromptStyle, encode_prompts
from cpt_bench.progress import Progress
from cpt_bench.tasks.base import Example, Task
from cpt_bench.tasks.grading import format_ok
from cpt_bench.tasks.images import image_size, load_images


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
def generate(model, processing_class, prompts: list[str], batch_size: int, max_new_tokens: int,
             images: list | None = None, what: str = "generation") -> list[str]:
    """Greedy completions for `prompts`, in their order.

    `images[i]`, when given, holds prompt i's images (lazy references with `.load()`, or PIL
    images), one per placeholder in the prompt; they are loaded a batch at a time and go
    through the processor with the text.
    """
    if not prompts:
        return []
    tok = text_tokenizer(processing_class)
    cost = prompt_tokens(processing_class, prompts, images) if images is not None else [len(p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: cost[i])
    out: list[str] = [""] * len(prompts)
    model.eval()
    progress = Progress(what, len(order), "prompt")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch_images = [load_images(images[i]) for i in idx] if images is not None else None
        enc = encode_prompts(processing_class, [prompts[i] for i in idx], batch_images, model.device)
        gen = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        texts = tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        for i, text in zip(idx, texts):
            out[i] = text
        progress.update(len(idx))
    progress.close()
    return out


def prompt_tokens(processing_class, prompts: list[str], images: list) -> list[int]:
    """Each prompt's length in tokens with its images' tokens (at the processor's resolution
    bounds; an image's size is read from its header, its pixels are not decoded)."""
    tok = text_tokenizer(processing_class)
    lengths = [len(ids) for ids in tok(prompts, add_special_tokens=False)["input_ids"]]
    return [n + sum(image_tokens(processing_class, image_size(ref)) for ref in refs)
            for n, refs in zip(lengths, images)]


def evaluate_tasks(
    model,
    processing_class,
    tasks: dict[str, Task],
    test_sets: dict[str, list[Example]],
    style: PromptStyle,
    batch_size: int = 128,
    max_new_tokens: int = 32,
    engine=None,
) -> dict[str, list[EvalRecord]]:
    """Generate for all tasks' test items in one pass and grade each with its task's grader.

    `processing_class` is a tokenizer, or a processor for a vision-language model. Text-only
    items are generated together through the tokenizer; items with images together through
    the processor. With an `engine` (vllm_engine.VLLMEngine) it generates instead of `model`.
    """
    items = [ex for name in test_sets for ex in test_sets[name]]
    prompts = [style.prompt(processing_class, ex) for ex in items]
    if engine is not None:
        samples = engine.generate(prompts, [ex.images for ex in items], max_new_tokens=max_new_tokens)
        return grade(items, prompts, [s[0] for s in samples], tasks, style, test_sets)
    responses = [""] * len(items)
    plain = [i for i, ex in enumerate(items) if not ex.images]
    visual = [i for i, ex in enumerate(items) if ex.images]
    for group in (plain, visual):
        images = [items[i].images for i in group] if group is visual else None
        for i, resp in zip(group, generate(model, processing_class, [prompts[i] for i in group], batch_size,
                                           max_new_tokens, images=images, what="evaluation")):
            responses[i] = resp
    return grade(items, prompts, responses, tasks, style, test_sets)


def grade(items: list[Example], prompts: list[str], responses: list[str], tasks: dict[str, Task],
          style: PromptStyle, test_sets: dict[str, list[Example]]) -> dict[str, list[EvalRecord]]:
    """Each response graded by its item's task, as records per task (in `test_sets`' order)."""
    records: dict[str, list[EvalRecord]] = {name: [] for name in test_sets}
    for ex, prompt, resp in zip(items, prompts, responses):
        extracted = style.extract(resp)
        score = tasks[ex.task].grade(extracted, ex)
        records[ex.task].append(EvalRecord(ex.task, prompt, ex.answer, resp, extracted, score, format_ok(resp)))
    return records


def accuracy(records: list[EvalRecord]) -> float:
    return sum(r.score for r in records) / len(records) if records else 0.0
