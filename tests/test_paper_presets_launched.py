"""Every paper preset runs as users run it: through the CLI, `launcher=torchrun
launcher.nproc_per_node=2` (gloo on these CPUs), with the preset's own DeepSpeed config
(ZeRO-3), changing only sizes: the embedded tiny model on the toy benchmark, or a tiny random
Qwen2.5-VL on local MLLM-CL files; a few items, one optimizer step, short answers.

What the presets set is asserted as recorded in `run.json`, not re-stated here: each case
names the settings the preset must have kept (KL coefficient and reference, CoT, filter,
ZeRO stage), and a size override never touches them. A KL preset must also build TRL's
reference model partitioned over the two ranks (half of it per rank), not a replica per rank.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import run_cli
from tiny_vlm import build_tiny_vlm, mixed_mllm_overrides, write_mixed_mllm_data

pytestmark = pytest.mark.slow  # every case runs a two-rank sequence through the CLI

TWO_RANKS = ["launcher=torchrun", "launcher.nproc_per_node=2", "logger=none"]
# sizes only: one GRPO group (8 completions) per rank per optimizer step, one step per stage
TOY = ["model=tiny", "benchmark=toy", "benchmark.train_size=8", "benchmark.test_size=8", "eval.kl_samples=4"]
RFT_SIZES = ["paradigm.gradient_accumulation_steps=1", "paradigm.max_steps=1", "paradigm.max_completion_length=16",
             "eval.max_new_tokens=16"]
SFT_SIZES = ["paradigm.max_steps=1", "eval.max_new_tokens=8"]

# (preset overrides, size overrides, what run.json must record: the preset's own settings)
KL_BASE = {"paradigm.kl_coef": 0.01, "paradigm.kl_reference": "base", "cot": True, "filter.name": "none"}
CASES = {
    "paper_sft": (["+experiment=paper_sft"], [*TOY, "order.tasks=[max]", *SFT_SIZES],
                  {"paradigm.name": "sft", "cot": False, "paradigm.learning_rate": 1e-5}),
    "paper_rft": (["+experiment=paper_rft"], [*TOY, "order.tasks=[max,shift]", *RFT_SIZES],
                  {"paradigm.name": "rft", **KL_BASE}),
    "paper_rft_no_kl": (["+experiment=paper_rft_no_kl"], [*TOY, "order.tasks=[max]", *RFT_SIZES],
                        {"paradigm.kl_coef": 0.0, "cot": True}),
    "paper_rft_no_cot": (["+experiment=paper_rft_no_cot"], [*TOY, "order.tasks=[max]", *RFT_SIZES],
                         {**KL_BASE, "cot": False}),
    "paper_rif_rft": (["+experiment=paper_rif_rft"], [*TOY, "order.tasks=[max]", *RFT_SIZES],
                      {**KL_BASE, "filter.name": "rif", "filter.keep": "solvable", "filter.num_rollouts": 8}),
    # the reproduction: GRPO with its default KL term under deepspeed=zero3 on two ranks
    "rft_zero3_kl": (["paradigm=rft", "deepspeed=zero3"],
                     ["order.tasks=[add]", "benchmark.train_size=32", "benchmark.test_size=20", "eval.general=false",
                      "paradigm.max_steps=2"], {"paradigm.kl_coef": 0.01, "paradigm.kl_reference": "base"}),
    # RLOO with the KL term against the stage's start (the estimator ablation on the paper's setting)
    "paper_rft_rloo_previous": (["+experiment=paper_rft", "paradigm.estimator=rloo", "paradigm.kl_reference=previous"],
                                [*TOY, "order.tasks=[max]", *RFT_SIZES],
                                {"paradigm.estimator": "rloo", "paradigm.kl_coef": 0.01,
                                 "paradigm.kl_reference": "previous"}),
}
VLM_SIZES = ["model.min_pixels=3136", "model.max_pixels=12544"]  # 56 x 56 .. 112 x 112: 4 to 16 image tokens
# the tiny Qwen2.5-VL: ScienceQA items carry images, MMLU-Pro items are text only; the joint
# schedule (`make paper-joint`: paper_sft schedule=joint) is where the two meet in one
# optimizer step, one item per rank (ScienceQA's loader keeps only its image questions)
VLM_CASES = {
    "paper_joint_vlm": (["+experiment=paper_sft", "schedule=joint"],
                        [*VLM_SIZES, *SFT_SIZES, "paradigm.max_length=256"],
                        {"paradigm.name": "sft", "schedule": "joint", "cot": False}),
    "paper_rft_vlm": (["+experiment=paper_rft", "schedule=joint"],
                      [*VLM_SIZES, *RFT_SIZES, "paradigm.max_steps=2", "eval.kl_samples=2"],
                      {"paradigm.name": "rft", **KL_BASE}),
}


def recorded(config: dict, dotted: str):
    for key in dotted.split("."):
        config = config[key]
    return config


def check_run(run_dir: Path, preset_settings: dict) -> None:
    """A complete matrix, a full checkpoint per stage, the preset's settings as recorded, two ranks."""
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished"
    config = info["config"]
    for key, value in preset_settings.items():
        assert recorded(config, key) == value, key
    assert config["deepspeed"]["config"]["zero_optimization"]["stage"] == 3
    assert config["launcher"]["nproc_per_node"] == 2
    tasks = [*info["order"], *info["general_suite"]]
    stages = sorted(p for p in (run_dir / "stages").iterdir() if p.is_dir())
    with open(run_dir / "matrix.csv", newline="") as f:
        cells = {(int(r["stage"]), r["eval_task"]): int(r["n"]) for r in csv.DictReader(f)}
    assert cells.keys() == {(s, t) for s in range(len(stages)) for t in tasks}  # every stage x every task
    assert all(n > 0 for n in cells.values())
    base = load_file(str(next(Path(info["base_model"]).glob("*.safetensors"))))
    for folder in stages[1:]:
        stage = json.loads((folder / "stage.json").read_text())
        assert stage["train"]["optimizer_steps"] >= 1
        weights = {k: v for f in sorted((folder / "model").glob("*.safetensors")) for k, v in load_file(str(f)).items()}
        assert all(weights[k].shape == t.shape for k, t in base.items()), "a ZeRO-3 shard was saved, not the weights"
        log = (folder / "train.log").read_text()
        assert "on rank 0 of 2" in log and "on rank 1 of 2" in log
        # no compiled kernel for DeepSpeed's inference, no deprecation noise from its collectives
        assert "shm_comm" not in log and "Please use `torch.distributed" not in log, log[:2000]
        if preset_settings.get("paradigm.kl_coef", 0.0) > 0:
            lines = [x for x in log.splitlines() if "KL reference model" in x]
            assert len(lines) == 2 and all("(50 %)" in x for x in lines), lines  # partitioned, half per rank


def launch(tmp_path: Path, preset: list[str], sizes: list[str], *extra: str) -> Path:
    run_dir = tmp_path / "run"
    res = run_cli(*preset, *sizes, *TWO_RANKS, *extra, f"hydra.run.dir={run_dir}", timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    return run_dir


@pytest.mark.parametrize("case", list(CASES))
def test_paper_preset_on_two_ranks(case, model_cache, tmp_path):
    preset, sizes, settings = CASES[case]
    run_dir = launch(tmp_path, preset, sizes, f"model.cache_dir={model_cache}")
    check_run(run_dir, settings)
    stage = json.loads(next((run_dir / "stages").glob("01-*/stage.json")).read_text())
    if settings.get("paradigm.name", "rft") == "rft":
        assert stage["train"]["generated_tokens"] > 0  # summed over both ranks' rollouts
    if settings.get("paradigm.kl_coef"):
        assert stage["diagnostics"]["kl"] >= 0
    if case == "paper_rif_rft":  # RIF's rollouts, sharded over the ranks and merged in item order
        assert stage["filter"]["items"] == 8 and stage["train"]["items"] == stage["filter"]["kept"]
        assert "on rank 1 of 2" in (run_dir / "stages/01-max/rollout-rif.log").read_text()
        filtered = [json.loads(x) for x in (run_dir / "stages/01-max/filter.jsonl").read_text().splitlines()]
        assert len(filtered) == 8 and all(len(r["scores"]) == 8 for r in filtered)


@pytest.fixture(scope="module")
def mixed_vlm(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("vlm")
    base = build_tiny_vlm(folder / "model", texts=["What colour is the square? A. red B. blue Is even? yes no"] * 4)
    return mixed_mllm_overrides(write_mixed_mllm_data(folder / "data"), base)


@pytest.mark.parametrize("case", list(VLM_CASES))
def test_paper_preset_on_two_ranks_with_a_vision_language_model(case, mixed_vlm, tmp_path):
    """Under ZeRO-3 a rank whose micro-batch is text-only still gathers the vision tower's
    weights (vision_zero3.py), in the policy and in GRPO's KL reference, or the other rank
    waits forever (the time limit turns a hang into a failure)."""
    preset, sizes, settings = VLM_CASES[case]
    run_dir = launch(tmp_path, preset, sizes, *mixed_vlm)
    check_run(run_dir, settings)
    stage = json.loads((run_dir / "stages/01-joint/stage.json").read_text())
    assert stage["n"] == {"scienceqa": 8, "mmlu_pro": 8}
    assert stage["train"]["items"] == 16
    # a text-only micro-batch met an image one in the same step (the case that hangs unaligned)
    assert "a text-only batch ran the vision tower" in (run_dir / "stages/01-joint/train.log").read_text()
