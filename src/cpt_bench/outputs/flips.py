"""Per-item flips: which test items a stage turned from correct to wrong, or wrong to correct.

The accuracy matrix nets items out: a task at 60 % before and after a stage may have lost ten
items and gained ten others. Following arXiv 2510.17776, each evaluated task's items are
compared one by one between two rows of the matrix, `since="previous"` (the row before) and
`since="base"` (row 0):

    correct_to_wrong    items right in the earlier row, wrong now   (forgetting)
    wrong_to_correct    items wrong in the earlier row, right now   (backward transfer, gain)

Items are paired by their position in the task's fixed test set (every stage's eval records
are in that order) and the pairing is checked: a position whose prompt or reference answer
differs between the two rows raises `ItemsMisaligned` instead of counting wrong pairs.

For a task that declares a chance level c (`Task.chance`: multiple choice), some flips are a
guess landing differently, not knowledge gained or lost. `chance_corrected` removes them under
the usual knows-or-guesses model (docs/metrics.md, "Per-item flips").

Pure functions on typed records; reading the eval files and writing flips.csv is
`outputs.rundir.write_flips`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cpt_bench.errors import ItemsMisaligned

PREVIOUS, BASE = "previous", "base"  # what a row compares with: the row before, or row 0
SINCE = (PREVIOUS, BASE)


@dataclass(frozen=True)
class ItemOutcome:
    """One test item's graded result in one row of the matrix (one `EvalRecord`, reduced)."""

    prompt: str
    answer: str
    correct: bool


@dataclass(frozen=True)
class StageOutcomes:
    """One row of the matrix item by item: each evaluated task's outcomes in test-set order."""

    stage: int
    trained_task: str
    tasks: Mapping[str, Sequence[ItemOutcome]]
    where: str = ""  # where they were read (the stage folder), for error messages


@dataclass(frozen=True)
class Flips:
    """The 2x2 table of one task's items between an earlier row and a later one."""

    n: int
    correct_before: int
    correct_after: int
    correct_to_wrong: int
    wrong_to_correct: int

    @property
    def wrong_to_wrong(self) -> int:
        return self.n - self.correct_before - self.wrong_to_correct

    @property
    def lost_share(self) -> float | None:
        """The share of the earlier row's correct items that are wrong now (None: none were correct)."""
        return self.correct_to_wrong / self.correct_before if self.correct_before else None


@dataclass(frozen=True)
class ChanceCorrected:
    """Flips with guessing taken out (`chance_corrected`), in items (estimates, not counts)."""

    forgotten: float  # items known in the earlier row and no longer known
    gained: float  # items not known in the earlier row and known now
    known_before: float  # items known (not guessed) in the earlier row

    @property
    def lost_share(self) -> float | None:
        """forgotten / known_before; None where the earlier row was at or below chance."""
        return self.forgotten / self.known_before if self.known_before > 0 else None


def chance_level(task: object) -> float | None:
    """A task's declared chance level (`tasks.base.Task.chance`); None for a task that declares none."""
    chance = getattr(task, "chance", None)
    if chance is not None and not 0.0 <= chance < 1.0:
        raise ValueError(f"task {getattr(task, 'name', task)!r} declares a chance level of {chance}, "
                         "outside [0, 1)")
    return chance


def _short(text: str, width: int = 80) -> str:
    text = text.replace("\n", " ")
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def count_flips(before: Sequence[ItemOutcome], after: Sequence[ItemOutcome], task: str = "",
                where: tuple[str, str] = ("", "")) -> Flips:
    """The flips of one task from `before` to `after`, item i paired with item i.

    Raises `ItemsMisaligned` when the two do not hold the same items (prompt and reference
    answer) at the same positions; `where` names the two evaluations in the message."""
    if len(before) != len(after):
        raise ItemsMisaligned(f"task {task!r}: {len(before)} eval records in {where[0]} but {len(after)} in "
                              f"{where[1]}; flips pair items by their position in the test set")
    for i, (b, a) in enumerate(zip(before, after)):
        if b.prompt != a.prompt or b.answer != a.answer:
            field = "prompt" if b.prompt != a.prompt else "answer"
            got = (b.prompt, a.prompt) if field == "prompt" else (b.answer, a.answer)
            raise ItemsMisaligned(f"task {task!r}: eval record {i} has {field} {_short(got[0])} in {where[0]} "
                                  f"but {_short(got[1])} in {where[1]}; the test items are not in one order, "
                                  "so their flips cannot be counted")
    return Flips(
        n=len(after),
        correct_before=sum(b.correct for b in before),
        correct_after=sum(a.correct for a in after),
        correct_to_wrong=sum(b.correct and not a.correct for b, a in zip(before, after)),
        wrong_to_correct=sum(a.correct and not b.correct for b, a in zip(before, after)),
    )


def chance_corrected(flips: Flips, chance: float) -> ChanceCorrected:
    """Flips net of guessing, for a task whose chance level is `chance` (c, 0 <= c < 1).

    Model: in each row an item is either known (answered right) or guessed (right with
    probability c, independently in each row). An item guessed in both rows shows
    wrong->wrong with probability (1-c)^2 and correct->wrong (or wrong->correct) with c(1-c),
    so the wrong->wrong count estimates those flips by guessing: g = wrong_to_wrong * c/(1-c).
    A forgotten (learned) item shows as a flip only when the new guess misses (the old one
    missed): probability 1-c. Hence

        forgotten    = (correct_to_wrong - g) / (1 - c)
        gained       = (wrong_to_correct - g) / (1 - c)
        known_before = (correct_before - n c) / (1 - c)

    all unbiased under the model; c = 0 gives the raw counts. Not clipped at 0: means over
    seeds stay unbiased (a clipped mean is not)."""
    if not 0.0 <= chance < 1.0:
        raise ValueError(f"a chance level must be in [0, 1), not {chance}")
    guessed = flips.wrong_to_wrong * chance / (1 - chance)
    return ChanceCorrected(
        forgotten=(flips.correct_to_wrong - guessed) / (1 - chance),
        gained=(flips.wrong_to_correct - guessed) / (1 - chance),
        known_before=(flips.correct_before - flips.n * chance) / (1 - chance),
    )


@dataclass(frozen=True)
class FlipRow:
    """One line of flips.csv: a task's flips at `stage` since the row before or since the base."""

    stage: int
    trained_task: str
    eval_task: str
    since: str  # PREVIOUS | BASE
    reference_stage: int  # the row compared with: stage - 1, or 0
    flips: Flips
    chance: float | None  # the task's chance level; None: free-form answers, no correction

    @property
    def corrected(self) -> ChanceCorrected | None:
        return chance_corrected(self.flips, self.chance) if self.chance is not None else None


def flip_rows(stages: Sequence[StageOutcomes], chances: Mapping[str, float | None]) -> list[FlipRow]:
    """Every stage's flips (stage 0, the base, has none), each evaluated task since the row
    before and since the base, in stage and then task order. `stages` are the matrix's rows
    in order, row 0 first; `chances`: each task's chance level (missing = None)."""
    if not stages:
        return []
    if [s.stage for s in stages] != list(range(len(stages))):
        raise ValueError(f"flips need the rows 0, 1, 2, ... in order, not {[s.stage for s in stages]}")
    rows = []
    for row in stages[1:]:
        for task, after in row.tasks.items():
            for since, ref in ((PREVIOUS, stages[row.stage - 1]), (BASE, stages[0])):
                if task not in ref.tasks:
                    raise ItemsMisaligned(f"task {task!r} was evaluated in {row.where} but has no eval records "
                                          f"in {ref.where}")
                flips = count_flips(ref.tasks[task], after, task, (ref.where, row.where))
                rows.append(FlipRow(row.stage, row.trained_task, task, since, ref.stage, flips, chances.get(task)))
    return rows


def stage_scalars(rows: Sequence[FlipRow], stage: int) -> dict[str, float]:
    """One stage's flips as W&B scalars: `cpt/flips/<task>/{lost,gained}_since_{previous,base}`
    (item counts), `cpt/flips/<task>/lost_share_since_base` and, for a task with a chance
    level, `cpt/flips/<task>/lost_share_since_base_corrected`."""
    out: dict[str, float] = {}
    for r in rows:
        if r.stage != stage:
            continue
        key = f"cpt/flips/{r.eval_task}"
        out[f"{key}/lost_since_{r.since}"] = r.flips.correct_to_wrong
        out[f"{key}/gained_since_{r.since}"] = r.flips.wrong_to_correct
        if r.since == BASE:
            if (share := r.flips.lost_share) is not None:
                out[f"{key}/lost_share_since_base"] = share
            if r.corrected is not None and (share := r.corrected.lost_share) is not None:
                out[f"{key}/lost_share_since_base_corrected"] = share
    return out
