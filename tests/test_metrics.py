"""Unit tests for cpt_bench.metrics.

Expected numbers are computed by hand in the comments, never with the module's
own formulas, so a wrong formula cannot agree with itself.
"""

import json
import math

import pytest

from cpt_bench import metrics as m
from cpt_bench.metrics import compute_metrics

approx = pytest.approx

# 3 tasks, full run (S = T = 3). Same matrix as the worked example in docs/metrics.md.
# Task 0 rises after stage 1 (0.80 -> 0.85) before dropping to 0.60, so
# forgetting (max over history) and -bwt (vs. right-after-training) differ.
R3 = [
    [0.30, 0.20, 0.40],  # base
    [0.80, 0.30, 0.40],  # after stage 1 (task 0 trained)
    [0.85, 0.90, 0.55],  # after stage 2 (task 1 trained)
    [0.60, 0.85, 0.80],  # after stage 3 (task 2 trained)
]
GENERAL3 = {"mmlu": [0.50, 0.48, 0.47, 0.45], "gsm8k": [0.30, 0.31, 0.29, 0.32]}


def test_full_three_task_matrix():
    out = compute_metrics(R3, GENERAL3)
    assert out["final_avg_acc"] == approx(0.75)  # (0.60 + 0.85 + 0.80) / 3
    assert out["avg_acc_per_stage"] == approx([0.80, 0.875, 0.75])  # 0.80; (0.85+0.90)/2; final
    assert out["plasticity"] == approx(2.5 / 3)  # (0.80 + 0.90 + 0.80) / 3
    assert out["gain"] == approx(0.45)  # (0.50 + 0.60 + 0.25) / 3
    assert out["bwt"] == approx(-0.125)  # (-0.20 + -0.05) / 2
    assert out["per_task_forgetting"] == approx([0.25, 0.05])  # 0.85-0.60; 0.90-0.85
    assert out["forgetting"] == approx(0.15)
    assert out["fwt"] == approx(0.125)  # (0.30-0.20 + 0.55-0.40) / 2
    assert out["general_delta_per_task"] == approx({"mmlu": -0.05, "gsm8k": 0.02})
    assert out["general_delta"] == approx(-0.015)
    assert out["stages_completed"] == 3
    assert out["num_tasks"] == 3


def test_individual_functions_match_entry_point():
    out = compute_metrics(R3, GENERAL3)
    assert m.final_avg_acc(R3) == out["final_avg_acc"]
    assert m.avg_acc_per_stage(R3) == out["avg_acc_per_stage"]
    assert m.plasticity(R3) == out["plasticity"]
    assert m.gain(R3) == out["gain"]
    assert m.bwt(R3) == out["bwt"]
    assert m.forgetting(R3) == out["forgetting"]
    assert m.per_task_forgetting(R3) == out["per_task_forgetting"]
    assert m.fwt(R3) == out["fwt"]
    assert m.general_delta(R3, GENERAL3) == out["general_delta"]
    assert m.general_delta_per_task(R3, GENERAL3) == out["general_delta_per_task"]


def test_output_keys_json_and_sign_conventions():
    out = compute_metrics(R3, GENERAL3)
    expected = {
        "final_avg_acc", "avg_acc_per_stage", "plasticity", "gain", "bwt", "forgetting",
        "fwt", "general_delta", "general_delta_per_task", "per_task_forgetting",
        "stages_completed", "num_tasks",
    }
    assert set(out) == expected
    json.dumps(out, allow_nan=False)  # must serialise without NaN/inf
    # The CLI printer looks up every metric key (counts excluded) in SIGN_CONVENTIONS.
    assert set(m.SIGN_CONVENTIONS) == expected - {"stages_completed", "num_tasks"}
    assert all(isinstance(v, str) and v for v in m.SIGN_CONVENTIONS.values())


def test_partial_run_ignores_untrained_columns():
    # T = 4 tasks but only S = 2 stages done; columns 2 and 3 must not matter.
    R = [
        [0.25, 0.50, 0.10, 0.40],
        [0.75, 0.55, 0.20, 0.40],
        [0.50, 1.00, 0.30, 0.45],
    ]
    out = compute_metrics(R)
    assert out["stages_completed"] == 2 and out["num_tasks"] == 4
    assert out["final_avg_acc"] == approx(0.75)  # (0.50 + 1.00) / 2
    assert out["avg_acc_per_stage"] == approx([0.75, 0.75])
    assert out["plasticity"] == approx(0.875)  # (0.75 + 1.00) / 2
    assert out["gain"] == approx(0.475)  # (0.75-0.25 + 1.00-0.55) / 2
    assert out["bwt"] == approx(-0.25)  # 0.50 - 0.75
    assert out["forgetting"] == approx(0.25)  # max(0.75) - 0.50
    assert out["per_task_forgetting"] == approx([0.25])
    assert out["fwt"] == approx(0.05)  # 0.55 - 0.50
    # Changing untrained columns leaves every metric unchanged.
    R_other = [row[:2] + [1.0, 0.0] for row in R]
    assert compute_metrics(R_other) == out


def test_single_stage_gives_none_for_cross_task_metrics():
    R = [[0.2, 0.1], [0.9, 0.3]]
    out = compute_metrics(R)
    assert out["final_avg_acc"] == approx(0.9)
    assert out["avg_acc_per_stage"] == approx([0.9])
    assert out["plasticity"] == approx(0.9)
    assert out["gain"] == approx(0.7)
    assert out["bwt"] is None
    assert out["forgetting"] is None
    assert out["fwt"] is None
    assert out["per_task_forgetting"] == []
    assert out["general_delta"] is None
    assert out["general_delta_per_task"] == {}
    assert out["stages_completed"] == 1


def test_forgetting_uses_max_over_history_not_just_after_training():
    # Task 0: 0.60 right after training, peaks at 0.90 after stage 2, ends at 0.50.
    # BWT only sees 0.50 - 0.60; forgetting sees the drop from the 0.90 peak.
    R = [
        [0.10, 0.10, 0.10],
        [0.60, 0.10, 0.10],
        [0.90, 0.70, 0.10],
        [0.50, 0.70, 0.80],
    ]
    assert m.bwt(R) == approx(-0.05)  # (-0.10 + 0.00) / 2
    assert m.per_task_forgetting(R) == approx([0.40, 0.0])  # 0.90-0.50; 0.70-0.70
    assert m.forgetting(R) == approx(0.20)


def test_improvement_at_the_end_gives_positive_bwt_and_negative_forgetting():
    R = [[0.1, 0.1], [0.5, 0.2], [0.7, 0.9]]
    assert m.bwt(R) == approx(0.2)  # 0.7 - 0.5
    assert m.forgetting(R) == approx(-0.2)  # max(0.5) - 0.7


def test_forgetting_excludes_rows_before_the_task_was_trained():
    # Task 1 scores 0.95 at base (row 0) and after stage 1; only rows >= 2 count.
    R = [
        [0.1, 0.95, 0.1],
        [0.5, 0.95, 0.1],
        [0.5, 0.60, 0.1],
        [0.5, 0.40, 0.7],
    ]
    assert m.per_task_forgetting(R) == approx([0.0, 0.20])  # task 1: 0.60 - 0.40


def test_accepts_tuples_and_ints():
    out = compute_metrics(((0, 0), (1, 0)), {"g": (0, 1)})
    assert out["final_avg_acc"] == 1.0 and isinstance(out["final_avg_acc"], float)
    assert out["general_delta"] == 1.0


def test_empty_general_mapping_is_same_as_none():
    out = compute_metrics(R3, {})
    assert out["general_delta"] is None and out["general_delta_per_task"] == {}


@pytest.mark.parametrize(
    "R, match",
    [
        ([], "empty"),
        ([[0.1, 0.2]], "no stage"),
        ([[0.1, 0.2], [0.3]], "ragged"),
        ([[0.1], [0.2], [0.3]], "2 stages but only 1 tasks"),
        ([[], []], "no task columns"),
        ([[0.1, 0.2], [1.5, 0.2]], r"R\[1\]\[0\].*outside \[0, 1\]"),
        ([[0.1, 0.2], [0.5, -0.01]], "outside"),
        ([[0.1, 0.2], [math.nan, 0.2]], "outside"),
        ([[0.1, 0.2], ["0.5", 0.2]], "not a number"),
        ([[0.1, 0.2], [True, 0.2]], "not a number"),
    ],
)
def test_invalid_matrix_raises(R, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(R)


@pytest.mark.parametrize("fn", [m.final_avg_acc, m.bwt, m.forgetting, m.fwt, m.gain])
def test_individual_functions_validate(fn):
    with pytest.raises(ValueError, match="ragged"):
        fn([[0.1, 0.2], [0.3]])


@pytest.mark.parametrize(
    "general, match",
    [
        ({"mmlu": [0.5, 0.4]}, "expected S\\+1 = 4"),  # too short for S = 3
        ({"mmlu": [0.5, 0.4, 0.4, 0.4, 0.4]}, "expected S\\+1 = 4"),
        ({"mmlu": [0.5, 0.4, 1.2, 0.4]}, "outside"),
    ],
)
def test_invalid_general_raises(general, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(R3, general)


def test_error_messages_are_one_line():
    for bad in ([], [[0.1]], [[0.1, 0.2], [0.3]], [[0.1], [0.2], [0.3]], [[0.1], [2.0]]):
        with pytest.raises(ValueError) as exc:
            compute_metrics(bad)
        assert "\n" not in str(exc.value)
