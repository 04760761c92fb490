"""The DeepSpeed presets through the real stage loop, in one CPU process, run as a user runs
them (`cpt-bench deepspeed=zero3`, no launcher) and under torchrun: every stage must leave a full,
trained Hugging Face checkpoint (under ZeRO-3 the weights live partitioned and must be
gathered on save), later stages must start from it, and ZeRO must not change what is learnt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from cpt_bench.distributed import LAUNCH_VARS

QUICK = ["benchmark.train_size=32", "benchmark.test_size=20", "paradigm.epochs=1", "eval.general=false",
         "logger=none"]


def run(tmp_path: Path, model_cache: Path, name: str, *overrides: str, torchrun: bool = False) -> Path:
    run_dir = tmp_path / name
    exe = Path(sys.executable).with_name("cpt-bench")
    cmd = [str(exe), *QUICK, *overrides, f"model.cache_dir={model_cache}", f"hydra.run.dir={run_dir}"]
    if torchrun:
        cmd = [str(exe.with_name("torchrun")), "--standalone", "--nproc_per_node=1", *cmd]
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS} | {"OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return run_dir


def weights(run_dir: Path, stage: str) -> dict:
    return load_file(str(run_dir / "stages" / stage / "model" / "model.safetensors"))


def assert_moved(after: dict, before: dict) -> None:
    for name, t in before.items():  # (a DeepSpeed save may also write the tied lm_head)
        assert after[name].shape == t.shape, f"{name}: a ZeRO-3 shard was saved, not the gathered weights"
    assert any(not after[n].equal(before[n]) for n in before), "the stage trained"


@pytest.mark.slow
def test_zero3_sequence_saves_full_checkpoints_and_learns_what_plain_training_learns(tmp_path, model_cache,
                                                                                   tiny_base):
    tasks = "order.tasks=[max,sort]"
    zero3 = run(tmp_path, model_cache, "zero3", "deepspeed=zero3", tasks, torchrun=True)
    plain = run(tmp_path, model_cache, "plain", "deepspeed=none", tasks)
    base_w = load_file(str(tiny_base / "model.safetensors"))
    s1, s2 = weights(zero3, "01-max"), weights(zero3, "02-sort")
    assert_moved(s1, base_w)
    assert_moved(s2, s1)  # stage 2 trained on from stage 1's gathered weights
    for name, t in weights(plain, "02-sort").items():
        assert (t - s2[name]).abs().max() < 1e-3, f"{name}: ZeRO-3 learnt something else"
    assert (zero3 / "matrix.csv").read_text() == (plain / "matrix.csv").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("preset,paradigm", [("zero2", ["paradigm=sft"]), ("zero3_offload", ["paradigm=sft"]),
                                             ("zero3", ["paradigm=rft", "paradigm.kl_coef=0.01"])])
def test_preset_stage_saves_a_full_trained_checkpoint(tmp_path, model_cache, tiny_base, preset, paradigm):
    out = run(tmp_path, model_cache, preset, f"deepspeed={preset}", *paradigm, "order.tasks=[max]")
    assert_moved(weights(out, "01-max"), load_file(str(tiny_base / "model.safetensors")))


def test_a_launchers_process_group_is_kept_and_a_plain_run_gets_one_process():
    from cpt_bench.distributed import ensure_process_group_env

    launched = {"RANK": "3", "WORLD_SIZE": "8", "MASTER_ADDR": "node7", "MASTER_PORT": "29500"}
    env = dict(launched)
    assert not ensure_process_group_env(env) and env == launched
    env = {"PATH": "/bin"}
    assert ensure_process_group_env(env)
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["MASTER_ADDR"]) == ("0", "0", "1", "127.0.0.1")
    assert int(env["MASTER_PORT"]) > 0 and env["PATH"] == "/bin"
