"""eval.inner_points without a model: which steps, curves.csv's rows, the snapshots' callback and
pending points, plasticity against stability per stage, and the first-stage comparison at
matched gain with its intervals over runs. The runs themselves: test_end_to_end (curves.csv,
the pinned matrix, W&B, the report), test_faults (killed between two inner points),
test_launch (two ranks)."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from cpt_bench.errors import ConfigError
from cpt_bench.outputs.curves import (
    CurveRow,
    balance,
    inner_steps,
    merged,
    point_name,
    point_step,
    read_curves_csv,
    write_curves_csv,
)
from cpt_bench.outputs.records import StageRecord, TrainStats
from cpt_bench.paradigms.base import StageContext, save_snapshot
from cpt_bench.report.curves import RunCurve, compare_curves, comparison_table, segments
from cpt_bench.run.plan import plan

from conftest import compose_config as composed


@pytest.mark.parametrize("total,points,steps", [(10, 2, [3, 6]), (48, 2, [16, 32]), (48, 3, [12, 24, 36]),
                                                (3, 5, [1, 2]), (1, 3, []), (10, 0, []), (0, 2, [])])
def test_inner_steps_are_evenly_spaced_strictly_inside_the_stage(total, points, steps):
    assert inner_steps(total, points) == steps


def test_point_folders_name_their_step_and_a_partial_save_names_none():
    assert point_name(16) == "step-000016" and point_step("step-000016") == 16
    assert point_step("step-000016.partial") is None and point_step("eval") is None


def record(stage: int, task: str, acc: dict[str, float], steps: int | None) -> StageRecord:
    return StageRecord(stage=stage, trained_task=task, accuracy=acc, n=dict.fromkeys(acc, 10),
                       train=TrainStats(items=8, optimizer_steps=steps) if steps is not None else None)


STAGES = [record(0, "", {"a": 0.1, "b": 0.2, "g": 0.9}, None), record(1, "a", {"a": 0.7, "b": 0.2, "g": 0.8}, 6),
          record(2, "b", {"a": 0.5, "b": 0.6, "g": 0.7}, 4)]
INNER = [CurveRow(1, "a", "inner", 3, 3, t, acc, 10) for t, acc in {"a": 0.4, "b": 0.2, "g": 0.85}.items()] + \
        [CurveRow(2, "b", "inner", 2, 8, t, acc, 10) for t, acc in {"a": 0.6, "b": 0.3, "g": 0.8}.items()]


def test_curves_csv_holds_the_inner_points_between_the_matrix_rows(tmp_path):
    rows = merged(INNER, STAGES)
    assert [(r.stage, r.point, r.step, r.global_step) for r in rows[::3]] == [
        (0, "base", 0, 0), (1, "inner", 3, 3), (1, "end", 6, 6), (2, "inner", 2, 8), (2, "end", 4, 10)]
    assert {(r.eval_task, r.accuracy) for r in rows if r.point == "end" and r.stage == 2} == {
        ("a", 0.5), ("b", 0.6), ("g", 0.7)}  # the matrix's row
    write_curves_csv(tmp_path / "curves.csv", rows)
    assert read_curves_csv(tmp_path / "curves.csv") == rows
    assert (tmp_path / "curves.csv").read_text().splitlines()[0] == \
        "stage,trained_task,point,step,global_step,eval_task,accuracy,n"


def test_plasticity_against_stability_seen_from_each_stage():
    rows = merged(INNER, STAGES)
    at = {(p.stage, p.step): p for p in balance(rows, ["a", "b"], ["g"])}
    assert (at[(0, 0)].trained, at[(0, 0)].earlier, at[(0, 0)].general) == (None, None, 0.9)
    assert (at[(2, 2)].trained, at[(2, 2)].earlier, at[(2, 2)].general) == (0.3, 0.6, 0.8)
    segs = segments(rows, ["a", "b"], ["g"])
    # stage 2 starts where stage 1 ended, seen from stage 2: task b trained, task a earlier
    assert [(p.global_step, p.trained, p.earlier) for p in segs[2]] == [(6, 0.2, 0.7), (8, 0.3, 0.6), (10, 0.6, 0.5)]
    assert [(p.global_step, p.trained, p.general) for p in segs[1]] == [(0, 0.1, 0.9), (3, 0.4, 0.85), (6, 0.7, 0.8)]


def test_a_curve_is_read_where_it_first_reaches_a_gain():
    curve = RunCurve("sft", "r", [(0.0, 0.0), (0.2, -0.1), (0.1, -0.3), (0.4, -0.4)])
    assert curve.at(0.1) == pytest.approx(-0.05)  # the first crossing, not the later one
    assert curve.at(0.3) == pytest.approx(-0.3 - 0.1 * (0.3 - 0.1) / 0.3)  # on the rise from 0.1 to 0.4
    assert curve.at(0.4) == pytest.approx(-0.4) and curve.at(0.5) is None and curve.reach == 0.4


def family(name: str, slope: float, reaches: list[float], rng: random.Random) -> list[RunCurve]:
    """Runs whose general change is slope x gain (+ a run's own offset) along K+2 points."""
    out = []
    for i, top in enumerate(reaches):
        offset = rng.gauss(0, 0.01)
        out.append(RunCurve(name, f"{name}{i}", [(top * k / 4, slope * top * k / 4 + offset * (k > 0))
                                                 for k in range(5)]))
    return out


def test_families_compared_at_matched_first_stage_gain_with_intervals_over_runs():
    rng = random.Random(0)
    sft = family("sft", -0.5, [0.4, 0.5, 0.6], rng)
    rft = family("rft", -0.1, [0.3, 0.35, 0.4], rng)
    cmp = compare_curves(sft, rft, n=6)
    assert [r.gain for r in cmp.rows] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert cmp.common == (pytest.approx(0.1), pytest.approx(0.3))  # what every run reaches
    # at 0.2 points: about -0.10 for SFT, -0.02 for GRPO; the interval counts runs (3 + 3), not points
    row = cmp.rows[1]
    assert row.runs == (3, 3) and row.ci.n == 6 and row.mean_a - row.mean_b == pytest.approx(-0.08, abs=0.02)
    assert row.ci.high < 0
    assert cmp.rows[3].runs == (3, 1) and not cmp.rows[3].compared and cmp.rows[3].ci is None
    assert cmp.rows[5].runs == (1, 0) and cmp.rows[5].mean_b is None
    assert cmp.diff == pytest.approx(-0.4 * 0.2, abs=0.02) and cmp.ci.n == 6 and cmp.ci.high < 0
    assert cmp.points == 5
    table = comparison_table(cmp)
    assert "A = sft (3 runs), B = rft (3 runs), up to 5 curve points a run" in table
    # an uncompared gain says why and what would decide it; a decided one needs no line
    assert ("| +40.0 | 3, 1 | -20.4 | -4.1 | -16.3 |  | not compared | why: runs whose first stage reaches it: "
            "B 1 of 3 (2 a side needed); to decide: runs of B that reach it") in table
    assert (f"| mean over +10.0 to +30.0 (every run reaches them) | 3, 3 |  |  | {100 * cmp.diff:+.1f} | [-10.4, -5.7] "
            "| A loses more general ability |  |") in table
    flat = [RunCurve("sft", "f", [(0.0, 0.0), (-0.1, 0.0), (0.0, 0.1)])]
    assert "nothing to match" in comparison_table(compare_curves(flat, flat))
    # antisymmetric: b - a is exactly the negative, interval mirrored
    back = compare_curves(rft, sft, n=6)
    assert back.diff == pytest.approx(-cmp.diff) and back.ci.low == pytest.approx(-cmp.ci.high)


def test_a_snapshot_is_saved_through_the_trainer_and_renamed_when_complete(tmp_path):
    """(The callback that calls it at the inner steps runs in the real runs: their curves.csv steps.)"""
    saved = []

    class Trainer:
        args = SimpleNamespace(process_index=0)

        def save_model(self, path):  # every process calls it: under ZeRO-3 it gathers the shards
            saved.append(Path(path).name)
            Path(path).mkdir(parents=True)
            (Path(path) / "model.safetensors").write_text("w")

    ctx = StageContext(stage=1, task_name="a", tasks={}, style=None, base_path="", start_path="", work_dir=tmp_path,
                       save_dir=tmp_path / "model.partial", seed=0, use_cpu=True, bf16=False, inner_points=2,
                       snapshot_dir=tmp_path / "snapshots")
    (tmp_path / "snapshots/step-000003.partial").mkdir(parents=True)  # a killed attempt's
    for step in (3, 6, 3):
        assert save_snapshot(Trainer(), ctx, step) >= 0
    assert saved == ["step-000003.partial", "step-000006.partial", "step-000003.partial"]
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["step-000003", "step-000006"]
    assert (tmp_path / "snapshots/step-000003/model.safetensors").exists()


def test_a_resumed_stage_evaluates_only_the_points_curves_csv_lacks(tmp_path):
    from cpt_bench.run.curve_step import Curves
    from cpt_bench.run.steps import StageSpec

    spec = StageSpec(stage=1, task="a", items=[], base_path="", start_path="", dir=tmp_path / "stages/01-a", seed=1)
    for name in ("step-000003", "step-000006", "step-000009.partial"):
        (spec.dir / "snapshots" / name).mkdir(parents=True)
    write_curves_csv(tmp_path / "curves.csv", merged(INNER[:3], STAGES[:1]))  # stage 1's point at step 3 is done
    curves = Curves(tmp_path)
    assert [(p.step, p.model.name, p.dir.relative_to(spec.dir).as_posix()) for p in curves.pending(spec)] == [
        (6, "step-000006", "inner/step-000006")]
    assert not (spec.dir / "snapshots/step-000003").exists()  # done: removed unevaluated


@pytest.mark.parametrize("override,message", [("schedule=evaluate", "schedule=evaluate"), ("peft=lora", "peft=lora")])
def test_inner_points_need_a_stage_trained_here_with_full_weights(override, message):
    extra = ["order.tasks=[max]", "checkpoints=[/tmp]"] if override == "schedule=evaluate" else []
    with pytest.raises(ConfigError, match=f"eval.inner_points=2 needs .*{message}"):
        plan(composed("eval.inner_points=2", override, *extra))
    with pytest.raises(ConfigError, match="eval.inner_points must be >= 0"):
        plan(composed("eval.inner_points=-1"))
