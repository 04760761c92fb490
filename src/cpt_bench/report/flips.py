"""Forgetting item by item: the share of the base model's correct items a run lost by its end.

From a run's flips.csv (outputs/flips.py): its last row compared with the base, item by item,
pooled over the tasks of a group (the CPT tasks of its order; the general suite), so each item
weighs the same. Beside the raw share, the chance-corrected one over the tasks that declare a
chance level (multiple choice), which discounts the items a guess gets right or wrong
(`outputs.flips.chance_corrected`; docs/metrics.md). Pure functions of `RunRecord`s.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from cpt_bench.outputs.flips import BASE, FlipRow
from cpt_bench.report.runs import RunRecord, base_model
from cpt_bench.report.stats import CONFIDENCE, Interval, mean_ci

GROUPS = ("cpt", "general")  # the order's tasks; every other per-item task (the general suite)
# the report's columns: (group, GroupFlips attribute, title)
FLIP_COLUMNS = [("cpt", "lost", "CPT tasks: base-correct lost (%)"),
                ("cpt", "lost_corrected", "CPT tasks: chance-corrected (%)"),
                ("cpt", "gained", "CPT tasks: base-wrong gained (%)"),
                ("general", "lost", "general: base-correct lost (%)"),
                ("general", "lost_corrected", "general: chance-corrected (%)"),
                ("general", "gained", "general: base-wrong gained (%)")]
FLIPS_NOTE = (
    "Each run's last stage against the base model, test item by test item (`flips.csv`, `since=base`), pooled "
    "over the CPT tasks of its order and over its general suite: *base-correct lost* is the share of the items "
    "the base model got right that are wrong by the end (forgetting), *base-wrong gained* the share of those it "
    "got wrong that are right by then (backward transfer). *Chance-corrected*: over the tasks that declare a "
    "chance level c (multiple choice), the estimated share of the items the base model knew, not guessed, that "
    "are no longer known, Σ(correct_to_wrong − wrong_to_wrong·c/(1−c)) / Σ(correct_before − n·c) "
    "(docs/metrics.md, \"Per-item flips\"); n/a where no task declares one (free-form answers). `harness:<task>` "
    "columns have no per-item records and are not counted. Mean ± sample std over the variant's runs with a "
    f"flips.csv (n), then the {100 * CONFIDENCE:.0f} % Student-t interval of the mean; percent.")


@dataclass(frozen=True)
class GroupFlips:
    """One group of tasks of one run, its last row against the base, pooled over the tasks."""

    tasks: int
    lost: float | None  # base-correct items now wrong / base-correct items
    gained: float | None  # base-wrong items now right / base-wrong items
    lost_corrected: float | None  # chance-corrected lost share, tasks with a chance level only
    corrected_tasks: int  # the tasks behind lost_corrected


def final_rows(run: RunRecord) -> list[FlipRow]:
    """The run's flips of its last stage against the base."""
    if not run.flips:
        return []
    last = max(r.stage for r in run.flips)
    return [r for r in run.flips if r.stage == last and r.since == BASE]


def pool(rows: Sequence[FlipRow]) -> GroupFlips:
    correct = sum(r.flips.correct_before for r in rows)
    wrong = sum(r.flips.n - r.flips.correct_before for r in rows)
    corrected = [c for r in rows if (c := r.corrected) is not None and c.known_before > 0]
    known = sum(c.known_before for c in corrected)
    return GroupFlips(
        tasks=len(rows),
        lost=sum(r.flips.correct_to_wrong for r in rows) / correct if correct else None,
        gained=sum(r.flips.wrong_to_correct for r in rows) / wrong if wrong else None,
        lost_corrected=sum(c.forgotten for c in corrected) / known if corrected else None,
        corrected_tasks=len(corrected),
    )


def run_flips(run: RunRecord) -> dict[str, GroupFlips]:
    """Per group (`GROUPS`) with per-item records, the run's pooled flips by its end; {} without flips.csv."""
    rows = final_rows(run)
    groups = {"cpt": [r for r in rows if r.eval_task in run.order],
              "general": [r for r in rows if r.eval_task not in run.order]}
    return {g: pool(members) for g, members in groups.items() if members}


def variant_flips(runs: Sequence[RunRecord]) -> tuple[int, list[tuple[float | None, float | None, Interval | None]]] \
        | None:
    """A variant's runs with flips.csv: their number and, per `FLIP_COLUMNS` entry, the mean, the
    sample std and the interval of the mean (over base models where they vary); None without any."""
    have = [(r, f) for r in runs if (f := run_flips(r))]
    if not have:
        return None
    cells = []
    for group, attr, _ in FLIP_COLUMNS:
        values = [(getattr(f[group], attr), base_model(r.config)) for r, f in have if group in f]
        xs = [v for v, _ in values if v is not None]
        ci = mean_ci([v for v, _ in values], [b for _, b in values]) if xs else None
        if ci is not None and attr != "lost_corrected":  # a share; the chance-corrected estimate is not bounded
            ci = ci.within(0.0, 1.0)
        cells.append((statistics.fmean(xs) if xs else None, statistics.stdev(xs) if len(xs) > 1 else None, ci))
    return len(have), cells
