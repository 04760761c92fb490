"""The embedded toy benchmark: seven synthetic CPT tasks plus a held-out general suite.

All tasks share one prompt style (`<verb> <symbols> =`), one vocabulary (digits, the
letters a-j, a few verbs) and short answers, so training one task can interfere with
the others, which is what continual post-training studies.

Each generator has an *easy* and a *hard* regime (e.g. addition without / with a carry).
The built-in base model is pre-trained on the easy regime of every CPT task (and on all of
the general suite), while test sets mix both regimes: the base model is therefore
partially competent (room to learn, and a reward signal for RFT) and SFT on the full
training distribution has something to teach.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from cpt_bench.tasks.base import Example, sample_split, stable_seed
from cpt_bench.tasks.grading import grade_exact

LETTERS = "abcdefghij"
# toy instructions stay one word: `add 33 7 = think` asks for CoT, `add 33 7 = answer` not;
# neither prompt is a prefix of the other, so the model can tell the formats apart
COT_INSTRUCTION, DIRECT_INSTRUCTION = "think", "answer"
Generator = Callable[[random.Random, bool], tuple[str, str]]


def _digits(rng: random.Random, k: int) -> list[int]:
    return [rng.randrange(10) for _ in range(k)]


def _add(rng: random.Random, hard: bool) -> tuple[str, str]:
    # easy: no carry; hard: a carry into the tens.
    while True:
        a, b = rng.randrange(10, 90), rng.randrange(10)
        if ((a % 10 + b % 10) >= 10) == hard:
            return f"add {a} {b} =", str(a + b)


def _reverse(rng: random.Random, hard: bool) -> tuple[str, str]:
    xs = rng.choices(LETTERS, k=rng.randint(4, 5) if hard else rng.randint(2, 3))
    return f"reverse {' '.join(xs)} =", " ".join(reversed(xs))


def _count(rng: random.Random, hard: bool) -> tuple[str, str]:
    target = rng.choice(LETTERS[:4])
    xs = rng.choices(LETTERS[:4], k=rng.randint(6, 8) if hard else rng.randint(3, 4))
    return f"count {target} in {' '.join(xs)} =", str(xs.count(target))


def _max(rng: random.Random, hard: bool) -> tuple[str, str]:
    xs = _digits(rng, rng.randint(6, 8) if hard else rng.randint(2, 3))
    return f"max {' '.join(map(str, xs))} =", str(max(xs))


def _sort(rng: random.Random, hard: bool) -> tuple[str, str]:
    xs = _digits(rng, rng.randint(4, 5) if hard else rng.randint(2, 3))
    return f"sort {' '.join(map(str, xs))} =", " ".join(map(str, sorted(xs)))


def _sub(rng: random.Random, hard: bool) -> tuple[str, str]:
    # easy: no borrow; hard: a borrow from the tens.
    while True:
        a, b = rng.randrange(10, 100), rng.randrange(10)
        if (a % 10 < b) == hard:
            return f"sub {a} {b} =", str(a - b)


def _shift(rng: random.Random, hard: bool) -> tuple[str, str]:
    # each letter moves one step on; easy uses a-e, hard also f-i.
    pool = LETTERS[:9] if hard else LETTERS[:5]
    while True:
        xs = rng.choices(pool, k=rng.randint(2, 4))
        if not hard or any(x in LETTERS[5:9] for x in xs):
            break
    return f"shift {' '.join(xs)} =", " ".join(LETTERS[LETTERS.index(x) + 1] for x in xs)


def _copy(rng: random.Random, hard: bool) -> tuple[str, str]:
    xs = rng.choices(LETTERS, k=rng.randint(2, 5))
    return f"copy {' '.join(xs)} =", " ".join(xs)


def _last(rng: random.Random, hard: bool) -> tuple[str, str]:
    xs = rng.choices(LETTERS, k=rng.randint(2, 6))
    return f"last {' '.join(xs)} =", xs[-1]


def _min(rng: random.Random, hard: bool) -> tuple[str, str]:
    xs = _digits(rng, rng.randint(2, 5))
    return f"min {' '.join(map(str, xs))} =", str(min(xs))


CPT_GENERATORS: dict[str, Generator] = {
    "add": _add,
    "reverse": _reverse,
    "count": _count,
    "max": _max,
    "sort": _sort,
    "sub": _sub,
    "shift": _shift,
}
GENERAL_GENERATORS: dict[str, Generator] = {"copy": _copy, "last": _last, "min": _min}
DEFAULT_ORDER = list(CPT_GENERATORS)
GENERAL_SUITE = list(GENERAL_GENERATORS)


@dataclass
class ToyTask:
    """A toy task: deterministic disjoint splits drawn from a generator, exact-match grading."""

    name: str
    generator: Generator
    seed: int = 0
    train_size: int = 512
    test_size: int = 100
    hard_fraction: float = 0.5
    chance: ClassVar[float | None] = None  # free-form answers (`Task.chance`)

    def _sample(
        self, split: str, n: int, hard_fraction: float, stream: str, unique: bool = True
    ) -> list[Example]:
        rng = random.Random(stable_seed("toy", self.name, stream, self.seed))

        def make(r: random.Random) -> Example:
            hard = r.random() < hard_fraction
            prompt, answer = self.generator(r, hard)
            # the toy "reasoning" restates the operands: CoT here is a format, not extra compute
            rationale = prompt.removesuffix(" =").split(" ", 1)[1]
            return Example(self.name, prompt, answer, rationale, {"hard": hard})

        return sample_split(make, rng, n, split=split, task=self.name, unique=unique)

    def train(self) -> list[Example]:
        return self._sample("train", self.train_size, self.hard_fraction, "train")

    def test(self) -> list[Example]:
        return self._sample("test", self.test_size, self.hard_fraction, "test")

    def pretrain(self, n: int, hard_fraction: float) -> list[Example]:
        """Items for building the base model: train split only, own stream, repeats allowed."""
        return self._sample("train", n, hard_fraction, "pretrain", unique=False)

    def grade(self, answer: str | None, example: Example) -> float:
        return 0.0 if answer is None else grade_exact(answer, example.answer)


def toy_tasks(seed: int = 0, train_size: int = 512, test_size: int = 100) -> dict[str, ToyTask]:
    """All toy tasks (CPT tasks first, then the general suite) keyed by name."""
    gens = {**CPT_GENERATORS, **GENERAL_GENERATORS}
    return {
        name: ToyTask(name, gen, seed=seed, train_size=train_size, test_size=test_size)
        for name, gen in gens.items()
    }
