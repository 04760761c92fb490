"""The paradigms that ask for a rollout step (issue 25's controls of "why does RL forget less"):
self-SFT trains on the model's own rewarded samples, reward-variance-weighted SFT weighs each
item by p(1-p) or sqrt(p(1-p)), and `paradigm=sft filter=rif` trains exactly on RIF's kept items.

The pure rules are checked on hand-made rollouts; the runs check that the stage loop hands
each paradigm what it declared and records it (in process, with a spy on the trainer's data),
and that the same steps run on two ranks."""

from __future__ import annotations

import csv
import json
import math

import pytest

from cpt_bench.choices import SFTWeighting
from cpt_bench.errors import ConfigError
from cpt_bench.paradigms import build_paradigm
from cpt_bench.paradigms.rollouts import Sampled
from cpt_bench.paradigms.self_sft import SelfSFT, SelfSFTParadigm
from cpt_bench.paradigms.sft import SFT, SFTParadigm, item_weights
from cpt_bench.run.plan import plan
from cpt_bench.tasks.base import Example

from conftest import compose_config, run_cli

ITEMS = [Example("max", f"max {i} =", str(i)) for i in range(5)]


def sampled(*rates_of_8: int) -> list[Sampled]:
    """One item per count: that many of 8 completions correct ("ok<j>"), the rest wrong."""
    return [Sampled([f"ok{j}" if j < k else f"no{j}" for j in range(8)], [1.0] * k + [0.0] * (8 - k))
            for k in rates_of_8]


def test_a_weight_is_p_times_1_minus_p_normalised_and_p_0_or_1_weighs_0():
    rates = [0.0, 0.25, 0.5, 1.0]
    raw = [0.0, 0.1875, 0.25, 0.0]
    mean = (0.1875 + 0.25) / 2  # over the items with a non-zero weight
    assert item_weights(rates, SFTWeighting.reward_variance) == pytest.approx([w / mean for w in raw])
    std = [0.0, math.sqrt(0.1875), 0.5, 0.0]
    assert item_weights(rates, SFTWeighting.reward_std) == pytest.approx([w / (sum(std) / 2) for w in std])
    assert item_weights([0.0, 1.0, 1.0], SFTWeighting.reward_variance) == [0.0, 0.0, 0.0]


def test_weighted_sft_trains_each_item_towards_its_answer_with_its_weight_and_drops_weight_0():
    sft = SFT(SFTParadigm(weighting=SFTWeighting.reward_variance))
    assert sft.rollouts.purpose == "reward_variance" and sft.rollouts.num_rollouts == 8
    assert sft.rollouts.max_new_tokens is None  # SFT has no completion length: eval.max_new_tokens
    rows = sft.rows(ITEMS, sampled(0, 2, 4, 6, 8))
    assert [r.example for r in rows] == ITEMS[1:4] and all(r.completion is None for r in rows)
    assert [r.weight for r in rows] == pytest.approx([0.1875 / (0.1875 + 0.25 + 0.1875) * 3, 0.25 / 0.625 * 3,
                                                      0.1875 / 0.625 * 3])
    assert sum(r.weight for r in rows) == pytest.approx(len(rows))  # mean 1 over the trained items
    plain = SFT(SFTParadigm())
    assert plain.rollouts is None and [r.weight for r in plain.rows(ITEMS, None)] == [1.0] * 5


def test_self_sft_trains_only_on_the_models_own_correct_samples():
    paradigm = SelfSFT(SelfSFTParadigm(samples_per_prompt=2, max_completion_length=12))
    assert paradigm.rollouts.purpose == "self_sft" and paradigm.rollouts.max_new_tokens == 12
    assert paradigm.completion_length == 12  # RIF rolls out at the paradigm's own length
    rolled = sampled(0, 1, 3, 8, 0)
    rolled[2] = Sampled(["a", "a", "b", "x"], [1.0, 1.0, 1.0, 0.0])  # a repeated correct sample counts once
    rows = paradigm.rows(ITEMS, rolled)
    assert [(r.example.prompt, r.completion) for r in rows] == [
        ("max 1 =", "ok0"), ("max 2 =", "a"), ("max 2 =", "b"), ("max 3 =", "ok0"), ("max 3 =", "ok1")]
    assert all(r.weight == 1.0 for r in rows)
    with pytest.raises(ValueError, match="rollout step"):
        paradigm.rows(ITEMS, None)


@pytest.mark.parametrize("overrides, message", [
    (["paradigm=self_sft", "paradigm.weighting=reward_variance"], "paradigm.weighting must be none for self_sft"),
    (["paradigm=sft", "paradigm.weighting=reward_std", "paradigm.num_rollouts=1"],
     "paradigm.num_rollouts must be >= 2 with weighting"),
    (["paradigm=self_sft", "paradigm.max_completion_length=0"], "paradigm.max_completion_length must be > 0"),
    (["paradigm=self_sft", "paradigm.rollout_temperature=0"], "paradigm.rollout_temperature must be > 0"),
])
def test_bad_rollout_settings_fail_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        plan(compose_config(*overrides))


def test_self_sft_composes_with_its_own_settings():
    cfg = plan(compose_config("paradigm=self_sft", "cot=true")).config
    assert cfg.paradigm.name == "self_sft" and cfg.paradigm.learning_rate == 3e-4  # SFT's optimisation
    paradigm = build_paradigm(cfg.paradigm)
    assert isinstance(paradigm, SelfSFT) and paradigm.rollouts.num_rollouts == cfg.paradigm.num_rollouts


# --- runs: the stage loop hands each paradigm what it declared -------------------------------

# what these tests check is the training data: no general suite, no output drift
SMALL = ["order.tasks=[max,shift]", "benchmark.train_size=32", "benchmark.test_size=10", "paradigm.epochs=1",
         "logger=none", "eval.general=false", "eval.kl_samples=0"]
ONE_STAGE = "order.tasks=[max]"


def spied_run(tmp_path, monkeypatch, model_cache, *overrides: str) -> tuple[object, list[list]]:
    """A two-stage toy run in this process; every stage's training rows as the trainer got them."""
    from cpt_bench.run.controller import Run

    trained: list[list] = []
    real = SFT.dataset

    def spy(self, processing_class, rows, ctx):
        trained.append(list(rows))
        return real(self, processing_class, rows, ctx)

    monkeypatch.setattr(SFT, "dataset", spy)
    run_dir = tmp_path / "run"
    Run(compose_config(*SMALL, *overrides, f"model.cache_dir={model_cache}"), run_dir).execute()
    return run_dir, trained


def stage_files(run_dir, stage: int) -> tuple[dict, list[dict]]:
    (folder,) = run_dir.glob(f"stages/{stage:02d}-*")
    rollouts = folder / "rollouts.jsonl"
    rows = [json.loads(x) for x in rollouts.read_text().splitlines()] if rollouts.exists() else []
    return json.loads((folder / "stage.json").read_text()), rows


@pytest.mark.slow
def test_sft_with_rif_trains_exactly_on_rifs_kept_items(tmp_path, monkeypatch, model_cache):
    """The control of arXiv 2602.10815 (SFT on difficulty-curated data): `paradigm=sft filter=rif`."""
    run_dir, trained = spied_run(tmp_path, monkeypatch, model_cache, ONE_STAGE, "filter=rif",
                                 "filter.keep=nonzero_variance", "filter.num_rollouts=4")
    assert len(trained) == 1
    for stage, rows in enumerate(trained, start=1):
        (folder,) = run_dir.glob(f"stages/{stage:02d}-*")
        decisions = [json.loads(x) for x in (folder / "filter.jsonl").read_text().splitlines()]
        kept = [d["prompt"] for d in decisions if d["kept"]]
        assert [r.example.prompt for r in rows] == kept and 0 < len(kept) < len(decisions)
        assert [r.example.answer for r in rows] == [d["answer"] for d in decisions if d["kept"]]
        assert all(r.completion is None and r.weight == 1.0 for r in rows)  # towards the reference answers
        record = json.loads((folder / "stage.json").read_text())
        assert record["train"]["items"] == record["filter"]["kept"] == len(kept) and "rollouts" not in record


@pytest.mark.slow
def test_self_sft_trains_on_its_own_rewarded_samples_and_records_them(tmp_path, monkeypatch, model_cache):
    run_dir, trained = spied_run(tmp_path, monkeypatch, model_cache, "paradigm=self_sft",
                                 "paradigm.samples_per_prompt=2")
    assert len(trained) == 2
    for stage, rows in enumerate(trained, start=1):
        record, rolled = stage_files(run_dir, stage)
        assert len(rolled) == 32 and all(len(r["completions"]) == 8 for r in rolled)
        by_prompt = {r["prompt"]: r for r in rolled}
        for row in rows:  # every trained completion is one the model sampled and the reward graded correct
            sample = by_prompt[row.example.prompt]
            assert any(c == row.completion and s == 1.0 for c, s in zip(sample["completions"], sample["scores"]))
        kept = [r for r in rolled if 1.0 in r["scores"]]
        assert {row.example.prompt for row in rows} == {r["prompt"] for r in kept}  # no correct sample: dropped
        assert len(rows) == sum(min(2, len({c for c, s in zip(r["completions"], r["scores"]) if s == 1.0}))
                                for r in kept)
        stats = record["rollouts"]
        assert stats["purpose"] == "self_sft" and stats["items"] == 32 and stats["kept"] == len(kept)
        assert stats["rows"] == len(rows) and stats["kept_fraction"] == pytest.approx(len(kept) / 32)
        assert stats["max_new_tokens"] == 32 and stats["rollout_tokens"] > 0
        # without CoT SFT's target is the answer: the share of rows that are not it, whitespace aside
        own = sum(" ".join(row.completion.split()) != row.example.answer for row in rows) / len(rows)
        assert stats["off_reference"] == pytest.approx(own)
        assert record["train"]["generated_tokens"] == stats["rollout_tokens"]  # counted as GRPO's are
        assert record["timings"]["rollout_seconds"] == stats["rollout_seconds"]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["compute"]["generated_tokens"] > 0


@pytest.mark.slow
def test_reward_variance_weighted_sft_trains_with_p_times_1_minus_p(tmp_path, monkeypatch, model_cache):
    run_dir, trained = spied_run(tmp_path, monkeypatch, model_cache, ONE_STAGE, "paradigm.weighting=reward_variance",
                                 "paradigm.num_rollouts=4")
    assert len(trained) == 1
    for stage, rows in enumerate(trained, start=1):
        record, rolled = stage_files(run_dir, stage)
        rates = [sum(r["scores"]) / 4 for r in rolled]
        expected = [(r["prompt"], w) for r, w in zip(rolled, item_weights(rates, SFTWeighting.reward_variance))
                    if w > 0]
        assert [(row.example.prompt, row.weight) for row in rows] == [(p, pytest.approx(w)) for p, w in expected]
        assert all(row.completion is None for row in rows)
        stats = record["rollouts"]
        assert stats["purpose"] == "reward_variance" and stats["kept"] == len(rows) < 32
        assert stats["off_reference"] is None  # every row trains towards its reference answer
        assert stats["mean_success"] == pytest.approx(sum(rates) / 32)


@pytest.mark.slow
def test_the_weighted_loss_is_sfts_loss_scaled_by_the_weights(tmp_path, model_cache):
    """Weights of 1 give SFTTrainer's own loss; a row of weight 0 contributes nothing."""
    import torch
    from trl import SFTConfig, SFTTrainer

    from cpt_bench.builtin import base_model_path
    from cpt_bench.model.loading import load_checkpoint
    from cpt_bench.paradigms.base import TrainRow
    from cpt_bench.paradigms.sft import weighted_trainer
    from cpt_bench.run.steps import StageSpec, stage_context
    from cpt_bench.tasks import build_benchmark

    cfg = plan(compose_config(*SMALL, "paradigm.weighting=reward_variance", f"model.cache_dir={model_cache}")).config
    model, tok = load_checkpoint(base_model_path(cfg.model))
    bench = build_benchmark(cfg.benchmark)
    from cpt_bench.model.prompts import PromptStyle

    style = PromptStyle.for_benchmark(bench, False)
    spec = StageSpec(stage=1, task="max", items=[], base_path="", start_path="", dir=tmp_path, seed=0)
    ctx = stage_context(cfg, bench, style, spec, lambda *a: None)
    sft = SFT(cfg.paradigm)
    items = bench.tasks["max"].train()[:4]
    args = SFTConfig(output_dir=str(tmp_path / "t"), per_device_train_batch_size=4, max_length=64,
                     completion_only_loss=True, use_cpu=True, report_to=[], seed=0)

    def loss(cls, weights):
        data = sft.dataset(tok, [TrainRow(ex, None, w) for ex, w in zip(items, weights)], ctx)
        if cls is SFTTrainer:
            data = data.remove_columns("weight")
        trainer = cls(model=model, args=args, train_dataset=data, processing_class=tok)
        batch = next(iter(trainer.get_train_dataloader()))
        with torch.no_grad():
            return float(trainer.compute_loss(model, batch))

    weighted = weighted_trainer()
    plain = loss(SFTTrainer, [1.0] * 4)
    assert loss(weighted, [1.0] * 4) == pytest.approx(plain, rel=1e-5)
    assert loss(weighted, [2.0] * 4) == pytest.approx(2 * plain, rel=1e-5)
    assert loss(weighted, [0.0] * 4) == 0.0


@pytest.mark.slow
def test_weighted_sft_after_rif_on_two_ranks(model_cache, tmp_path):
    """Both rollout steps (RIF's, then the paradigm's on the kept items) sharded over two ranks:
    the weights come from the kept items' own rollouts, read back by the training ranks."""
    run_dir = tmp_path / "run"
    res = run_cli(*SMALL, ONE_STAGE, "benchmark.train_size=16", "benchmark.test_size=5",
                  "paradigm.weighting=reward_std", "paradigm.num_rollouts=4", "filter=rif",
                  "filter.num_rollouts=4", "launcher=torchrun", "launcher.nproc_per_node=2",
                  # and a merge in the controller after the launched training, at alpha 0: the merged
                  # model is exactly the one the stage started from, so row 1 must equal row 0
                  "cl=merge", "cl.alpha=0",
                  f"model.cache_dir={model_cache}", f"hydra.run.dir={run_dir}")
    assert res.returncode == 0, res.stderr[-3000:]
    for stage in (1,):  # one stage: five torchrun launches
        record, rolled = stage_files(run_dir, stage)
        (folder,) = run_dir.glob(f"stages/{stage:02d}-*")
        decisions = [json.loads(x) for x in (folder / "filter.jsonl").read_text().splitlines()]
        assert [r["prompt"] for r in rolled] == [d["prompt"] for d in decisions if d["kept"]]  # on RIF's kept items
        assert all(len(r["scores"]) == 4 for r in rolled)
        weights = item_weights([sum(r["scores"]) / 4 for r in rolled], SFTWeighting.reward_std)
        assert record["rollouts"]["kept"] == sum(w > 0 for w in weights)
        assert record["filter"]["kept"] == record["rollouts"]["items"] == record["train"]["items"]
        assert record["cl"]["method"] == "merge"
        for log in ("rollout-rif.log", "rollout-reward_std.log"):
            assert "on rank 1 of 2" in (folder / log).read_text()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    with open(run_dir / "matrix.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    row = {s: {r["eval_task"]: r["accuracy"] for r in rows if r["stage"] == s} for s in ("0", "1")}
    assert row["1"] == row["0"]  # the merge ran after the launched training and gave back the start model
