"""Shared fixtures: hermetic offline environment and one embedded base model per session;
helpers the test modules import (`from conftest import ...`): config composition, the CLI.

`make test` runs the suite on two pytest-xdist workers (`-n 2 --dist loadfile`: a module's
tests, and so its module fixtures, stay on one worker; `make test-fast`, whose fixtures are cheap,
spreads its tests one by one). Each worker, and every process it
starts, runs torch on one thread: two single-threaded processes use 2 cores better than one
process with two threads on models this small. A session fixture that trains or converts a
model is built once for the whole session, by whichever worker asks first (`once_per_session`),
and the other workers read it back; reuse one for a new end-to-end assertion
(docs/development.md, "The test budget")."""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from filelock import FileLock

from budget import (  # noqa: F401 (the test budget's hooks)
    pytest_addoption,
    pytest_sessionfinish,
    pytest_sessionstart,
    pytest_terminal_summary,
)

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")
# the tests against a real vLLM engine need vLLM's CPU build (make test-vllm's environment)
collect_ignore = [] if importlib.util.find_spec("vllm") else ["test_vllm_real.py"]

if os.environ.get("PYTEST_XDIST_WORKER"):  # before any test imports torch; inherited by the CLI runs
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def once_per_session(tmp_path_factory, name: str, build: Callable[[Path], T]) -> T:
    """`build(folder)` run once per test session, even across xdist workers: the first worker to
    ask builds under a file lock and pickles the result; the others wait and read it back."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above each worker's own
    folder, done = root / f"shared-{name}", root / f"shared-{name}.pkl"
    with FileLock(str(root / f"shared-{name}.lock")):
        if not done.exists():
            folder.mkdir(exist_ok=True)
            done.write_bytes(pickle.dumps(build(folder)))
        return pickle.loads(done.read_bytes())


@pytest.fixture(scope="session", autouse=True)
def offline_env(tmp_path_factory):
    """No hub, W&B offline, and W&B's side files kept out of the user's home."""
    home = tmp_path_factory.mktemp("wandb-home")
    env = {
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DATA_DIR": str(home / "data"),
        "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_CONFIG_DIR": str(home / "config"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """An empty model cache for the session: runs load the shipped embedded base model, and
    anything that would build a model instead writes here, never into the user's cache."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory) -> Path:
    """A model cache holding SmolLM2-135M-Instruct, converted once per session (~15-30 s) and
    shared by the tests of the conversion and of the format-aligned model built on it."""
    from cpt_bench.builtin.smollm2 import build_smollm2

    def build(cache: Path) -> Path:
        build_smollm2(cache)
        return cache

    return once_per_session(tmp_path_factory, "smollm2-cache", build)


@pytest.fixture(scope="session")
def tiny_base() -> Path:
    """The embedded base model's folder (the one shipped in the package)."""
    from cpt_bench.builtin.tiny import build_tiny_base
    from cpt_bench.config import TinyRecipe

    return build_tiny_base(TinyRecipe())


def compose_config(*overrides: str, hydra: bool = False):
    """The config `cpt-bench OVERRIDES...` would run with, composed from the packaged
    cpt_bench.conf with the schema registered; `hydra=True` keeps the `hydra` node (sweeper
    params, run dirs), as `compose(..., return_hydra_config=True)` does."""
    from hydra import compose, initialize_config_module

    from cpt_bench.configstore import register_configs

    register_configs()  # idempotent: stores the same schema nodes under the same names
    with initialize_config_module(config_module="cpt_bench.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def worker_config(cfg, folder: Path):
    """The config a launched worker holds: the controller's typed Config written to a file and
    read back as the worker reads it (run.wire)."""
    from cpt_bench.config import validate
    from cpt_bench.run.wire import read_config, write_config

    write_config(folder / "config.yaml", validate(cfg))
    return read_config(folder / "config.yaml")


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed `cpt-bench` console script, as a user would (`env`: added variables).

    Not attached to this process's W&B service: wandb exports its address (WANDB_SERVICE) once a
    test here has logged, and a CLI run sharing it would find a killed run's id still in use."""
    exe = Path(sys.executable).with_name("cpt-bench")
    base = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**base, **(env or {})})


def freeze_at(point: str, once: Path) -> dict[str, str]:
    """The environment that freezes a `cpt-bench` process (SIGSTOP) the first time it reaches a
    fault point (cpt_bench.faults), once across processes: a test acts on it there, at a known
    point, instead of racing a long stage."""
    from cpt_bench.faults import ENV, ONCE_ENV, SIGNAL_ENV

    return {ENV: point, SIGNAL_ENV: "SIGSTOP", ONCE_ENV: str(once)}


def wait_frozen(pid: int, once: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Wait until process `pid` has frozen itself at its fault point (`freeze_at`)."""
    deadline = time.time() + timeout
    while not (once.exists() and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"):
        assert proc.poll() is None, "the run ended before it reached its fault point"
        assert time.time() < deadline, "the run never reached its fault point"
        time.sleep(0.1)


# a short sequence used by the end-to-end tests: two tasks the base model is partly good at
QUICK = [
    "order.tasks=[max,shift]",
    "benchmark.test_size=50",
    "benchmark.train_size=256",
    "paradigm.epochs=3",
]


def _cli_run_into(run_dir: Path, overrides, model_cache: Path):
    res = run_cli(*overrides, f"model.cache_dir={model_cache}", f"hydra.run.dir={run_dir}")
    assert res.returncode == 0, res.stderr[-3000:]
    return run_dir, res


def cli_run(tmp_path_factory, name: str, *overrides: str, model_cache: Path):
    """A run through the CLI into a fresh folder: (run dir, completed process)."""
    return _cli_run_into(tmp_path_factory.mktemp(name) / "run", overrides, model_cache)


def shared_cli_run(tmp_path_factory, name: str, *overrides: str, model_cache: Path):
    """`cli_run` once per test session, whichever worker asks first (a session fixture's run)."""
    return once_per_session(tmp_path_factory, name,
                            lambda folder: _cli_run_into(folder / "run", overrides, model_cache))


@pytest.fixture(scope="session")
def quick_run(model_cache, tmp_path_factory):
    """The quick SFT sequence through the CLI (launcher=local): (run dir, completed process). With
    two inner points a stage (eval.inner_points), which leave its matrix exactly as it is without
    them: its pinned reference (test_end_to_end) was made without."""
    return shared_cli_run(tmp_path_factory, "quick", *QUICK, "eval.inner_points=2", model_cache=model_cache)


# a short GRPO sequence with CoT and RIF (test_rft: its pinned reference)
RFT_COT_RIF = ["paradigm=rft", "order.tasks=[max,shift]", "benchmark.train_size=64", "benchmark.test_size=30",
               "paradigm.learning_rate=1e-4", "cot=true", "filter=rif", "filter.keep=nonzero_variance",
               "filter.num_rollouts=4", "logger=none"]


@pytest.fixture(scope="session")
def rft_cot_rif_run(model_cache, tmp_path_factory):
    return shared_cli_run(tmp_path_factory, "rft", *RFT_COT_RIF, model_cache=model_cache)
