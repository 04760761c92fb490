"""Rollouts before a stage's training: K sampled, graded completions per training item, drawn
with the model as it stands at the start of the stage.

Two users share this one path: RIF's filter (filtering.py, which reads the scores) and a
paradigm that declares a rollout step (`Paradigm.rollouts`, read once by the stage loop): self-SFT
trains on the rewarded completions, reward-variance-weighted SFT weighs each item by its
success rate. Items with images are rolled out through the model's processor with their
images, text-only items through its tokenizer, each in batches of their own kind; with an
`engine` (vllm_engine.VLLMEngine) the engine samples instead of the model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from cpt_bench import faults
from cpt_bench.model.processing import text_tokenizer
from cpt_bench.model.prompts import PromptStyle, encode_prompts
from cpt_bench.progress import Progress
from cpt_bench.tasks.base import Example, Task
from cpt_bench.tasks.images import load_images


@dataclass(frozen=True)
class Rollouts:
    """How to sample: `num_rollouts` completions per item at `temperature`, up to
    `max_new_tokens` tokens (None: the run's `eval.max_new_tokens`, for a paradigm that has no
    completion length of its own), `prompts_per_batch` items a generation batch."""

    num_rollouts: int
    temperature: float
    max_new_tokens: int | None
    prompts_per_batch: int
    purpose: str = "rif"  # what they are for (rif, self_sft, reward_variance, ...): the stage's record

    @classmethod
    def of(cls, num_rollouts: int, temperature: float, max_new_tokens: int | None, batch_size: int,
           purpose: str = "rif") -> Rollouts:
        """From settings whose `batch_size` counts completions per generation batch."""
        return cls(num_rollouts, temperature, max_new_tokens, max(1, batch_size // num_rollouts), purpose)

    def length(self, default: int) -> Rollouts:
        """These rollouts with a completion length: their own, else `default`."""
        return replace(self, max_new_tokens=self.max_new_tokens or default)


@dataclass
class Sampled:
    """One item's rollouts: the completions as decoded (special tokens dropped) and their grades."""

    completions: list[str]
    scores: list[float]

    @property
    def correct(self) -> list[str]:
        """The completions the task's reward grades correct (score 1), in sampling order."""
        return [c for c, s in zip(self.completions, self.scores) if s >= 1.0]

    @property
    def success_rate(self) -> float:
        """p: the share of the K rollouts graded correct."""
        return sum(s >= 1.0 for s in self.scores) / len(self.scores) if self.scores else 0.0


@torch.no_grad()
def sample_rollouts(model, processing_class, examples: list[Example], rollouts: Rollouts, *, tasks: dict[str, Task],
                    style: PromptStyle, engine=None) -> tuple[list[Sampled], int]:
    """`rollouts.num_rollouts` sampled completions per item, graded: one `Sampled` per item (in
    item order) and the number of tokens generated. `rollouts.max_new_tokens` must be set."""
    num_rollouts, length = rollouts.num_rollouts, rollouts.max_new_tokens
    if engine is not None:
        prompts = [style.prompt(processing_class, ex) for ex in examples]
        samples = engine.generate(prompts, [ex.images for ex in examples], num_samples=num_rollouts,
                                  temperature=rollouts.temperature, max_new_tokens=length)
        tok = text_tokenizer(processing_class)
        tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for texts in samples for t in texts)
        return [_graded(list(texts), ex, tasks, style) for ex, texts in zip(examples, samples)], tokens
    model.eval()
    tok = text_tokenizer(processing_class)
    out: list[Sampled] = [Sampled([], []) for _ in examples]
    tokens = 0
    plain = [i for i, ex in enumerate(examples) if not ex.images]
    visual = [i for i, ex in enumerate(examples) if ex.images]
    progress = Progress(f"rollouts (K={num_rollouts})", len(examples), "prompt")
    for group in (plain, visual):
        for start in range(0, len(group), rollouts.prompts_per_batch):
            idx = group[start : start + rollouts.prompts_per_batch]
            chunk = [examples[i] for i in idx]
            prompts = [style.prompt(processing_class, ex) for ex in chunk]
            images = [load_images(ex.images) for ex in chunk] if group is visual else None
            enc = encode_prompts(processing_class, prompts, images, model.device)
            generated = model.generate(**enc, do_sample=True, temperature=rollouts.temperature, top_p=1.0, top_k=0,
                                       num_return_sequences=num_rollouts, max_new_tokens=length,
                                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            new = generated[:, enc["input_ids"].shape[1] :]
            tokens += int((new != tok.pad_token_id).sum())
            texts = tok.batch_decode(new, skip_special_tokens=True)
            for j, (i, ex) in enumerate(zip(idx, chunk)):
                # generate() keeps each prompt's samples together
                out[i] = _graded(texts[j * num_rollouts : (j + 1) * num_rollouts], ex, tasks, style)
            progress.update(len(idx))
            faults.reached("rif_rollouts")
    progress.close()
    return out, tokens


def _graded(texts: list[str], ex: Example, tasks: dict[str, Task], style: PromptStyle) -> Sampled:
    return Sampled(texts, [tasks[ex.task].grade(style.extract(t), ex) for t in texts])
