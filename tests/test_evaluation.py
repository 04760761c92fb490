"""Batched evaluation must give exactly what one-at-a-time generation gives."""

from __future__ import annotations

from cpt_bench.evaluation import evaluate_tasks, generate
from cpt_bench.models import TinyRecipe, build_tiny_base, format_prompt, load_model_and_tokenizer
from cpt_bench.tasks.toy import toy_tasks


def test_batched_left_padded_generation_matches_one_at_a_time(model_cache):
    model, tok = load_model_and_tokenizer(build_tiny_base(TinyRecipe(), model_cache))
    tasks = toy_tasks(test_size=12)
    prompts = [format_prompt(tok, ex.prompt) for name in ["add", "reverse", "max", "copy"] for ex in tasks[name].test()]
    assert len({len(p) for p in prompts}) > 3  # mixed lengths, so padding matters
    batched = generate(model, tok, prompts, batch_size=16, max_new_tokens=12)
    single = [generate(model, tok, [p], batch_size=1, max_new_tokens=12)[0] for p in prompts]
    assert batched == single


def test_base_model_is_partially_competent(model_cache):
    """The embedded base leaves room to learn on every CPT task and knows the general suite."""
    model, tok = load_model_and_tokenizer(build_tiny_base(TinyRecipe(), model_cache))
    tasks = toy_tasks()
    records = evaluate_tasks(model, tok, tasks, {n: t.test() for n, t in tasks.items()})
    acc = {n: sum(r.score for r in rs) / len(rs) for n, rs in records.items()}
    for name in ["add", "reverse", "count", "max", "sort", "sub", "shift"]:
        assert 0.2 <= acc[name] <= 0.7, (name, acc[name])
    for name in ["copy", "last", "min"]:
        assert acc[name] >= 0.3, (name, acc[name])
