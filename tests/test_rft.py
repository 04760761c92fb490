"""RFT (GRPO): batch arithmetic, the KL reference's identity, RIF filtering, the joint
baseline and a short real run through the CLI."""

from __future__ import annotations

import json
import re

import pytest
import torch
from hydra.errors import ConfigCompositionException

from cpt_bench.builtin.tiny import build_tiny_base
from cpt_bench.config import TinyRecipe, as_schema
from cpt_bench.model.loading import load_checkpoint
from cpt_bench.model.prompts import PromptStyle
from cpt_bench.paradigms.base import StageContext
from cpt_bench.paradigms.filtering import keep_item
from cpt_bench.paradigms.rft import RFT
from cpt_bench.run.plan import plan
from cpt_bench.tasks import ConfigError, build_benchmark

from conftest import compose_config as composed
from conftest import run_cli
from reference import check_reference

# --- batch arithmetic ------------------------------------------------------------------------


def test_prompts_per_step():
    assert RFT(composed("paradigm=rft").paradigm).prompts_per_step == 16
    cfg = composed("paradigm=rft", "paradigm.per_device_batch_size=32", "paradigm.gradient_accumulation_steps=2")
    assert as_schema(cfg.paradigm).prompts_per_step(world_size=4) == 32


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["paradigm.per_device_batch_size=12"], "effective batch 12 .* not divisible by paradigm.num_generations=8"),
        (["paradigm.num_generations=1"], "num_generations must be >= 2"),
    ],
)
def test_bad_rft_settings_fail_before_training(overrides, message):
    with pytest.raises(ConfigError, match=message):
        plan(composed("paradigm=rft", *overrides))


def test_kl_reference_is_a_closed_choice():
    with pytest.raises(ConfigCompositionException) as err:
        composed("paradigm=rft", "paradigm.kl_reference=parent")
    assert "Invalid value 'parent', expected one of [base, previous]" in str(err.value.__cause__)


@pytest.mark.slow
def test_cli_reports_batch_errors_in_one_line(tmp_path):
    res = run_cli("paradigm=rft", "paradigm.per_device_batch_size=12", f"hydra.run.dir={tmp_path}/run",
                  f"model.cache_dir={tmp_path}/cache", "logger=none")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("cpt-bench: error: effective batch 12")
    assert not (tmp_path / "cache").exists()


# --- which weights the KL reference holds --------------------------------------------------


@pytest.fixture(scope="module")
def base_and_previous(model_cache, tmp_path_factory):
    """The base checkpoint and a 'previous stage' checkpoint with visibly different weights."""
    base = build_tiny_base(TinyRecipe(), model_cache)
    model, tok = load_checkpoint(base)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)
    prev = tmp_path_factory.mktemp("prev") / "model"
    model.save_pretrained(prev)
    tok.save_pretrained(prev)
    return str(base), str(prev)


def _first_param(model) -> torch.Tensor:
    return next(model.parameters()).detach().clone()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["base", "previous"])
def test_kl_reference_holds_the_chosen_weights(base_and_previous, tmp_path, mode):
    base, prev = base_and_previous
    cfg = composed("paradigm=rft", f"paradigm.kl_reference={mode}", "paradigm.kl_coef=0.01")
    bench = build_benchmark(cfg.benchmark)
    policy, tok = load_checkpoint(prev)  # the stage starts from the previous checkpoint
    ctx = StageContext(stage=2, task_name="max", tasks=bench.tasks, style=PromptStyle.for_benchmark(bench, False),
                       base_path=base, start_path=prev, work_dir=tmp_path, save_dir=tmp_path / "model", seed=0,
                       use_cpu=True, bf16=False)
    trainer, _, _ = RFT(cfg.paradigm).build_trainer(policy, tok, bench.tasks["max"].train()[:16], ctx)
    expected = load_checkpoint(base if mode == "base" else prev)[0]
    other = load_checkpoint(prev if mode == "base" else base)[0]
    ref = dict(trainer.ref_model.named_parameters())
    for name, p in expected.named_parameters():
        assert torch.equal(ref[name].detach(), p.detach()), name
    assert not torch.equal(_first_param(trainer.ref_model), _first_param(other))


@pytest.mark.slow
def test_no_reference_model_without_kl(base_and_previous, tmp_path):
    base, prev = base_and_previous
    cfg = composed("paradigm=rft", "paradigm.kl_coef=0")
    bench = build_benchmark(cfg.benchmark)
    policy, tok = load_checkpoint(prev)
    ctx = StageContext(stage=1, task_name="max", tasks=bench.tasks, style=PromptStyle.for_benchmark(bench, False),
                       base_path=base, start_path=prev, work_dir=tmp_path, save_dir=tmp_path / "model", seed=0,
                       use_cpu=True, bf16=False)
    trainer, _, _ = RFT(cfg.paradigm).build_trainer(policy, tok, bench.tasks["max"].train()[:16], ctx)
    assert trainer.ref_model is None


# --- RIF ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scores,solvable,nonzero_variance",
    [([0, 0, 0, 0], False, False), ([1, 0, 0, 0], True, True), ([1, 1, 1, 1], True, False), ([0, 1], True, True)],
)
def test_keep_rules(scores, solvable, nonzero_variance):
    assert keep_item(scores, "solvable") is solvable
    assert keep_item(scores, "nonzero_variance") is nonzero_variance


# --- short real runs ------------------------------------------------------------------------

@pytest.mark.slow
def test_a_run_s_terminal_holds_no_foreign_noise(rft_cot_rif_run):
    """A GRPO run with logger=none and WANDB_MODE=offline (as the Makefile sets): every line on
    the terminal is cpt-bench's own, none from W&B, DeepSpeed or a library's warnings."""
    _, res = rft_cot_rif_run
    lines = (res.stdout + res.stderr).splitlines()
    foreign = [x for x in lines if re.search(r"wandb|W&B|DeepSpeed|accelerator|Warning|warn\(", x, re.I)
               and not re.search(r"\[cpt_bench[.\]]", x)]  # cpt-bench's own loggers may warn
    assert lines and not foreign, foreign


@pytest.mark.slow
def test_rft_run_with_cot_and_rif_and_its_pinned_reference(rft_cot_rif_run):
    run_dir, res = rft_cot_rif_run
    out = res.stdout + res.stderr
    assert "16 prompts x 8 completions per optimizer step" in out and "RIF (nonzero_variance, K=4) kept" in out
    info = json.loads((run_dir / "run.json").read_text())
    stages = [json.loads((run_dir / f"stages/{d}/stage.json").read_text()) for d in ("01-max", "02-shift")]
    for stage in stages:
        diag = stage["diagnostics"]
        for key in ["reward", "reward_std", "frac_reward_zero_std", "kl", "entropy", "completions/mean_length",
                    "rewards/accuracy/mean", "rewards/format/mean", "param_drift", "format_rate"]:
            assert key in diag, key
        assert 0.0 <= diag["frac_reward_zero_std"] <= 1.0 and diag["format_rate"] > 0.5
        f = stage["filter"]
        assert f["items"] == 64 and f["kept"] == stage["train"]["items"] and f["num_rollouts"] == 4
        assert f["kept_fraction"] == pytest.approx(f["kept"] / 64)
    # the filter's record: every item, its 4 rollout scores and the decision the rule implies
    rows = [json.loads(line) for line in (run_dir / "stages/01-max/filter.jsonl").read_text().splitlines()]
    assert len(rows) == 64 and all(len(r["scores"]) == 4 for r in rows)
    assert all(r["kept"] == (0 < sum(r["scores"]) < 4) for r in rows)
    assert sum(r["kept"] for r in rows) == stages[0]["filter"]["kept"]
    # the drift is measured from the base and grows as the model trains
    assert 0 < stages[0]["diagnostics"]["param_drift"] <= stages[1]["diagnostics"]["param_drift"]
    compute = info["compute"]
    assert compute["optimizer_steps"] == sum(s["train"]["optimizer_steps"] for s in stages) > 0
    assert compute["generated_tokens"] == sum(s["train"]["generated_tokens"] for s in stages) > 0
    assert compute["rollout_tokens"] > 0 and compute["rollout_seconds"] > 0 and compute["wall_seconds"] > 0
    assert info["config"]["cot"] is True
    check_reference("rft_cot_rif", run_dir)


@pytest.mark.slow
def test_joint_baseline(model_cache, tmp_path):
    run_dir = tmp_path / "run"
    res = run_cli("schedule=joint", "order.tasks=[max,shift]", "benchmark.train_size=64", "benchmark.test_size=30",
                  "paradigm.epochs=2", f"model.cache_dir={model_cache}", f"hydra.run.dir={run_dir}", "logger=none")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = (run_dir / "matrix.csv").read_text().splitlines()[1:]
    assert {r.split(",")[1] for r in rows} == {"", "joint"} and len(rows) == 2 * 5
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["bwt"] is None and m["forgetting"] is None and m["stages_completed"] == 1
    stage = json.loads((run_dir / "stages/01-joint/stage.json").read_text())
    assert stage["train"]["items"] == 128  # the union of both tasks' training sets
    assert stage["train"]["optimizer_steps"] == 16  # 2 epochs x 128 items / batch 16


@pytest.mark.slow
def test_rloo_trains_a_stage_on_the_same_rewards(model_cache, tmp_path):
    """paradigm.estimator=rloo runs TRL's RLOOTrainer with the task rewards and the KL penalty."""
    from conftest import run_cli

    run_dir = tmp_path / "run"
    res = run_cli("paradigm=rft", "paradigm.estimator=rloo", "order.tasks=[max]", "benchmark.train_size=64",
                  "benchmark.test_size=30", "logger=none", f"model.cache_dir={model_cache}", f"hydra.run.dir={run_dir}")
    assert res.returncode == 0, res.stderr[-3000:]
    stage = json.loads((run_dir / "stages" / "01-max" / "stage.json").read_text())
    assert stage["train"]["optimizer_steps"] > 0 and stage["train"]["generated_tokens"] > 0
    assert "reward" in stage["diagnostics"] and "kl" in stage["diagnostics"]
    assert json.loads((run_dir / "run.json").read_text())["config"]["paradigm"]["estimator"] == "rloo"


@pytest.mark.slow
def test_generation_steps_generate_several_optimizer_steps_rollouts_at_once(model_cache, tmp_path):
    """paradigm.generation_steps=2: TRL's steps_per_generation covers two optimizer steps (counted
    in micro-steps), the rollouts for both are generated in one batch (the reward is called once
    per generation batch), and the stage still trains one optimizer step per 16 prompts."""
    cfg = composed("paradigm=rft", "paradigm.generation_steps=2", "paradigm.gradient_accumulation_steps=2",
                   "paradigm.per_device_batch_size=64")
    args = RFT(cfg.paradigm).trainer_args(StageContext(
        stage=1, task_name="max", tasks={}, style=PromptStyle(False, ""), base_path="b", start_path="b",
        work_dir=tmp_path, save_dir=tmp_path, seed=0, use_cpu=True, bf16=False), [1.0])
    assert args.steps_per_generation == 4 and args.generation_batch_size == 256  # 2 steps x 2 micro-steps x 64
    run_dir = tmp_path / "run"
    res = run_cli("paradigm=rft", "paradigm.generation_steps=2", "order.tasks=[max]", "benchmark.train_size=64",
                  "benchmark.test_size=10", "eval.general=false", "logger=none", f"model.cache_dir={model_cache}",
                  f"hydra.run.dir={run_dir}")
    assert res.returncode == 0, res.stderr[-3000:]
    stage = json.loads((run_dir / "stages" / "01-max" / "stage.json").read_text())
    assert stage["train"]["optimizer_steps"] == 4 and stage["train"]["generated_tokens"] > 0
    logged = [json.loads(line) for line in (run_dir / "stages/01-max/train_log.jsonl").read_text().splitlines()]
    assert len([row for row in logged if "loss" in row]) == 4
