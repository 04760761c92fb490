"""Fault injection: a real `cpt-bench` process killed with SIGKILL at each point where a run
can die; rerunning the same command resumes and ends with exactly the results of a run that
was never interrupted (fixed seed, one thread)."""

from __future__ import annotations

import signal

import pytest

from cpt_bench import faults
from cpt_bench.faults import ENV, ONCE_ENV, POINTS, SIGNAL_ENV
from cpt_bench.outputs.rundir import METRICS_JSON, RUN_JSON, read_json

from conftest import run_cli

# SFT with RIF before each stage, so that every point of a stage is passed through
FAULTY = ["paradigm=sft", "order.tasks=[max,shift]", "benchmark.train_size=48", "benchmark.test_size=20",
          "paradigm.epochs=2", "filter=rif", "filter.num_rollouts=4", "logger=none", "threads=1"]
# the straight run has two inner points a stage (eval.inner_points), and so has the run killed between
# two of them; every other run goes without and must still end with the straight run's matrix, metrics
# and flips: inner points leave them exactly as they are
INNER = ["eval.inner_points=2"]


def run(run_dir, model_cache, *overrides: str, **env):
    return run_cli(*FAULTY, *overrides, f"model.cache_dir={model_cache}", f"hydra.run.dir={run_dir}", env=env)


@pytest.fixture(scope="module")
def straight(model_cache, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    res = run(run_dir, model_cache, *INNER)
    assert res.returncode == 0, res.stderr[-3000:]
    return run_dir


def comparable_metrics(run_dir) -> dict:
    return read_json(run_dir / METRICS_JSON)


# each point in stage 2, so that the resumed run also carries stage 1 over from disk; two of
# them with checkpoint.keep=last|none, which must keep what resume needs until the end; a+b: killed
# at a, then, rerun, at b (one run fewer than two cases)
KILLS = [("rif_rollouts@2", "all", ["01-max", "02-shift"]), ("training@2", "all", ["01-max", "02-shift"]),
         ("checkpoint_save@2", "all", ["01-max", "02-shift"]), ("evaluation@2", "none", []),
         ("result_files@2", "last", ["02-shift"]), ("inner_point@2+before_finished", "all", ["01-max", "02-shift"])]
assert {p.split("@")[0] for k, _, _ in KILLS for p in k.split("+")} == set(POINTS)


@pytest.mark.slow
@pytest.mark.parametrize("kill_at,keep,kept", KILLS)
def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_results(kill_at, keep, kept, straight, model_cache,
                                                                     tmp_path):
    run_dir = tmp_path / "run"
    stage2 = run_dir / "stages" / "02-shift"
    inner = kill_at.startswith("inner_point")
    extra = [f"checkpoint.keep={keep}", *(INNER if inner else [])]
    for point in kill_at.split("+"):
        killed = run(run_dir, model_cache, *extra, **{ENV: point})
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        assert read_json(run_dir / RUN_JSON)["status"] == "running"  # no handler ran: it just died
        if point.startswith("inner_point"):  # between stage 2's two inner points: the first in curves.csv
            assert [line.split(",")[3] for line in (run_dir / "curves.csv").read_text().splitlines()
                    if line.startswith("2,shift,inner,")] == ["1"] * 5
            assert [p.name for p in (stage2 / "snapshots").iterdir()] == ["step-000002"]
    if kill_at.startswith("checkpoint_save"):
        # the weights are written but not the tokenizer: nothing looks like a complete checkpoint
        assert (stage2 / "model.partial" / "model.safetensors").exists()
        assert not (stage2 / "model").exists()
    if kill_at.startswith("evaluation"):  # stage 2 unfinished: stage 1's checkpoint is where resume starts
        assert (run_dir / "stages" / "01-max" / "model" / "model.safetensors").exists()
    if kill_at.startswith("result_files"):
        assert (stage2 / "stage.json").exists()  # stage 2 is complete; the run's files lag behind

    resumed = run(run_dir, model_cache, *extra)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    done = 1 if kill_at.endswith("@2") and not kill_at.startswith("result_files") else 2
    assert f"after stage {done}" in resumed.stdout + resumed.stderr  # the completed stages were kept
    assert (run_dir / "matrix.csv").read_text() == (straight / "matrix.csv").read_text()
    assert (run_dir / "flips.csv").read_text() == (straight / "flips.csv").read_text()  # recounted from disk
    if inner:
        assert (run_dir / "curves.csv").read_text() == (straight / "curves.csv").read_text()
    else:
        assert not (run_dir / "curves.csv").exists()
    assert comparable_metrics(run_dir) == comparable_metrics(straight)
    assert read_json(run_dir / RUN_JSON)["status"] == "finished"
    assert not list(run_dir.rglob("model.partial")) and not list(run_dir.rglob(".*.tmp"))
    assert not list(run_dir.rglob("snapshots"))
    assert sorted(p.parent.name for p in run_dir.glob("stages/*/model")) == kept


@pytest.mark.slow
def test_each_stage_records_the_disk_it_used(straight):
    for stage in ("01-max", "02-shift"):
        weights = (straight / "stages" / stage / "model" / "model.safetensors").stat().st_size
        assert read_json(straight / "stages" / stage / "stage.json")["disk_bytes"] > weights


def test_a_fault_fires_at_its_point_and_stage_with_its_signal_once_across_processes(tmp_path, monkeypatch):
    """SIGSTOP (here SIGUSR1, caught) instead of SIGKILL; with a once-file, a second process
    reaching the same point (a requeued job, which inherits the environment) goes on."""
    fired = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: fired.append(faults._stage))
    try:
        monkeypatch.setenv(ENV, "training@2")
        monkeypatch.setenv(SIGNAL_ENV, "SIGUSR1")
        monkeypatch.setenv(ONCE_ENV, str(tmp_path / "fired"))
        faults.enter_stage(1)
        faults.reached("training")  # another stage
        faults.enter_stage(2)
        faults.reached("evaluation")  # another point
        assert fired == [] and not (tmp_path / "fired").exists()
        faults.reached("training")
        faults.reached("training")  # once: the file says it fired
        assert fired == [2] and (tmp_path / "fired").exists()
    finally:
        signal.signal(signal.SIGUSR1, previous)
        faults.enter_stage(None)
