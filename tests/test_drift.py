"""Output drift: the Monte Carlo KL to the base model is zero for the base itself and agrees with
the exact KL where that can be computed (one response token)."""

from __future__ import annotations

import copy

import torch

from cpt_bench.model.drift import output_kl
from cpt_bench.model.loading import load_checkpoint
from cpt_bench.model.prompts import format_prompt


def prompts_for(tok, texts):
    return [format_prompt(tok, t) for t in texts]


def test_the_base_model_has_no_output_drift_from_itself(tiny_base):
    model, tok = load_checkpoint(tiny_base)
    prompts = prompts_for(tok, ["add 3 4 = answer", "max 5 1 9 = answer", "copy a b c = answer"])
    est = output_kl(model, model, tok, prompts, samples=3, max_new_tokens=8, seed=0)
    assert est.kl == 0.0 and est.kl_per_token == 0.0 and est.samples == 3


def test_the_estimate_matches_the_exact_kl_of_a_one_token_response(tiny_base):
    base, tok = load_checkpoint(tiny_base)
    moved = copy.deepcopy(base)  # a "stage": the last MLP moved by noise of its weights' scale
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for name, p in moved.named_parameters():
            if "layers.2.mlp" in name:
                p.add_(p.std() * torch.randn(p.shape, generator=gen))
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
