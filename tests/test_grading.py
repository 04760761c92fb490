"""Answer extraction, format checks and the prompt formats, on crafted strings."""

from __future__ import annotations

import pytest

from cpt_bench.model.prompts import PromptStyle
from cpt_bench.tasks.base import Example
from cpt_bench.tasks.grading import cot_target, extract_answer, format_ok, grade_exact, last_boxed


@pytest.mark.parametrize(
    "text,expected",
    [
        ("<think> 3 4 </think> \\boxed{7}", "7"),
        ("\\boxed{1} then \\boxed{c b a}", "c b a"),  # the last box counts
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
        ("\\boxed{7", None),  # unclosed
        ("7", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    "text,ok",
    [
        ("<think> a b </think> \\boxed{b a}", 1.0),
        ("<think>\nmulti\nline\n</think>\nso \\boxed{3}", 1.0),
        ("\\boxed{3}", 0.0),  # no reasoning block
        ("<think> a b </think> b a", 0.0),  # no box
        ("\\boxed{3} <think> x </think>", 0.0),  # wrong order
    ],
)
def test_format_ok(text, ok):
    assert format_ok(text) == ok


def test_extraction_with_and_without_cot():
    assert extract_answer("<think> 3 4 </think> \\boxed{7}", cot=True) == "7"
    assert extract_answer("  7 \n", cot=False) == "7"
    assert extract_answer("7", cot=True) is None  # CoT mode grades only the box
    assert grade_exact(extract_answer("<think> x </think> \\boxed{ C B }", True), "c b") == 1.0


def test_prompt_styles():
    ex = Example("add", "add 3 4 =", "7", rationale="3 4")
    cot, direct = PromptStyle(True, "think", "answer"), PromptStyle(False, "think", "answer")
    assert cot.user_text(ex) == "add 3 4 = think" and direct.user_text(ex) == "add 3 4 = answer"
    assert cot.target(ex) == cot_target("3 4", "7") == "<think> 3 4 </think> \\boxed{7}"
    assert direct.target(ex) == "7"
    # the CoT target is graded correct and well formatted by the same code that rewards RFT
    assert format_ok(cot.target(ex)) == 1.0 and cot.extract(cot.target(ex)) == "7"
