"""Batched evaluation must give exactly what one-at-a-time generation gives."""

from __future__ import annotations

import pytest

from cpt_bench.model.evaluation import evaluate_tasks, generate
from cpt_bench.model.loading import load_checkpoint
from cpt_bench.model.prompts import PromptStyle, format_prompt
from cpt_bench.tasks.toy import COT_INSTRUCTION, DIRECT_INSTRUCTION, toy_tasks

pytestmark = pytest.mark.slow  # every test here generates with the embedded base model


def test_batched_left_padded_generation_matches_one_at_a_time(tiny_base):
    model, tok = load_checkpoint(tiny_base)
    tasks = toy_tasks(test_size=12)
    style = PromptStyle(True, COT_INSTRUCTION, DIRECT_INSTRUCTION)  # CoT: long, ragged generations
    prompts = [format_prompt(tok, style.user_text(ex))
               for name in ["add", "reverse", "max", "copy"] for ex in tasks[name].test()]
    assert len({len(p) for p in prompts}) > 3  # mixed lengths, so padding matters
    batched = generate(model, tok, prompts, batch_size=16, max_new_tokens=12)
    single = [generate(model, tok, [p], batch_size=1, max_new_tokens=12)[0] for p in prompts]
    assert batched == single


@pytest.mark.parametrize("cot", [False, True])
def test_base_model_is_partially_competent_in_both_formats(tiny_base, cot):
    """The embedded base leaves room to learn on every CPT task, knows the general suite,
    and follows the format it is asked for (so the CoT ablation compares two known formats)."""
    model, tok = load_checkpoint(tiny_base)
    tasks = toy_tasks()
    style = PromptStyle(cot, COT_INSTRUCTION, DIRECT_INSTRUCTION)
    records = evaluate_tasks(model, tok, tasks, {n: t.test() for n, t in tasks.items()}, style)
    acc = {n: sum(r.score for r in rs) / len(rs) for n, rs in records.items()}
    for name in ["add", "reverse", "count", "max", "sort", "sub", "shift"]:
        assert 0.2 <= acc[name] <= 0.7, (name, acc[name])
    for name in ["copy", "last", "min"]:
        assert acc[name] >= 0.3, (name, acc[name])
    fmt = sum(r.format_ok for rs in records.values() for r in rs) / sum(map(len, records.values()))
    assert fmt >= 0.9 if cot else fmt == 0.0
