"""The classic continual-learning methods in real runs on the tiny model: each runs a two-stage
sequence with SFT and with GRPO and records what it did; a strength of 0 or a merge at alpha 1
changes nothing (the session's quick SFT run is the reference), a merge at alpha 0 keeps the base's
row; the Fisher is the by-hand one; O-LoRA's penalty lowers the measured overlap; EWC resumes
after a kill between its stages. On two ranks: EWC in test_launch.py's two-rank SFT run, merging
in test_rollout_paradigms.py's."""

from __future__ import annotations

import csv
import json
import signal

import pytest
import torch
from safetensors.torch import load_file

from cpt_bench.faults import ENV

from conftest import QUICK, compose_config, run_cli

pytestmark = pytest.mark.slow

SMALL = ["order.tasks=[max,shift]", "benchmark.train_size=32", "benchmark.test_size=10", "paradigm.epochs=1",
         "logger=none", "eval.general=false", "eval.kl_samples=0"]
GRPO = ["paradigm=rft", "paradigm.learning_rate=1e-4"]


def run_here(tmp_path, model_cache, *overrides: str):
    """A two-stage toy run in this process: its folder."""
    from cpt_bench.run.controller import Run

    run_dir = tmp_path / "run"
    Run(compose_config(*SMALL, *overrides, f"model.cache_dir={model_cache}"), run_dir).execute()
    return run_dir


def stage(run_dir, k: int) -> dict:
    (folder,) = run_dir.glob(f"stages/{k:02d}-*")
    return json.loads((folder / "stage.json").read_text())


def rows(run_dir) -> dict[int, dict[str, str]]:
    """matrix.csv as {stage: {task: accuracy}}."""
    out: dict[int, dict[str, str]] = {}
    with open(run_dir / "matrix.csv") as f:
        for row in csv.DictReader(f):
            out.setdefault(int(row["stage"]), {})[row["eval_task"]] = row["accuracy"]
    return out


# each method with each paradigm: (overrides, the loss term stage 2 records, or None)
METHODS = [(["cl=ewc"], "ewc_penalty"), (["cl=l2", "cl.strength=10"], "l2_penalty"), (["cl=lwf"], "lwf_kl"),
           (["cl=merge", "cl.rule=ties", "cl.density=0.5"], None)]


@pytest.mark.parametrize("paradigm", [["paradigm=sft"], GRPO], ids=["sft", "grpo"])
@pytest.mark.parametrize("method, term", METHODS, ids=[m[0][0] for m in METHODS])
def test_each_method_runs_two_stages_and_records_what_it_did(method, term, paradigm, tmp_path, model_cache):
    run_dir = run_here(tmp_path, model_cache, *paradigm, *method)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished"
    name = method[0].split("=")[1]
    assert info["config"]["cl"]["name"] == name  # run.json and W&B's config, and so the report's variants
    first, second = stage(run_dir, 1), stage(run_dir, 2)
    terms = [k for k in first["diagnostics"] if k.startswith("cl/") and k.endswith(("_penalty", "_kl"))]
    assert not terms  # the regularisers act from stage 2 on
    if term:
        assert second["diagnostics"][f"cl/{term}"] > 0
    if name == "ewc":
        weights = load_file(str(run_dir / "stages" / "01-max" / "model" / "model.safetensors"))
        fisher = load_file(str(run_dir / "stages" / "01-max" / "ewc" / "fisher.safetensors"))
        assert set(fisher) >= set(weights) - {"lm_head.weight"} and all(f.min() >= 0 for f in fisher.values())
        assert first["diagnostics"]["cl/fisher_mean"] > 0
    if name == "merge":
        assert second["cl"]["settings"] == {"rule": "ties", "alpha": 0.5, "task_vectors_from": "previous",
                                            "density": 0.5}


def test_self_sft_composes_with_lwf(tmp_path, model_cache):
    run_dir = run_here(tmp_path, model_cache, "paradigm=self_sft", "paradigm.num_rollouts=4", "paradigm.epochs=3",
                       "cl=lwf")  # several optimizer steps: the first one's KL is 0 (the model is its teacher)
    assert stage(run_dir, 2)["diagnostics"]["cl/lwf_kl"] > 0
    assert stage(run_dir, 2)["rollouts"]["purpose"] == "self_sft"


def test_o_lora_runs_with_grpo_and_keeps_each_stages_subspace(tmp_path, model_cache):
    run_dir = run_here(tmp_path, model_cache, *GRPO, "peft=olora")
    a = load_file(str(run_dir / "stages" / "01-max" / "olora" / "lora_A.safetensors"))
    assert a and all(t.shape[0] == 8 for t in a.values())  # r=8 rows per module
    assert stage(run_dir, 2)["diagnostics"]["cl/olora_penalty"] > 0
    config = json.loads((run_dir / "run.json").read_text())["config"]
    assert config["peft"]["name"] == "olora" and config["paradigm"]["kl_reference"] == "previous"


def test_o_lora_s_penalty_lowers_the_overlap_with_the_earlier_subspace(tmp_path, model_cache):
    measured = {}
    for strength in (0, 1000):
        run_dir = run_here(tmp_path / str(strength), model_cache, "peft=olora", "paradigm.learning_rate=1e-3",
                           "paradigm.epochs=5", f"peft.orthogonality={strength}")
        measured[strength] = stage(run_dir, 2)["diagnostics"]["cl/olora_overlap"]
    assert measured[1000] < 0.5 * measured[0], measured


def test_strength_0_and_a_merge_at_alpha_1_reproduce_the_run_without_them(quick_run, model_cache, tmp_path):
    """Against the session's quick SFT run (the CLI's); here in this process, on one thread as there."""
    from cpt_bench.run.controller import Run

    reference, _ = quick_run
    for name, method in (("ewc", ["cl=ewc", "cl.strength=0"]), ("merge", ["cl=merge", "cl.alpha=1"])):
        run_dir = tmp_path / name
        Run(compose_config(*QUICK, *method, f"model.cache_dir={model_cache}"), run_dir).execute()
        assert (run_dir / "matrix.csv").read_text() == (reference / "matrix.csv").read_text(), name


def test_a_merge_at_alpha_0_keeps_the_base_row_and_evaluates_the_unmerged_model(tmp_path, model_cache):
    run_dir = run_here(tmp_path, model_cache, "cl=merge", "cl.alpha=0", "cl.evaluate_unmerged=true",
                       "paradigm.learning_rate=1e-3")
    matrix = rows(run_dir)
    assert matrix[1] == matrix[0] and matrix[2] == matrix[0]
    for k in (1, 2):
        record = stage(run_dir, k)
        assert record["cl"]["unmerged_accuracy"] != record["accuracy"]  # the stage's own model learned
        assert (run_dir / "stages" / f"0{k}-{['max', 'shift'][k - 1]}" / "eval_unmerged" / "max.jsonl").exists()


def test_the_fisher_is_the_mean_squared_gradient_of_each_answers_log_likelihood(tiny_base):
    """By hand: transformers' own loss (mean NLL over the answer's tokens, prompt masked) times
    the answer's length, backpropagated into `.grad`, squared, averaged over the items."""
    from cpt_bench.continual.ewc import answer_ids, fisher_diagonal
    from cpt_bench.model.loading import load_checkpoint
    from cpt_bench.model.prompts import PromptStyle
    from cpt_bench.tasks import build_benchmark

    benchmark = build_benchmark(compose_config().benchmark)
    items = benchmark.tasks["max"].train()[:3]
    style = PromptStyle.for_benchmark(benchmark, False)
    model, tok = load_checkpoint(tiny_base)
    fisher = fisher_diagonal(model, tok, style, items, samples=3, seed=0)
    model.eval()
    by_hand = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for ex in items:
        ids, start = answer_ids(tok, style, ex)
        labels = ids.clone()
        labels[:start] = -100
        model.zero_grad()
        loss = model(input_ids=ids[None], labels=labels[None]).loss * (len(ids) - start)
        loss.backward()
        for n, p in model.named_parameters():
            by_hand[n] += p.grad ** 2 / 3
    for n in by_hand:
        torch.testing.assert_close(fisher[n], by_hand[n], rtol=1e-4, atol=1e-12)


def test_ewc_killed_in_its_second_stage_resumes_to_the_uninterrupted_matrix(tmp_path, model_cache):
    """The risk is its saved state: stage 2 of the resumed run must read stage 1's Fisher."""
    args = [*SMALL, "cl=ewc", "cl.strength=100000", f"model.cache_dir={model_cache}"]
    straight = tmp_path / "straight"
    assert run_cli(*args, f"hydra.run.dir={straight}").returncode == 0
    run_dir = tmp_path / "run"
    killed = run_cli(*args, f"hydra.run.dir={run_dir}", env={ENV: "training@2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = run_cli(*args, f"hydra.run.dir={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "after stage 1" in resumed.stdout + resumed.stderr
    assert (run_dir / "matrix.csv").read_text() == (straight / "matrix.csv").read_text()
    assert stage(run_dir, 2)["diagnostics"]["cl/ewc_penalty"] == stage(straight, 2)["diagnostics"]["cl/ewc_penalty"]
