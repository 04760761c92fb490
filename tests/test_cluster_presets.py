"""Cluster launch presets: hydra/launcher=slurm and joblib compose, `cpt-bench-sbatch` renders
the sbatch script submitit would submit (nothing is submitted), the `make paper-*` targets, the
per-job thread count under joblib, and a real two-job joblib sweep."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cpt_bench import slurm

from conftest import REPO, compose_config, run_cli

PAPER_SFT = ["+experiment=paper_sft", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
             "hydra.launcher.account=lab"]
VENV = Path(sys.executable).parent.parent  # the environment running the tests (as `make` knows it)


def make(*args: str) -> subprocess.CompletedProcess:
    """`make` in the repo with this environment as its venv, never (re)installing it."""
    # ARGS= first: under `make test ARGS=...` the outer make's ARGS reaches this one (its environment,
    # MAKEFLAGS); a later ARGS=... in `args` still wins
    cmd = ["make", "--no-print-directory", "-C", str(REPO), f"VENV={VENV}", "-o", f"{VENV}/.installed-stamp",
           "ARGS=", *args]
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_slurm_preset_composes_one_task_per_node_with_requeue():
    launcher = compose_config("hydra/launcher=slurm", hydra=True).hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (1, 8, 1)
    assert launcher.timeout_min == 2880 and launcher.signal_delay_s == 300 and launcher.max_num_timeout == 20
    assert launcher.additional_parameters == {"requeue": True}
    assert launcher.partition is None and launcher.account is None and launcher.qos is None
    # srun steps inside the job keep its CPUs (SLURM >= 22.05 does not pass --cpus-per-task on)
    assert "export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK" in launcher.setup
    cluster = compose_config("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.qos=high",
                             "hydra.launcher.gpus_per_node=4", hydra=True).hydra.launcher
    assert (cluster.partition, cluster.qos, cluster.gpus_per_node) == ("gpu", "high", 4)


def test_joblib_launcher_composes_with_n_jobs():
    launcher = compose_config("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", hydra=True).hydra.launcher
    assert "joblib" in launcher._target_ and launcher.n_jobs == 2


def test_launcher_presets_ship_in_the_package():
    """Every YAML under conf/ (hydra/launcher/ is two levels down) matches a package-data glob."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    globs = data["tool"]["setuptools"]["package-data"]["cpt_bench.conf"]
    files = [p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml")]
    assert "hydra/launcher/slurm.yaml" in files
    assert all(any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in globs) for f in files)
    assert data["project"]["scripts"]["cpt-bench-sbatch"] == "cpt_bench.slurm:main"


def test_sbatch_script_of_the_paper_sft_preset(tmp_path):
    script, jobs, _ = slurm.sbatch([*PAPER_SFT, f"hydra.sweep.dir={tmp_path}"])
    lines = script.splitlines()
    for line in ["#SBATCH --gpus-per-node=8", "#SBATCH --time=2880", "#SBATCH --requeue",
                 "#SBATCH --signal=USR2@300", "#SBATCH --partition=gpu", "#SBATCH --account=lab",
                 "#SBATCH --ntasks-per-node=1", "#SBATCH --nodes=1"]:
        assert line in lines, script
    assert len(jobs) == 1 and not any(line.startswith("#SBATCH --array") for line in lines)  # seed 0 alone
    assert f"-m submitit.core._submit {tmp_path}/.submitit/%j" in script
    assert not list(tmp_path.iterdir())  # rendered, nothing written or submitted


@pytest.mark.slow  # over a second of CPU: the fast tier stays the one-minute loop
def test_sbatch_sweeps_become_one_array(tmp_path):
    script, jobs, submissions = slurm.sbatch(["-m", "+experiment=paper_rft_no_kl,paper_rft_no_cot,paper_rif_rft",
                                 "hydra/launcher=slurm", "hydra.launcher.timeout_min=60",
                                 "hydra.launcher.array_parallelism=2", f"hydra.sweep.dir={tmp_path}"])
    assert sorted(j[0] for j in jobs) == ["+experiment=paper_rft_no_cot", "+experiment=paper_rft_no_kl",
                                          "+experiment=paper_rif_rft"]
    assert submissions == 1 and "#SBATCH --array=0-2%2" in script and "#SBATCH --time=60" in script
    # the preset's hydra.sweeper.params and the command line multiply; the command line wins a key;
    # hydra.sweeper.max_batch_size splits the sweep into several submissions, as Hydra does
    split = slurm.sbatch(["+experiment=compare", "hydra/launcher=slurm", "seed=0,1", "hydra.sweeper.max_batch_size=3"])
    assert (len(split.jobs), split.submissions) == (2 * 2 * 2, 3) and "#SBATCH --array=0-2%3" in split.script


def test_sbatch_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        slurm.main(["seed=0,1"])
    assert exc.value.code == 2
    assert "add hydra/launcher=slurm" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        slurm.main(["hydra/launcher=slurm", "hydra.launcher.bogus=1"])
    err = capsys.readouterr().err
    assert err.startswith("cpt-bench-sbatch: error:") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("target", "sweep"), [
    ("paper-sft", "+experiment=paper_sft"),
    ("paper-rft", "+experiment=paper_rft"),
    ("paper-joint", "+experiment=paper_sft schedule=joint"),
    ("paper-ablations", "+experiment=paper_rft_no_kl,paper_rft_no_cot,paper_rif_rft"),
])
def test_paper_targets_print_their_command(target, sweep):
    """`make -n`: the command each target prints and runs (no Python is started)."""
    out = make("-n", target, "PARTITION=gpu", "GPUS=4", "TIME=60").stdout
    cmd = f"{VENV}/bin/cpt-bench -m {sweep} hydra/launcher=slurm launcher=torchrun launcher.nproc_per_node=4"
    assert cmd in out
    for part in ["launcher.nnodes=1", "hydra.launcher.gpus_per_node=4", "hydra.launcher.timeout_min=60",
                 "hydra.launcher.partition=gpu", f"hydra.sweep.dir=multirun/{target.replace('-', '_')}"]:
        assert part in out
    assert "hydra.launcher.account" not in out and "benchmark.data_dir" not in out  # empty = left out
    assert f"{VENV}/bin/cpt-bench-sbatch {sweep} " in make("-n", target, "DRY=1").stdout


@pytest.mark.slow
def test_make_paper_sft_dry_prints_the_sbatch_script():
    res = make("paper-sft", "DRY=1", "PARTITION=gpu")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith(f"{VENV}/bin/cpt-bench-sbatch +experiment=paper_sft")  # the command, echoed
    for line in ["#!/bin/bash", "#SBATCH --gpus-per-node=8", "#SBATCH --time=2880", "#SBATCH --requeue",
                 "#SBATCH --partition=gpu", "#SBATCH --signal=USR2@300"]:
        assert line in res.stdout.splitlines()
    assert "#SBATCH --account" not in res.stdout
    assert "# preflight of the first job" in res.stdout and "training step:" in res.stdout  # below the script


@pytest.fixture
def hydra_config():
    """Set HydraConfig for a direct call of the CLI's helpers; restored afterwards."""
    from hydra.core.hydra_config import HydraConfig

    old = HydraConfig.instance().cfg

    def set_config(*overrides: str):
        cfg = compose_config(*overrides, hydra=True)
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield set_config
    HydraConfig.instance().cfg = old


@pytest.mark.parametrize(("overrides", "threads"), [
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], 4),
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=3"], 2),
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=16"], 1),
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=-1"], 1),  # -1 = a job per core
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=-7"], 4),  # 8 + 1 - 7 = 2 jobs
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "threads=3"], 3),  # set by the user: kept
    ([], None),  # not under joblib: torch's default
])
def test_threads_per_joblib_job(hydra_config, monkeypatch, overrides, threads):
    import joblib

    from cpt_bench.cli import _joblib_threads

    monkeypatch.setattr(joblib, "cpu_count", lambda *a, **k: 8)
    cfg = hydra_config(*overrides)
    _joblib_threads(cfg)
    assert cfg.threads == threads


@pytest.mark.slow
def test_joblib_sweep_runs_two_sequences_side_by_side(model_cache, tmp_path):
    import joblib

    sweep = tmp_path / "sweep"
    res = run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1", "order.tasks=[max]",
                  "benchmark.general=[last]", "benchmark.train_size=32", "benchmark.test_size=20",
                  "paradigm.epochs=1", "logger=none", f"model.cache_dir={model_cache}", f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stderr[-3000:]
    runs = sorted(p for p in sweep.iterdir() if (p / "run.json").exists())
    assert [p.name for p in runs] == ["0", "1"]
    threads = max(1, joblib.cpu_count() // 2)  # 1 on the 2-core CI machine
    for run_dir in runs:
        info = json.loads((run_dir / "run.json").read_text())
        assert info["status"] == "finished" and (run_dir / "matrix.csv").exists()
        assert info["config"]["threads"] == threads  # set by cli.py for the joblib job
        assert info["hardware"]["torch_threads"] == threads
    assert sorted(json.loads((p / "run.json").read_text())["seed"] for p in runs) == [0, 1]
    assert (sweep / "report.md").exists()
