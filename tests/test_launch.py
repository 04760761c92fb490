"""launcher=torchrun: a stage's steps as two-rank torchrun jobs over gloo, the CLI process the
controller. Compared with the same sequences run in one process (launcher=local)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cpt_bench.continual import Run
from cpt_bench.launch import TorchrunSteps, merge_eval_shards
from cpt_bench.prompts import PromptStyle
from cpt_bench.steps import LocalSteps
from cpt_bench.worker import Worker

from conftest import QUICK, RFT_COT_RIF, cli_run, run_cli
from conftest import compose_config as composed

pytestmark = pytest.mark.slow  # every test here builds a model or runs the CLI

# SFT: the same global batch as the local run (16 = 8 per rank x 2); GRPO: 16 prompts x 8 per step
TWO_RANKS = ["launcher=torchrun", "launcher.nproc_per_node=2"]


def matrix(run_dir) -> dict[tuple[int, str], float]:
    with open(run_dir / "matrix.csv", newline="") as f:
        return {(int(r["stage"]), r["eval_task"]): float(r["accuracy"]) for r in csv.DictReader(f)}


def controller_only(run_dir) -> None:
    """The run directory was written by the controller alone: one run.json, no rank's Hydra dir."""
    assert len(list(run_dir.rglob("run.json"))) == 1
    assert [p.parent for p in run_dir.rglob(".hydra")] == [run_dir]
    assert len(list(run_dir.rglob("matrix.csv"))) == 1


def two_ranks_ran(log_path) -> bool:
    text = log_path.read_text()
    return "on rank 0 of 2" in text and "on rank 1 of 2" in text


@pytest.fixture(scope="module")
def torchrun_sft(model_cache, tmp_path_factory):
    return cli_run(tmp_path_factory, "torchrun-sft", *QUICK, *TWO_RANKS, "paradigm.per_device_batch_size=8",
                   model_cache=model_cache)[0]


def test_two_rank_sft_sequence_matches_the_single_process_run(torchrun_sft, quick_run):
    local, launched = matrix(quick_run[0]), matrix(torchrun_sft)
    assert local.keys() == launched.keys()
    # the base row is sharded greedy evaluation of the same model: identical
    assert {k: v for k, v in launched.items() if k[0] == 0} == {k: v for k, v in local.items() if k[0] == 0}
    # trained rows: DDP averages two per-rank losses where one process averages one batch (float
    # differences); measured identical on the development machine, allowed 3 items of 50 here
    assert max(abs(launched[k] - local[k]) for k in local) <= 0.06
    for stage in ("00-base", "01-max", "02-shift"):
        assert two_ranks_ran(torchrun_sft / "stages" / stage / "eval" / "evaluate.log")
    assert two_ranks_ran(torchrun_sft / "stages/01-max/train.log")


def test_the_controller_alone_writes_the_run_directory(torchrun_sft):
    controller_only(torchrun_sft)
    runs = list((torchrun_sft / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "one W&B run per sequence, from the controller"
    info = json.loads((torchrun_sft / "run.json").read_text())
    assert info["status"] == "finished" and info["config"]["launcher"]["nproc_per_node"] == 2
    # the eval shards were merged into the files one process writes, in item order
    records = [json.loads(x) for x in (torchrun_sft / "stages/01-max/eval/max.jsonl").read_text().splitlines()]
    assert len(records) == 50 and "index" not in records[0]
    assert not list(torchrun_sft.rglob("shard-*.jsonl"))
    # training logs streamed to the controller, in the same format as a single process's
    rows = [json.loads(x) for x in (torchrun_sft / "stages/01-max/train_log.jsonl").read_text().splitlines()]
    assert rows and all("max_steps" not in r for r in rows) and rows[-1]["step"] == 48
    stage = json.loads((torchrun_sft / "stages/01-max/stage.json").read_text())
    assert stage["train"]["optimizer_steps"] == 48 and stage["diagnostics"]["param_drift"] > 0


def test_two_rank_grpo_sequence_with_cot_and_rif(model_cache, tmp_path, rft_cot_rif_run):
    run_dir = tmp_path / "run"
    res = run_cli(*RFT_COT_RIF, *TWO_RANKS, "paradigm.per_device_batch_size=64", f"model.cache_dir={model_cache}",
                  f"hydra.run.dir={run_dir}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "16 prompts x 8 completions per optimizer step" in res.stdout + res.stderr
    local, launched = matrix(rft_cot_rif_run[0]), matrix(run_dir)
    assert {k: v for k, v in launched.items() if k[0] == 0} == {k: v for k, v in local.items() if k[0] == 0}
    # rollouts are sampled per rank with their own seeds, so trained rows differ by sampling;
    # at this learning rate and size a stage moves few of the 30 items
    assert max(abs(launched[k] - local[k]) for k in local) <= 0.2
    controller_only(run_dir)
    for name in ("01-max", "02-shift"):
        stage = json.loads((run_dir / f"stages/{name}/stage.json").read_text())
        assert stage["filter"]["items"] == 64 and stage["train"]["items"] == stage["filter"]["kept"]
        assert stage["train"]["generated_tokens"] > 0 and stage["diagnostics"]["kl"] >= 0
        assert two_ranks_ran(run_dir / f"stages/{name}/filter.log")
        assert two_ranks_ran(run_dir / f"stages/{name}/train.log")
    filtered = [json.loads(x) for x in (run_dir / "stages/01-max/filter.jsonl").read_text().splitlines()]
    assert len(filtered) == 64 and all(len(r["scores"]) == 4 for r in filtered)


def test_sharded_evaluation_equals_single_process_evaluation(model_cache, tmp_path, monkeypatch):
    """Each rank takes the items i % world == rank; merged, they are the single process's records."""
    cfg = composed("order.tasks=[max,shift]", "benchmark.test_size=30", f"model.cache_dir={model_cache}")
    run = Run(cfg, tmp_path / "run")
    run.setup()
    local = run.steps
    assert isinstance(local, LocalSteps)
    local.evaluate(tmp_path / "local")
    config = tmp_path / "config.yaml"
    config.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"dir": str(tmp_path / "sharded"), "model_path": run.base_path, "seed": 0}))
    for rank in (0, 1):  # evaluation needs no process group: the ranks can run one after the other
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        Worker(str(config), str(spec)).evaluate()
    merged = merge_eval_shards(tmp_path / "sharded", run.test_sets)
    for task in run.test_sets:
        single = [json.loads(x) for x in (tmp_path / "local" / f"{task}.jsonl").read_text().splitlines()]
        assert merged[task] == single, task
    run.tracker.finish([], None, {}, True)


def test_torchrun_command_lines(model_cache, tmp_path, monkeypatch):
    cfg = composed("launcher=torchrun", "launcher.nproc_per_node=8", f"model.cache_dir={model_cache}")
    steps = TorchrunSteps(cfg, benchmark=None, style=PromptStyle(False, ""), test_sets={}, paradigm=None,
                          run_dir=tmp_path)
    cmd = steps.command("train", tmp_path / "spec.json")
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--nproc_per_node=8", "--nnodes=1", "--standalone"]
    assert cmd[-4:] == ["cpt_bench.worker", "train", str(tmp_path / ".cpt/config.yaml"), str(tmp_path / "spec.json")]
    cfg = composed("launcher=torchrun", "launcher.nproc_per_node=8", "launcher.nnodes=2", "launcher.srun=true",
                   f"model.cache_dir={model_cache}")
    monkeypatch.setenv("MASTER_ADDR", "node001")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("RANK", "3")  # an outer launcher's variables never reach the workers
    steps = TorchrunSteps(cfg, benchmark=None, style=None, test_sets={}, paradigm=None, run_dir=tmp_path)
    cmd = steps.command("evaluate", tmp_path / "spec.json")
    assert cmd[:5] == ["srun", "--overlap", "--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    assert "--rdzv_endpoint=node001:29500" in cmd and "--rdzv_id=4242" in cmd and "--standalone" not in cmd
    env = steps.child_env()
    assert "RANK" not in env and env["WANDB_MODE"] == "disabled"
    assert env["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 8))


def test_two_rank_zero3_stage_leaves_a_full_trained_checkpoint(model_cache, tmp_path):
    """Under ZeRO-3 each rank holds a slice of the weights; the trainer gathers them on save."""
    from safetensors.torch import load_file

    run_dir = tmp_path / "run"
    res = run_cli(*TWO_RANKS, "deepspeed=zero3", "order.tasks=[max]", "benchmark.train_size=32",
                  "benchmark.test_size=20", "paradigm.epochs=1", "paradigm.per_device_batch_size=8", "logger=none",
                  f"model.cache_dir={model_cache}", f"hydra.run.dir={run_dir}", timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert two_ranks_ran(run_dir / "stages/01-max/train.log")
    base_dir = json.loads((run_dir / "run.json").read_text())["base_model"]
    base = {k: v for f in sorted(Path(base_dir).glob("*.safetensors")) for k, v in load_file(f).items()}
    stage = load_file(run_dir / "stages/01-max/model/model.safetensors")
    assert stage.keys() == base.keys()
    assert all(stage[k].shape == base[k].shape and stage[k].numel() > 0 for k in base)
    assert any(not (stage[k].float() == base[k].float()).all() for k in base), "the stage trained"
    stage_json = json.loads((run_dir / "stages/01-max/stage.json").read_text())
    assert stage_json["train"]["optimizer_steps"] == 2 and stage_json["diagnostics"]["param_drift"] > 0


def test_mixed_image_and_text_batches_train_under_two_rank_zero3(tmp_path):
    """The joint schedule mixes tasks: here ScienceQA (every item has an image) with MMLU-Pro
    (text only), one item per rank per step. Under ZeRO-3 a rank whose micro-batch is text-only
    must still take part in gathering the vision tower's weights, or the other rank waits
    forever (the test's time limit turns a hang into a failure)."""
    from PIL import Image

    from cpt_bench.tasks.mllm import OPTION_LETTER

    from tiny_vlm import build_tiny_vlm

    base = build_tiny_vlm(tmp_path / "vlm", texts=["What colour is the square? A. red B. blue"] * 4)
    data = tmp_path / "data"
    question = f"What colour is the square?\nA. red\nB. blue\n{OPTION_LETTER}"
    for split in ("train", "test"):
        image_items, text_items = [], []
        for i in range(8):
            answer = "AB"[i % 2]
            rel = f"ScienceQA/{split}_images/{i}.png"
            (data / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (56, 56), (220, 30, 30) if answer == "A" else (30, 30, 220)).save(data / rel)
            image_items.append({"messages": [{"role": "user", "content": "<image>\n" + question},
                                             {"role": "assistant", "content": answer}], "images": [rel]})
            text_items.append({"messages": [{"role": "user", "content": f"Is {i} even?\nA. yes\nB. no\n"
                                                                        f"{OPTION_LETTER}"},
                                            {"role": "assistant", "content": "AB"[i % 2]}]})
        (data / f"ScienceQA_{split}.json").write_text(json.dumps(image_items))
        (data / f"mmlu_{split}.json").write_text(json.dumps(text_items))
    run_dir = tmp_path / "run"
    res = run_cli("benchmark=mllm_cl7", f"benchmark.data_dir={data}", "benchmark.tasks=[scienceqa,mmlu_pro]",
                  "benchmark.general=[]", f"benchmark.sources.mmlu_pro.train.path={data}/mmlu_train.json",
                  f"benchmark.sources.mmlu_pro.test.path={data}/mmlu_test.json", "schedule=joint",
                  f"model.path={base}", "model.builtin=null", *TWO_RANKS, "deepspeed=zero3",
                  "paradigm.per_device_batch_size=1", "paradigm.epochs=1", "paradigm.max_length=256",
                  "eval.max_new_tokens=4", "logger=none", f"hydra.run.dir={run_dir}", timeout=420)
    assert res.returncode == 0, res.stderr[-3000:]
    stage = json.loads((run_dir / "stages/01-joint/stage.json").read_text())
    assert stage["train"]["items"] == 16 and stage["train"]["optimizer_steps"] == 8
    assert stage["n"] == {"scienceqa": 8, "mmlu_pro": 8}
