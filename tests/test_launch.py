"""launcher=torchrun: a stage's steps as two-rank torchrun jobs over gloo, the CLI process the
controller. Compared with the same sequences run in one process (launcher=local)."""

from __future__ import annotations

import csv
import json
import os

import pytest

from cpt_bench.model.prompts import PromptStyle
from cpt_bench.outputs.curves import read_curves_csv
from cpt_bench.run.controller import Run
from cpt_bench.run.launch import TorchrunSteps, merge_eval_shards
from cpt_bench.run.rank import RankSteps
from cpt_bench.run.steps import LocalSteps
from cpt_bench.run.wire import POINT_SECONDS, EvalSpec

from conftest import QUICK, cli_run, worker_config
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
    """With EWC at strength 0 (its penalty computed on both ranks, its Fisher on rank 0 after each
    stage and read back by the next): exactly no penalty, so the run still matches the local one.
    With two inner points a stage, as quick_run: saved on the ranks, evaluated in the stage's own
    evaluate launch."""
    return cli_run(tmp_path_factory, "torchrun-sft", *QUICK, *TWO_RANKS, "paradigm.per_device_batch_size=8",
                   "cl=ewc", "cl.strength=0", "eval.inner_points=2", model_cache=model_cache)[0]


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
    assert (torchrun_sft / "stages/01-max/ewc/fisher.safetensors").exists()  # rank 0's, read by stage 2's ranks
    ewc = json.loads((torchrun_sft / "stages/02-shift/stage.json").read_text())["diagnostics"]
    assert ewc["cl/ewc_penalty"] == 0.0 and ewc["cl/fisher_mean"] > 0
    # the penalty before its strength: computed on both ranks, from the Fisher rank 0 saved, the same on each
    assert ewc["cl/ewc_penalty_unscaled"] > 0 and ewc["cl/ewc_penalty_unscaled_rank_spread"] == 0.0
    assert two_ranks_ran(torchrun_sft / "stages/01-max/train.log")
    # rank 0 measures the drift in both directions, the base's draws cached where one process keeps them
    diag = json.loads((torchrun_sft / "stages/02-shift/stage.json").read_text())["diagnostics"]
    assert diag["forward_kl_task"] > 0 and diag["forward_kl_task_se"] > 0 and diag["kl_to_base_general"] > 0
    draws = [sorted(p.name for p in (run / "stages/00-base/forward_kl").glob("*.json")) for run in (torchrun_sft,
                                                                                                 quick_run[0])]
    assert len(draws[0]) == 3 and draws[0] == draws[1]  # the same prompt sets and settings: the same keys


def test_the_controller_alone_writes_the_run_directory(torchrun_sft, quick_run):
    controller_only(torchrun_sft)
    runs = list((torchrun_sft / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "one W&B run per sequence, from the controller"
    info = json.loads((torchrun_sft / "run.json").read_text())
    assert info["status"] == "finished" and info["config"]["launcher"]["nproc_per_node"] == 2
    # the eval shards were merged into the files one process writes, in item order
    records = [json.loads(x) for x in (torchrun_sft / "stages/01-max/eval/max.jsonl").read_text().splitlines()]
    assert len(records) == 50 and "index" not in records[0]
    assert (torchrun_sft / "flips.csv").exists()  # every stage's merged records pair up item by item
    assert not list(torchrun_sft.rglob("shard-*.json"))
    # the inner points: evaluated by both ranks in the stage's evaluate launch, as in one process
    launched, local = (read_curves_csv(run / "curves.csv") for run in (torchrun_sft, quick_run[0]))
    assert [(r.stage, r.step, r.eval_task) for r in launched] == [(r.stage, r.step, r.eval_task) for r in local]
    assert max(abs(a.accuracy - b.accuracy) for a, b in zip(launched, local)) <= 0.06  # as the matrix
    assert len((torchrun_sft / "stages/02-shift/inner/step-000032/shift.jsonl").read_text().splitlines()) == 50
    assert not list(torchrun_sft.rglob("snapshots")) and not list(torchrun_sft.rglob(POINT_SECONDS))
    # training logs streamed to the controller, in the same format as a single process's
    rows = [json.loads(x) for x in (torchrun_sft / "stages/01-max/train_log.jsonl").read_text().splitlines()]
    assert rows and all("max_steps" not in r for r in rows) and rows[-1]["step"] == 48
    stage = json.loads((torchrun_sft / "stages/01-max/stage.json").read_text())
    assert stage["train"]["optimizer_steps"] == 48 and stage["diagnostics"]["param_drift"] > 0


def test_sharded_evaluation_equals_single_process_evaluation(model_cache, tmp_path, monkeypatch):
    """Each rank takes the items i % world == rank; merged, they are the single process's records."""
    cfg = composed("order.tasks=[max,shift]", "benchmark.test_size=30", f"model.cache_dir={model_cache}")
    run = Run(cfg, tmp_path / "run")
    run.setup()
    local = run.steps
    assert isinstance(local, LocalSteps)
    local.evaluate(tmp_path / "local")
    resolved = worker_config(cfg, tmp_path)  # what the worker reads
    spec = EvalSpec(dir=str(tmp_path / "sharded"), model_path=run.base_path, seed=0)
    for rank in (0, 1):  # evaluation needs no process group: the ranks can run one after the other
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        RankSteps(resolved, spec).evaluate()
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
    config, spec = str(tmp_path / ".cpt/config.yaml"), str(tmp_path / "spec.json")
    assert cmd[-4:] == ["cpt_bench.run.worker", "train", config, spec]
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
    assert env["OMP_NUM_THREADS"] == str(max(1, len(os.sched_getaffinity(0)) // 8))
