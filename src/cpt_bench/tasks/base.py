"""The task protocol: what a benchmark task must provide to the stage loop.

A task turns a seeded random stream into examples (prompt text + reference answer) and
grades an extracted answer 0/1. Splits are disjoint by construction (see `split_of`), so a
benchmark seed changes which items are drawn but never leaks a test prompt into training.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from cpt_bench.errors import ConfigError


@dataclass(frozen=True)
class Example:
    """One item of a task: the prompt the model sees and the answer a grader accepts."""

    task: str
    prompt: str
    answer: str
    rationale: str = ""  # a worked reasoning trace, for CoT-format SFT and pre-training
    meta: dict = field(default_factory=dict, compare=False, hash=False)
    # images of a multimodal item, loaded lazily: each has .load() -> PIL.Image.Image
    images: tuple = field(default=(), compare=False, hash=False)
    # the item's own direct-answer instruction (None = the benchmark's), kept out of `prompt`
    # so that with CoT the CoT instruction replaces it instead of following it
    direct_instruction: str | None = None
    system: str | None = None  # a system line before the prompt (a declared task's, benchmark=custom)
    target: str | None = None  # what SFT trains on where it is not `answer` (e.g. the answer is a pattern)


class Task(Protocol):
    name: str
    # The chance level: the accuracy a uniform random guess among the answer options reaches on
    # the task's test set (1/k for k options; where the number of options varies per item, the
    # mean of 1/k over the test items). None for free-form answers, where a guess is (almost)
    # never right. Optional: a task without the attribute has none (outputs.flips.chance_level).
    chance: float | None

    def train(self) -> list[Example]: ...

    def test(self) -> list[Example]: ...

    def grade(self, answer: str | None, example: Example) -> float:
        """0/1 for an extracted answer (None = no answer found)."""
        ...


def stable_seed(*parts: object) -> int:
    """A seed that is the same in every process (unlike hash())."""
    return zlib.crc32("/".join(map(str, parts)).encode())


def split_of(prompt: str, test_share: int = 4) -> str:
    """Assign every possible prompt to exactly one split by hashing it.

    One in `test_share` prompts can only ever be a test item, for every seed and every
    consumer (pre-training, SFT, RFT), so train and test never overlap.
    """
    return "test" if zlib.crc32(prompt.encode()) % test_share == 0 else "train"


STALL_DRAWS = 20_000  # where one draw in 2,000 still finds a new item, a false stop has a 5e-5 chance


def sample_split(
    make: Callable[[random.Random], Example],
    rng: random.Random,
    n: int,
    split: str,
    task: str,
    unique: bool = True,
    max_tries_per_item: int = 200,
    split_key: Callable[[Example], str] = lambda ex: ex.prompt,
) -> list[Example]:
    """Draw `n` examples of `split` from the generator `make`, distinct when `unique`.

    `split_key` is what `split_of` hashes: the prompt, or for a task of facts the fact itself,
    so that one fact asked in several phrasings stays on one side.
    Raises ValueError when the instance space of the split is too small for `n`.
    """
    seen: set[str] = set()
    out: list[Example] = []
    tries = last_new = 0
    while len(out) < n:
        tries += 1
        # too few distinct items: the whole budget spent, or so many draws in a row without a new
        # item that the split is exhausted (a request far above the task's size fails at once)
        if tries > max_tries_per_item * max(n, 1) or tries - last_new > STALL_DRAWS:
            raise ConfigError(
                f"task {task!r} has too few distinct {split} items: drew {len(out)} of {n} requested; "
                f"lower benchmark.{split}_size"
            )
        ex = make(rng)
        if (unique and ex.prompt in seen) or split_of(split_key(ex)) != split:
            continue
        seen.add(ex.prompt)
        out.append(ex)
        last_new = tries
    return out


@dataclass
class Benchmark:
    """A named set of tasks, their default order and a held-out general suite."""

    name: str
    tasks: dict[str, Task]  # CPT tasks and general-suite tasks, by name
    order: list[str]  # the benchmark's own CPT order
    general: list[str]
    cot_instruction: str  # appended to each question when cot=true
    direct_instruction: str  # appended when cot=false
    separator: str = " "

    def test_sets(self, order: list[str], general: list[str]) -> dict[str, list[Example]]:
        """Every evaluated task's test items: the CPT tasks in `order`, then the general suite."""
        return {t: self.tasks[t].test() for t in [*order, *general]}
