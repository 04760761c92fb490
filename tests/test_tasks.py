"""The toy benchmark: deterministic, disjoint splits, correct answers, 0/1 graders."""

from __future__ import annotations

import pytest

from cpt_bench.tasks import ConfigError
from cpt_bench.tasks.base import split_of
from cpt_bench.tasks.grading import grade_exact
from cpt_bench.tasks.toy import DEFAULT_ORDER, GENERAL_SUITE, toy_tasks


def test_seven_cpt_tasks_and_a_disjoint_general_suite():
    assert len(DEFAULT_ORDER) == 7
    assert len(GENERAL_SUITE) >= 2
    assert not set(DEFAULT_ORDER) & set(GENERAL_SUITE)


@pytest.mark.parametrize("name", DEFAULT_ORDER + GENERAL_SUITE)
def test_splits_are_deterministic_disjoint_and_sized(name):
    a, b = toy_tasks(seed=3, train_size=64, test_size=20)[name], toy_tasks(seed=3, train_size=64, test_size=20)[name]
    train, test = a.train(), a.test()
    assert [e.prompt for e in train] == [e.prompt for e in b.train()]
    assert len(train) == 64 and len(test) == 20
    assert len({e.prompt for e in train}) == 64, "items within a split are distinct"
    assert not {e.prompt for e in train} & {e.prompt for e in test}
    assert all(split_of(e.prompt) == "test" for e in test)
    # pre-training draws only from the train side, so no base model has seen a test prompt
    assert all(split_of(e.prompt) == "train" for e in a.pretrain(200, hard_fraction=0.5))


def test_seed_changes_the_items_but_never_the_split_of_a_prompt():
    t0, t1 = toy_tasks(seed=0)["sort"], toy_tasks(seed=1)["sort"]
    assert [e.prompt for e in t0.test()] != [e.prompt for e in t1.test()]
    assert not {e.prompt for e in t0.train()} & {e.prompt for e in t1.test()}


def _answer(prompt: str) -> str:
    """An independent solver for every toy task, from the prompt text alone."""
    verb, *rest = prompt.removesuffix(" =").split()
    if verb == "add":
        return str(int(rest[0]) + int(rest[1]))
    if verb == "sub":
        return str(int(rest[0]) - int(rest[1]))
    if verb == "reverse":
        return " ".join(rest[::-1])
    if verb == "count":
        return str(rest[2:].count(rest[0]))
    if verb == "max":
        return str(max(map(int, rest)))
    if verb == "min":
        return str(min(map(int, rest)))
    if verb == "sort":
        return " ".join(sorted(rest, key=int))
    if verb == "shift":
        return " ".join(chr(ord(c) + 1) for c in rest)
    if verb == "copy":
        return " ".join(rest)
    if verb == "last":
        return rest[-1]
    raise AssertionError(verb)


@pytest.mark.parametrize("name", DEFAULT_ORDER + GENERAL_SUITE)
def test_reference_answers_are_right_and_graded_one(name):
    task = toy_tasks(test_size=50)[name]
    for ex in task.test():
        assert ex.answer == _answer(ex.prompt), ex.prompt
        assert task.grade(ex.answer, ex) == 1.0
        assert task.grade(f"  {ex.answer.upper()}\n", ex) == 1.0  # case and whitespace are free
        assert task.grade(ex.answer + " 0", ex) == 0.0


def test_both_regimes_appear_in_test_sets():
    for name in DEFAULT_ORDER:
        hard = [e.meta["hard"] for e in toy_tasks()[name].test()]
        assert 0.3 < sum(hard) / len(hard) < 0.7, name


def test_grade_exact():
    assert grade_exact("3 9", "3 9") == 1.0
    assert grade_exact("3  9 ", "3 9") == 1.0
    assert grade_exact("39", "3 9") == 0.0
    assert grade_exact("", "3") == 0.0


def test_asking_for_more_items_than_a_task_has_is_a_config_error():
    with pytest.raises(ConfigError, match="too few distinct train items.*benchmark.train_size"):
        toy_tasks(train_size=5000)["add"].train()


def test_replay_draws_a_seeded_share_of_each_stage_from_the_earlier_tasks_only():
    from cpt_bench.config import ReplayConfig
    from cpt_bench.run.steps import stage_items
    from cpt_bench.tasks import build_benchmark

    from conftest import compose_config

    benchmark = build_benchmark(compose_config("benchmark.train_size=60").benchmark)
    order = ["add", "max", "sort"]
    plain = stage_items(benchmark, order, "sequential", 0)
    stages = stage_items(benchmark, order, "sequential", 0, ReplayConfig(fraction=0.25))
    assert [len(items) for _, items in stages] == [60, 60 + 20, 60 + 20]  # 20 of 80 = 25 %
    assert stages[0][1] == plain[0][1]  # nothing earlier to replay in stage 1
    for (task, items), (_, own) in zip(stages, plain):
        assert items[: len(own)] == own
        extra = items[len(own):]
        assert {ex.task for ex in extra} <= set(order[: order.index(task)])
        assert len({(ex.task, ex.prompt) for ex in extra}) == len(extra)  # no item twice
    assert {ex.task for ex in stages[2][1][60:]} == {"add", "max"}  # both earlier tasks are drawn from
    assert stage_items(benchmark, order, "sequential", 0, ReplayConfig(fraction=0.25)) == stages  # seeded
    capped = stage_items(benchmark, order, "sequential", 0, ReplayConfig(fraction=0.5, max_items=7))
    assert [len(items) for _, items in capped] == [60, 67, 67]
