"""The controller's hold on what it starts and on its run directory, tried as a user meets them:
a `kill -9` of a `launcher=torchrun` controller mid-training leaves no worker behind, and a
second `cpt-bench` on a live run directory is refused in one line, while a lock left by a
killed controller never blocks the resume. (A SLURM requeue into the same run directory,
after the job's first controller ended, is test_requeue.py's run: it takes the same lock.)"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cpt_bench.run.launch import rank_threads, rendezvous
from cpt_bench.run.runlock import RunDirLock

from conftest import compose_config, freeze_at, run_cli, wait_frozen

CLI = str(Path(sys.executable).with_name("cpt-bench"))


def processes_with(text: str) -> list[int]:
    """The pids whose command line mentions `text` (this run's config path, say)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path} appeared"
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_killed_torchrun_controller_takes_its_workers_with_it(model_cache, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([CLI, "launcher=torchrun", "launcher.nproc_per_node=2", "order.tasks=[max]",
                             "benchmark.train_size=64", "benchmark.test_size=10", "paradigm.max_steps=2000",
                             "paradigm.per_device_batch_size=2", "paradigm.logging_steps=1", "eval.general=false",
                             "logger=none", f"model.cache_dir={model_cache}", f"hydra.run.dir={run_dir}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = run_dir / "stages/01-max/train_log.jsonl"
    wait_for(log, proc)
    while not log.read_text().strip():  # the ranks are in the training loop
        assert proc.poll() is None
        time.sleep(0.2)
    config = str(run_dir / ".cpt" / "config.yaml")
    assert len(processes_with(config)) == 3  # torchrun and its two ranks
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    while (left := processes_with(config)) and time.time() < deadline:
        time.sleep(0.2)
    assert not left, f"workers outlived their controller: {left}"
    assert not (run_dir / "stages/01-max/model").exists() and not (run_dir / "stages/01-max/result.json").exists()


@pytest.mark.slow
def test_one_controller_per_run_directory_and_a_killed_ones_lock_does_not_block_the_resume(model_cache, tmp_path):
    run_dir = tmp_path / "run"
    args = ["order.tasks=[max]", "benchmark.train_size=64", "benchmark.test_size=20", "paradigm.epochs=2",
            "eval.general=false", "logger=none", f"model.cache_dir={model_cache}", f"hydra.run.dir={run_dir}"]
    once = tmp_path / "frozen"  # the first controller freezes in stage 1's training loop, holding the directory
    first = subprocess.Popen([CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, **freeze_at("training@1", once)})
    wait_frozen(first.pid, once, first)
    second = run_cli(*args, timeout=120)
    assert first.poll() is None, "the first controller must still hold the directory"
    assert second.returncode == 2
    errors = [line for line in second.stderr.splitlines() if line.startswith("cpt-bench: error")]
    assert len(errors) == 1, second.stderr[-2000:]
    assert errors[0].startswith(f"cpt-bench: error: {run_dir} is in use by another cpt-bench controller "
                                f"(pid {first.pid} on {socket.gethostname()}, since "), errors[0]
    assert "stage 0/" not in second.stderr  # refused before anything ran
    os.kill(first.pid, signal.SIGKILL)  # no handler runs: the lock file and the holder's note stay
    first.wait()
    assert (run_dir / ".cpt/controller.lock").exists()
    resumed = run_cli(*args, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (run_dir / "matrix.csv").exists() and not (run_dir / ".cpt/controller.json").exists()


def test_the_lock_is_held_and_released(tmp_path):
    with RunDirLock(tmp_path) as held:
        assert f"pid {os.getpid()} on {socket.gethostname()}" in held.holder()
        probe = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                                "from cpt_bench.run.runlock import RunDirLock\n"
                                "try:\n    RunDirLock(Path(sys.argv[1])).__enter__()\n"
                                "except Exception as e:\n    print(e)", str(tmp_path)],
                               capture_output=True, text=True)
        assert "is in use by another cpt-bench controller" in probe.stdout
    with RunDirLock(tmp_path):  # released on exit: the same directory can be held again
        pass


@pytest.mark.slow  # over a second of CPU: the fast tier stays the one-minute loop
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_child_is_signalled_when_its_parent_dies(tmp_path):
    """die_with_parent in a grandchild whose parent is SIGKILLed: the kernel sends it SIGTERM."""
    marker = tmp_path / "child.pid"
    code = ("import os, subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
            " preexec_fn=__import__('cpt_bench.run.launch', fromlist=['x'])._child_setup(os.getpid()))\n"
            f"open({str(marker)!r}, 'w').write(str(child.pid))\n"
            "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 30
    while not marker.exists() or not marker.read_text():
        assert time.time() < deadline
        time.sleep(0.1)
    child = int(marker.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while Path(f"/proc/{child}").exists() and time.time() < deadline:
        status = Path(f"/proc/{child}/status").read_text() if Path(f"/proc/{child}/status").exists() else ""
        if "State:\tZ" in status:  # ended, waiting for init to reap it
            break
        time.sleep(0.1)
    status = Path(f"/proc/{child}/status").read_text() if Path(f"/proc/{child}/status").exists() else "gone"
    assert status == "gone" or "State:\tZ" in status, status


def test_threads_per_rank_come_from_the_jobs_cpus():
    assert rank_threads(None, 8, cpus=16) == 2  # 16 CPUs of this job (its affinity), 8 ranks
    assert rank_threads(None, 8, cpus=4) == 1
    assert rank_threads(3, 8, cpus=16) == 3  # `threads` wins


def test_multi_node_without_a_rendezvous_is_refused_when_the_run_is_planned(model_cache, monkeypatch):
    from cpt_bench.errors import ConfigError
    from cpt_bench.run.plan import plan

    for var in ("MASTER_ADDR", "SLURM_JOB_NODELIST"):
        monkeypatch.delenv(var, raising=False)
    cfg = compose_config("launcher=torchrun", "launcher.nproc_per_node=2", "launcher.nnodes=2",
                         f"model.cache_dir={model_cache}")
    with pytest.raises(ConfigError, match="launcher.nnodes > 1 needs launcher.rdzv_endpoint"):
        plan(cfg)
    assert rendezvous(cfg.launcher, {"MASTER_ADDR": "node7", "MASTER_PORT": "1234"}) == "node7:1234"
    assert rendezvous(compose_config("launcher=torchrun", "launcher.rdzv_endpoint=head:29400").launcher, {}) \
        == "head:29400"
