"""Per-item flips (outputs/flips.py, flips.csv) on hand-made records and run folders: the counts,
the alignment check, the chance correction, the chance levels tasks declare, W&B's scalars."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from cpt_bench.errors import ItemsMisaligned
from cpt_bench.outputs.flips import (
    BASE,
    PREVIOUS,
    Flips,
    ItemOutcome,
    StageOutcomes,
    chance_corrected,
    chance_level,
    count_flips,
    flip_rows,
    stage_scalars,
)
from cpt_bench.outputs.records import StageRecord
from cpt_bench.outputs.rundir import FLIPS_COLUMNS, FLIPS_CSV, read_flips_csv, stage_dir, write_flips
from cpt_bench.tasks.base import Example


def outcomes(task: str, correct: str, prompts: list[str] | None = None) -> list[ItemOutcome]:
    """'10' -> item 0 right, item 1 wrong; prompt i is `<task> i`, answer `a<i>`."""
    prompts = prompts or [f"{task} {i}" for i in range(len(correct))]
    return [ItemOutcome(p, f"a{i}", c == "1") for i, (p, c) in enumerate(zip(prompts, correct))]


# --- counting --------------------------------------------------------------------------------


def test_flips_count_each_items_change_by_position():
    before, after = outcomes("t", "11001"), outcomes("t", "10100")
    f = count_flips(before, after, "t")
    assert f == Flips(n=5, correct_before=3, correct_after=2, correct_to_wrong=2, wrong_to_correct=1)
    assert f.wrong_to_wrong == 1 and f.lost_share == pytest.approx(2 / 3)
    # the net change (-1 item) hides three flips
    assert f.correct_after - f.correct_before == f.wrong_to_correct - f.correct_to_wrong
    assert count_flips(outcomes("t", "00"), outcomes("t", "11")).lost_share is None  # nothing to lose


def test_items_out_of_order_are_refused_not_miscounted():
    before = outcomes("t", "101")
    swapped = outcomes("t", "101", prompts=["t 0", "t 2", "t 1"])
    with pytest.raises(ItemsMisaligned, match=r"task 't': eval record 1 has prompt 't 1' in 00-base/eval but "
                                              r"'t 2' in 01-x/eval"):
        count_flips(before, swapped, "t", ("00-base/eval", "01-x/eval"))
    other_answer = [*before[:2], ItemOutcome("t 2", "zzz", True)]
    with pytest.raises(ItemsMisaligned, match="eval record 2 has answer"):
        count_flips(before, other_answer, "t")
    with pytest.raises(ItemsMisaligned, match="3 eval records in a but 2 in b"):
        count_flips(before, before[:2], "t", ("a", "b"))


def stages3() -> list[StageOutcomes]:
    return [StageOutcomes(0, "", {"a": outcomes("a", "1100"), "g": outcomes("g", "10")}, "00-base/eval"),
            StageOutcomes(1, "a", {"a": outcomes("a", "1011"), "g": outcomes("g", "01")}, "01-a/eval"),
            StageOutcomes(2, "b", {"a": outcomes("a", "0111"), "g": outcomes("g", "11")}, "02-b/eval")]


def test_every_stage_counts_since_the_previous_row_and_since_the_base():
    rows = flip_rows(stages3(), {"g": 0.5})
    assert [(r.stage, r.eval_task, r.since, r.reference_stage) for r in rows] == [
        (1, "a", PREVIOUS, 0), (1, "a", BASE, 0), (1, "g", PREVIOUS, 0), (1, "g", BASE, 0),
        (2, "a", PREVIOUS, 1), (2, "a", BASE, 0), (2, "g", PREVIOUS, 1), (2, "g", BASE, 0)]
    by = {(r.stage, r.eval_task, r.since): r for r in rows}
    # a: 1100 -> 1011 -> 0111
    assert by[(2, "a", PREVIOUS)].flips == Flips(4, 3, 3, 1, 1)
    assert by[(2, "a", BASE)].flips == Flips(4, 2, 3, 1, 2)
    assert by[(2, "a", BASE)].chance is None and by[(2, "a", BASE)].corrected is None
    assert by[(2, "g", BASE)].chance == 0.5 and by[(2, "g", BASE)].corrected is not None
    assert by[(2, "a", BASE)].trained_task == "b"


def test_a_task_missing_from_the_reference_row_is_an_error():
    stages = stages3()
    stages[0] = StageOutcomes(0, "", {"a": outcomes("a", "1100")}, "00-base/eval")
    with pytest.raises(ItemsMisaligned, match="task 'g' was evaluated in 01-a/eval but has no eval records in "
                                              "00-base/eval"):
        flip_rows(stages, {})


# --- the chance correction -------------------------------------------------------------------


def test_chance_correction_by_hand():
    # 100 items, c = 1/4: right->right 40, right->wrong 20, wrong->right 10, wrong->wrong 30
    f = Flips(n=100, correct_before=60, correct_after=50, correct_to_wrong=20, wrong_to_correct=10)
    cc = chance_corrected(f, 0.25)
    guessed = 30 * 0.25 / 0.75  # = 10 flips each way expected from the items guessed in both rows
    assert cc.forgotten == pytest.approx((20 - guessed) / 0.75)  # 13.33 items
    assert cc.gained == pytest.approx(0.0)  # every wrong->right flip is what guessing gives
    assert cc.known_before == pytest.approx((60 - 25) / 0.75)  # 46.67: 60 right, 25 of them expected by luck
    assert cc.lost_share == pytest.approx(10 / 35)
    assert f.lost_share == pytest.approx(20 / 60)  # the raw share
    # c = 0: the raw counts
    zero = chance_corrected(f, 0.0)
    assert (zero.forgotten, zero.gained, zero.known_before, zero.lost_share) == (20, 10, 60, pytest.approx(1 / 3))
    # a row at chance knew nothing: no share
    assert chance_corrected(Flips(8, 2, 2, 1, 1), 0.25).lost_share is None
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="chance level"):
            chance_corrected(f, bad)


def test_chance_correction_recovers_the_forgetting_of_a_guessing_model():
    """Knows-or-guesses, simulated: 30 % of 20,000 four-option items known by the base, 30 % of
    those forgotten, 10 % of the rest learned, a guess right 1 time in 4 in each row."""
    rng, c, n = random.Random(0), 0.25, 20_000
    before, after = [], []
    for i in range(n):
        known = rng.random() < 0.3
        still = rng.random() >= 0.3 if known else rng.random() < 0.1
        before.append(ItemOutcome(str(i), "", known or rng.random() < c))
        after.append(ItemOutcome(str(i), "", still or rng.random() < c))
    f = count_flips(before, after)
    cc = chance_corrected(f, c)
    assert cc.lost_share == pytest.approx(0.3, abs=0.02)
    assert cc.gained / (n * 0.7) == pytest.approx(0.1, abs=0.02)
    assert cc.known_before / n == pytest.approx(0.3, abs=0.02)
    # the raw share counts lucky guesses as knowledge: a base right by luck is likely wrong later
    assert f.lost_share == pytest.approx(0.39, abs=0.02)


# --- W&B ---------------------------------------------------------------------------------------


def test_stage_scalars_name_counts_and_shares_per_task():
    rows = flip_rows(stages3(), {"g": 0.5})
    got = stage_scalars(rows, 2)
    assert got["cpt/flips/a/lost_since_base"] == 1 and got["cpt/flips/a/gained_since_base"] == 2
    assert got["cpt/flips/a/lost_since_previous"] == 1 and got["cpt/flips/a/gained_since_previous"] == 1
    assert got["cpt/flips/a/lost_share_since_base"] == pytest.approx(1 / 2)
    assert "cpt/flips/a/lost_share_since_base_corrected" not in got  # a free-form task
    assert "cpt/flips/g/lost_share_since_base" in got  # g: 10 -> 11, nothing lost
    assert stage_scalars(rows, 0) == {}


# --- flips.csv from a run folder ---------------------------------------------------------------


def write_stage(run_dir: Path, stage: int, trained: str, scores: dict[str, str], harness: float | None = None,
                prompts: dict[str, list[str]] | None = None) -> StageRecord:
    """A completed stage's eval folder and record (with a harness column when `harness`)."""
    folder = stage_dir(run_dir, stage, trained) / "eval"
    folder.mkdir(parents=True)
    for task, correct in scores.items():
        items = outcomes(task, correct, (prompts or {}).get(task))
        (folder / f"{task}.jsonl").write_text("".join(
            json.dumps({"task": task, "prompt": o.prompt, "answer": o.answer, "response": "r", "extracted": "r",
                        "score": float(o.correct), "format_ok": 0.0}) + "\n" for o in items))
    accuracy = {t: c.count("1") / len(c) for t, c in scores.items()}
    if harness is not None:
        accuracy["harness:hs"] = harness
    return StageRecord(stage=stage, trained_task=trained, accuracy=accuracy, n={t: 4 for t in accuracy})


class Task:
    def __init__(self, name: str, chance=None):
        self.name, self.chance = name, chance


def test_flips_csv_is_recomputed_from_the_eval_files_and_skips_harness_columns(tmp_path):
    records = [write_stage(tmp_path, 0, "", {"a": "1100", "g": "1010"}, harness=0.5),
               write_stage(tmp_path, 1, "a", {"a": "1011", "g": "0110"}, harness=0.4),
               write_stage(tmp_path, 2, "b", {"a": "0111", "g": "0111"}, harness=0.3)]
    tasks = {"a": Task("a"), "g": Task("g", 0.25), "unused": Task("unused", 0.5)}
    rows = write_flips(tmp_path, records, tasks)
    lines = (tmp_path / FLIPS_CSV).read_text().splitlines()
    assert lines[0].split(",") == FLIPS_COLUMNS and len(lines) == 1 + 2 * 2 * 2  # stages 1-2 x a, g x since
    assert "harness" not in "".join(lines[1:])  # no per-item records: not counted
    assert read_flips_csv(tmp_path / FLIPS_CSV) == rows
    row = next(r for r in rows if (r.stage, r.eval_task, r.since) == (2, "g", BASE))
    assert row.flips == Flips(4, 2, 3, 1, 2) and row.chance == 0.25
    # g: 1010 -> 0111, no item wrong in both rows: nothing to discount; 1 item of 2 right above chance
    assert lines[1 + rows.index(row)] == ("2,b,g,base,0,4,2,3,1,2,0.500000,0.250000,"
                                          f"{1 / 0.75:.6f},{2 / 0.75:.6f},{1 / 0.75 / ((2 - 1) / 0.75):.6f}")
    # a resumed run holds only the records: the same file again, stage 1 included
    (tmp_path / FLIPS_CSV).unlink()
    assert write_flips(tmp_path, records, tasks) == rows and read_flips_csv(tmp_path / FLIPS_CSV) == rows
    # an eval file out of order stops it, naming the folders
    bad = write_stage(tmp_path, 3, "c", {"a": "0000", "g": "0000"}, prompts={"a": ["a 0", "a 1", "a 3", "a 2"]})
    with pytest.raises(ItemsMisaligned, match=r"task 'a': eval record 2 has prompt 'a 2' in stages/02-b/eval but "
                                              r"'a 3' in stages/03-c/eval"):
        write_flips(tmp_path, [*records, bad], tasks)


# --- the chance levels tasks declare -------------------------------------------------------------


def test_free_form_tasks_declare_no_chance_level_and_multiple_choice_ones_one_over_k():
    from cpt_bench.tasks.mllm import SPECS, MultimodalTask
    from cpt_bench.tasks.natural import natural_tasks
    from cpt_bench.tasks.toy import toy_tasks

    assert all(chance_level(t) is None for t in [*toy_tasks().values(), *natural_tasks().values()])

    def task(name: str, items: list[Example]) -> MultimodalTask:
        t = MultimodalTask(SPECS[name], sources={}, limits={})
        t._items["test"] = items
        return t

    def mc(k: int) -> Example:
        return Example("x", "q", "A", meta={"choices": {chr(65 + i): str(i) for i in range(k)}})

    assert chance_level(task("scienceqa", [mc(2), mc(4), mc(4)])) == pytest.approx((1 / 2 + 1 / 4 + 1 / 4) / 3)
    # MMMU: an open question counts 0; an option question whose options did not parse is left out
    unparsed = Example("x", "q", "A", meta={"choices": {}})
    assert chance_level(task("mmmu", [mc(4), Example("x", "q", "7"), unparsed])) == pytest.approx(1 / 8)
    assert chance_level(task("mmmu", [Example("x", "q", "7")])) is None
    assert chance_level(task("pope", [Example("x", "Is there a dog?", "yes")])) == 0.5  # yes or no
    assert chance_level(task("textvqa", [Example("x", "q", "a")])) is None
    assert chance_level(Task("plain")) is None and chance_level(object.__new__(type("NoAttr", (), {"name": "n"}))) \
        is None
    with pytest.raises(ValueError, match="outside"):
        chance_level(Task("sure", 1.0))
