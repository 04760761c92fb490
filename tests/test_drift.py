"""Output drift in both directions: the Monte Carlo KL between a model and the base is zero for the
base itself and agrees with the exact KL where that can be computed (responses of one or two
tokens, enumerated over the vocabulary); the forward direction's draw from the base is made once
and read back from its cache."""

from __future__ import annotations

import copy

import pytest
import torch

from cpt_bench.model import drift
from cpt_bench.model.drift import forward_kl, output_kl
from cpt_bench.model.loading import load_checkpoint
from cpt_bench.model.prompts import format_prompt


def prompts_for(tok, texts):
    return [format_prompt(tok, t) for t in texts]


def test_the_base_model_has_no_output_drift_from_itself(tiny_base):
    model, tok = load_checkpoint(tiny_base)
    prompts = prompts_for(tok, ["add 3 4 = answer", "max 5 1 9 = answer", "copy a b c = answer"])
    est = output_kl(model, model, tok, prompts, samples=3, max_new_tokens=8, seed=0)
    assert est.kl == 0.0 and est.kl_per_token == 0.0 and est.samples == 3


def moved_copy(base, scale: float = 1.0):
    """A "stage": the base with its last MLP moved by noise of `scale` times its weights' scale."""
    moved = copy.deepcopy(base)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for name, p in moved.named_parameters():
            if "layers.2.mlp" in name:
                p.add_(scale * p.std() * torch.randn(p.shape, generator=gen))
    return moved


def test_the_estimate_matches_the_exact_kl_of_a_one_token_response(tiny_base):
    base, tok = load_checkpoint(tiny_base)
    moved = moved_copy(base)
    (prompt,) = prompts_for(tok, ["="])  # a prompt whose next token is uncertain (entropy 0.7 nats)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        p, q = (torch.log_softmax(m(input_ids=ids).logits[0, -1].float(), -1) for m in (moved, base))
    exact = float((p.exp() * (p - q)).sum())
    est = output_kl(moved, base, tok, [prompt] * 400, samples=400, max_new_tokens=1, seed=0, batch_size=100)
    assert est.samples == 400 and exact > 0.003 and est.kl_se > 0
    assert abs(est.kl - exact) < 4 * est.kl_se, (est, exact)
    again = output_kl(moved, base, tok, [prompt] * 400, samples=400, max_new_tokens=1, seed=0, batch_size=100)
    assert again == est  # a fixed seed gives the same estimate


def exact_forward_kl(base, moved, ids, eos: int, max_new_tokens: int) -> float:
    """KL(base || moved) over every response of at most two tokens after the prompt `ids`,
    stopping at the end-of-sequence token, by enumerating the vocabulary:
    sum_y q(y) (log q(y) - log p(y)), q the base, p the moved model."""
    assert max_new_tokens in (1, 2)
    with torch.no_grad():
        q1, p1 = (torch.log_softmax(m(input_ids=ids).logits[0, -1].double(), -1) for m in (base, moved))
        kl = float((q1.exp() * (q1 - p1)).sum())
        if max_new_tokens == 2:  # each first token but EOS goes on: the second token's KL, weighted
            vocab = q1.shape[0]
            both = torch.cat([ids.repeat(vocab, 1), torch.arange(vocab)[:, None]], 1)
            q2, p2 = (torch.log_softmax(m(input_ids=both).logits[:, -1].double(), -1) for m in (base, moved))
            second = (q2.exp() * (q2 - p2)).sum(-1)
            second[eos] = 0.0
            kl += float((q1.exp() * second).sum())
    return kl


@pytest.mark.parametrize("max_new_tokens", [1, 2])
def test_the_forward_estimate_matches_the_exact_forward_kl(tiny_base, max_new_tokens):
    base, tok = load_checkpoint(tiny_base)
    moved = moved_copy(base, scale=3.0)  # moved far enough that the two directions differ by many errors
    (prompt,) = prompts_for(tok, ["="])  # a prompt whose next token is uncertain (entropy 0.7 nats)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    exact = exact_forward_kl(base, moved, ids, tok.eos_token_id, max_new_tokens)
    exact_reverse = exact_forward_kl(moved, base, ids, tok.eos_token_id, max_new_tokens)
    est = forward_kl(moved, base, tok, [prompt] * 400, samples=400, max_new_tokens=max_new_tokens, seed=0,
                     batch_size=100)
    assert est.samples == 400 and exact > 0.1 and 0 < est.kl_se < exact / 4
    assert abs(est.kl - exact) < 4 * est.kl_se, (est, exact)
    assert abs(est.kl - exact_reverse) > 8 * est.kl_se, (est, exact_reverse)  # it measures this direction


def test_the_base_is_drawn_once_and_each_model_scores_the_cached_draw(tiny_base, tmp_path, monkeypatch):
    base, tok = load_checkpoint(tiny_base)
    prompts = prompts_for(tok, ["add 3 4 = answer", "max 5 1 9 = answer", "copy a b c = answer"])
    settings = dict(samples=3, max_new_tokens=8, seed=0)
    est = forward_kl(base, base, tok, prompts, cache=tmp_path, **settings)
    assert est.kl == 0.0 and est.kl_per_token == 0.0 and est.samples == 3  # the base scores its draw as it did
    (cached,) = tmp_path.glob("*.json")
    moved = moved_copy(base)
    fresh = forward_kl(moved, base, tok, prompts, **settings)  # no cache: drawn again, the same draw
    monkeypatch.setattr(drift, "sample_base", lambda *a, **k: pytest.fail("the cached draw was not used"))
    again = forward_kl(moved, base, tok, prompts, cache=tmp_path, **settings)
    assert again == fresh and again.kl != 0.0 and again.kl_se > 0
    monkeypatch.undo()
    forward_kl(moved, base, tok, prompts, cache=tmp_path, **{**settings, "seed": 1})  # another draw, another file
    assert len(list(tmp_path.glob("*.json"))) == 2 and cached.exists()
