"""Pre-emption on a cluster: SLURM signals a job (SIGUSR2) before pre-empting it or before its
time limit; submitit's handler in the controller checkpoints and requeues the job with the
same overrides into the same run directory, where the sequence resumes from its last complete
stage and ends with the matrix an uninterrupted run gives. Re-submitting a finished sweep
returns the stored results instead of failing. Run with Hydra's submitit_local launcher, and
the signal sent by the test itself while the job stands frozen in stage 2's training loop
(cpt_bench.faults: deterministic, where a time limit would race the machine's speed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import freeze_at, run_cli, wait_frozen

pytestmark = pytest.mark.slow

# the job freezes itself at a trainer log event of stage 2 (once: its requeued run goes on), where
# the signal lands inside the training loop (a signal that landed while the trainer was being
# built was once swallowed by library code: the job requeued itself but carried on)
SEQUENCE = ["order.tasks=[max,shift]", "benchmark.train_size=128", "benchmark.test_size=50",
            "paradigm.epochs=2", "logger=none", "seed=0"]


def test_a_signalled_job_is_requeued_resumes_and_matches_an_uninterrupted_run(model_cache, tmp_path):
    sweep = tmp_path / "sweep"
    sweep_cmd = ["-m", "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}", *SEQUENCE,
                 f"model.cache_dir={model_cache}"]
    exe = Path(sys.executable).with_name("cpt-bench")
    once = tmp_path / "frozen"
    proc = subprocess.Popen([str(exe), *sweep_cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **freeze_at("training@2", once)})
    run_dir = sweep / "0"
    deadline = time.time() + 300
    while not once.exists():  # the job reached its fault point
        assert proc.poll() is None and time.time() < deadline, "the sweep ended before the signal"
        time.sleep(0.2)
    # a local job's id is the pid of submitit's job controller, whose child runs the Hydra job
    (job_id,) = [p.name for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]
    (task,) = Path(f"/proc/{job_id}/task/{job_id}/children").read_text().split()
    wait_frozen(int(task), once, proc)
    assert (run_dir / "stages/01-max/stage.json").exists() and not (run_dir / "stages/02-shift/stage.json").exists()
    os.kill(int(task), signal.SIGUSR2)  # as SLURM does before a pre-emption or the time limit
    os.kill(int(task), signal.SIGCONT)  # it handles the signal in stage 2's training loop
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]

    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["stages_completed"] == 2
    job_logs = "".join(p.read_text(errors="replace") for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "Requeued job" in job_logs, job_logs[-2000:]
    log = (run_dir / "cli.log").read_text()
    assert "resuming" in log and "after stage" in log  # the requeued job carried on in the same dir

    straight = tmp_path / "straight"
    res = run_cli(*SEQUENCE, f"model.cache_dir={model_cache}", f"hydra.run.dir={straight}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (run_dir / "matrix.csv").read_text() == (straight / "matrix.csv").read_text()

    # submitting the finished sweep again skips its finished run and returns the stored metric
    record = (run_dir / "cli.log").read_bytes()
    res = run_cli(*sweep_cmd, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    job_logs = "".join(p.read_text(errors="replace") for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "already holds this finished run" in job_logs
    assert (run_dir / "cli.log").read_bytes() == record  # skipped, its record left as it was
