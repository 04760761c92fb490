"""The report's verdicts on why RL forgets less (report/explain.py), on simulated studies whose
answer is known: each control's forgetting at a gain is a multiple of it, plus seed noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cpt_bench.report.explain import CONTRADICTED, NOT_RUN, SUPPORTED, UNDECIDED, explain_section, role, verdicts
from cpt_bench.report.runs import RunRecord

CONFIGS = {"sft": {"name": "sft"}, "grpo_kl": {"name": "rft", "kl_coef": 0.01},
           "grpo_no_kl": {"name": "rft", "kl_coef": 0.0}, "self_sft": {"name": "self_sft"},
           "weighted_sft": {"name": "sft", "weighting": "reward_variance"}}


def runs_of(name: str, slope: float, noise: float, rng, paradigm: dict | None = None, filtered: bool = False):
    """4 learning rates x 3 seeds: gain 2..8 points, forgetting = slope x gain + seed noise."""
    out = []
    for k, gain in enumerate((0.02, 0.04, 0.06, 0.08)):
        for seed in range(3):
            cfg = {"paradigm": {**(paradigm or CONFIGS[name]), "learning_rate": 10.0 ** -k},
                   "filter": {"name": "rif" if filtered else "none"}, "model": {"name": "tiny"}, "seed": seed}
            g = gain + rng.normal(0, 0.002)
            out.append(RunRecord(Path(f"/runs/{name}/{k}/{seed}"), "finished", cfg, seed,
                                 {"gain": g, "forgetting": slope * g + rng.normal(0, noise)}, [], [], [], None,
                                 variant=f"{name} lr={k}"))
    return out


def study(**slopes) -> list[RunRecord]:
    rng = np.random.default_rng(0)
    out = []
    for name, slope in slopes.items():
        if name == "rif_sft":
            out += runs_of(name, slope, 0.002, rng, {"name": "sft"}, filtered=True)
        else:
            out += runs_of(name, slope, 0.002, rng)
    return out


def test_a_runs_role_comes_from_its_config():
    roles = {r.variant.split()[0]: role(r) for r in study(sft=1, grpo_kl=1, grpo_no_kl=1, self_sft=1,
                                                           weighted_sft=1, rif_sft=1)}
    assert roles == {name: name for name in roles}
    both = RunRecord(Path("/x"), "finished", {"paradigm": {"name": "sft", "weighting": "reward_std"},
                                              "filter": {"name": "rif"}}, 0, {}, [], [], [], None)
    assert role(both) is None  # weighted and filtered: tests no single explanation


def test_each_explanation_gets_the_verdict_its_simulated_data_hold():
    found = {v.control: v for v in verdicts(study(sft=1.0, grpo_kl=0.3, grpo_no_kl=0.4, self_sft=0.35,
                                                  weighted_sft=1.0, rif_sft=0.65))}
    assert found["self_sft"].word == SUPPORTED  # retains as GRPO does
    assert found["weighted_sft"].word == CONTRADICTED  # forgets as SFT does, more than GRPO
    assert found["rif_sft"].word == SUPPORTED  # half-way: less than SFT
    assert found["grpo_no_kl"].word == CONTRADICTED  # without KL GRPO still forgets less than SFT
    diff = found["self_sft"].evidence[0]  # self-SFT - SFT: about (0.35 - 1) x the mean matched gain
    assert diff.reference == "sft" and diff.ci.high < 0 and -0.05 < diff.diff < -0.02


def test_a_control_like_sft_and_grpo_within_noise_is_not_distinguishable_and_missing_ones_are_not_run():
    found = {v.control: v for v in verdicts(study(sft=1.0, grpo_kl=0.97, self_sft=1.0))}
    assert found["self_sft"].word == UNDECIDED
    assert found["weighted_sft"].word == NOT_RUN and found["grpo_no_kl"].word == NOT_RUN


def test_no_verdicts_without_sft_and_grpo_and_the_section_names_every_explanation():
    assert verdicts(study(sft=1.0, self_sft=0.3)) == [] and explain_section(study(sft=1.0)) == ""
    text = explain_section(study(sft=1.0, grpo_kl=0.3, grpo_no_kl=0.4, self_sft=0.35, weighted_sft=1.0,
                                 rif_sft=0.65))
    assert text.startswith("## Why does RL forget less?")
    for source in ("arXiv 2510.18874", "arXiv 2507.05386 v2", "arXiv 2602.10815", "arXiv 2508.08275"):
        assert source in text
    assert "**supported**" in text and "**contradicted**" in text
    assert "self-SFT - SFT" in text and "GRPO without KL - SFT" in text


@pytest.mark.parametrize("slope", [0.3, 1.0])
def test_verdicts_are_deterministic(slope):
    a = verdicts(study(sft=1.0, grpo_kl=0.3, self_sft=slope))
    assert a == verdicts(study(sft=1.0, grpo_kl=0.3, self_sft=slope))


def razor_sweep(noise: dict[str, float], runs: int = 8) -> list[RunRecord]:
    """Three-task runs whose forgetting at stages 2 and 3 is f and 1.5 f; each drift measure is
    10 x that forgetting times noise of relative size noise[measure]."""
    from cpt_bench.outputs.records import Diagnostics

    rng = np.random.default_rng(1)
    order, out = ["a", "b", "c"], []
    for i in range(runs):
        f = 0.04 * (i + 1)
        rows = [[0.5, 0.4, 0.3], [0.9, 0.4, 0.3], [0.9 - f, 0.8, 0.3], [0.9 - 2 * f, 0.8 - f, 0.9]]
        matrix = [{"stage": s, "trained_task": "" if s == 0 else order[s - 1], "eval_task": t, "accuracy": acc,
                   "n": 10} for s, row in enumerate(rows) for t, acc in zip(order, row)]
        diagnostics = {stage: Diagnostics.from_json({k: (10 * forgot + 0.2) * (1 + rng.normal(0, w))
                                                     for k, w in noise.items()})
                       for stage, forgot in ((1, 0.0), (2, f), (3, 1.5 * f))}
        out.append(RunRecord(Path(f"run{i}"), "finished", {"paradigm": {"name": "sft"}}, 0, {}, matrix, order, [],
                             None, diagnostics=diagnostics))
    return out


def test_rl_razors_claim_is_read_from_the_predictor_comparison():
    from cpt_bench.report.explain import razor_verdict

    assert razor_verdict(razor_sweep({"forward_kl_task": 0.02, "kl_to_base_task": 0.6})).word == SUPPORTED
    worse = razor_verdict(razor_sweep({"forward_kl_task": 0.6, "kl_to_base_task": 0.02, "param_drift": 0.8}))
    assert worse.word == CONTRADICTED and "reverse KL (trained task)" in worse.reason
    assert "forward KL (trained task) R²" in worse.notes
    close_runs = razor_sweep({"forward_kl_task": 0.3, "kl_to_base_task": 0.3})
    close = razor_verdict(close_runs)
    assert close.word == UNDECIDED
    from cpt_bench.report.explain import razor_line  # and its decide-line names the rival and a number of runs

    line = razor_line(close_runs)
    assert line.startswith("why: the forward KL's R² interval overlaps reverse KL (trained task)'s"), line
    assert ("to decide: about " in line and "8 runs)" in line) or "no number of runs would separate them" in line
    assert razor_verdict(razor_sweep({"kl_to_base_task": 0.1, "param_drift": 0.1})).word == NOT_RUN


def test_the_report_says_when_self_sft_trained_mostly_on_reference_text():
    from cpt_bench.outputs.records import RolloutStats

    def stats(share):
        return RolloutStats("self_sft", 8, 1.0, 32, 32, 30, 0.94, 30, 0.6, 1.0, 100, off_reference=share)

    runs = study(sft=1.0, grpo_kl=0.3, self_sft=0.35)
    selfs = [r for r in runs if role(r) == "self_sft"]
    for run in selfs:
        run.rollouts = {1: stats(0.0), 2: stats(0.1)}
    text = explain_section(runs)
    assert "differed from SFT's target for the same item in 5 % of rows" in text
    assert "It trained mostly on reference text" in text
    for run in selfs:
        run.rollouts = {1: stats(0.8), 2: stats(0.6)}
    text = explain_section(runs)
    assert "in 70 % of rows" in text and "mostly on reference text" not in text
