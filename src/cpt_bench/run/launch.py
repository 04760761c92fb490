"""`launcher=torchrun`: a stage's heavy steps as torchrun jobs, this process the controller.

The controller (the Hydra job) owns the config, the run directory, resume, W&B and every
shared result file, and never holds a model. Each step (rollouts, training, evaluation)
runs as

    torchrun --nproc_per_node N [--nnodes M ...] -m cpt_bench.run.worker <step> <config> <spec>

with the resolved config written once (`.cpt/config.yaml`) and a spec per step (stage, task,
checkpoint paths, item indices after RIF, seed). Results come back through files in the
stage folder: evaluation and rollouts as one shard per rank (merged here, in item order, into
the same files a single process writes), training as its checkpoint, a streamed
`train_log.jsonl` and `result.json`. A worker that fails or is killed fails the stage with the
tail of its log; earlier stages stay complete and resumable. Children start in their own
process group with SIGUSR2 ignored (SLURM's pre-emption warning is the controller's), and
are stopped whenever the controller stops: by the controller itself when it can, and by the
kernel when it cannot (`kill -9`, an OOM kill): torchrun is started with the parent-death
signal set to SIGTERM, on which it stops its ranks.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from cpt_bench.config import validate
from cpt_bench.distributed import LAUNCH_VARS, available_cpus
from cpt_bench.errors import ConfigError
from cpt_bench.outputs.records import Diagnostics, HarnessResult
from cpt_bench.outputs.rundir import read_json, write_jsonl
from cpt_bench.paradigms.filtering import keep_item, rif_sampling
from cpt_bench.paradigms.rollouts import Rollouts, Sampled
from cpt_bench.progress import Relay
from cpt_bench.run.drift_step import base_samples_dir
from cpt_bench.run.rollout_step import ROLLOUTS_JSONL, Sampling
from cpt_bench.run.steps import (
    Evaluation,
    Filtered,
    InnerPoint,
    OnLog,
    StageSpec,
    Trained,
    record_filter,
    write_eval_records,
)
from cpt_bench.run.wire import (
    POINT_SECONDS,
    EvalShard,
    EvalSpec,
    RolloutShard,
    RolloutSpec,
    TrainResult,
    TrainSpec,
    read_record,
    write_config,
    write_record,
)

log = logging.getLogger("cpt_bench")

# set by torch.distributed.run for its own children; an outer launcher's must not leak into ours
CHILD_DROP = (*LAUNCH_VARS, "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE",
              "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS")
LOG_TAIL = 25  # lines of a failed worker's log in the error


class StepFailed(RuntimeError):
    """A launched step exited non-zero (or was killed)."""


PR_SET_PDEATHSIG = 1  # linux/prctl.h
# resolved here, in the parent: the child between fork and exec only calls it (no dlopen there)
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send this process `sig` when its parent dies, however it dies (Linux;
    False elsewhere). Survives exec, so the launched torchrun gets it."""
    return _PRCTL is not None and _PRCTL(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0


def _child_setup(parent: int):
    """What a step's child does between fork and exec."""

    def setup() -> None:
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # SLURM's warning is the controller's; SIG_IGN survives exec
        die_with_parent()
        if os.getppid() != parent:  # the controller died before the line above took effect
            os._exit(1)

    return setup


def rendezvous(launcher, env: Mapping[str, str] = os.environ) -> str:
    """host:port of a multi-node rendezvous: the config's, $MASTER_ADDR's, or the SLURM job's
    first host; a ConfigError when none is known (checked when the run is planned)."""
    if launcher.rdzv_endpoint:
        return launcher.rdzv_endpoint
    host = env.get("MASTER_ADDR")
    if not host and env.get("SLURM_JOB_NODELIST"):
        out = subprocess.run(["scontrol", "show", "hostnames", env["SLURM_JOB_NODELIST"]],
                             capture_output=True, text=True, check=False).stdout.split()
        host = out[0] if out else None
    if not host:
        raise ConfigError("launcher.nnodes > 1 needs launcher.rdzv_endpoint=host:port (or MASTER_ADDR, "
                          "or a SLURM job)")
    return f"{host}:{env.get('MASTER_PORT', '29500')}"


def rank_threads(threads: int | None, nproc_per_node: int, cpus: int) -> int:
    """Torch threads per rank: `threads` when set, else this job's CPUs shared by its ranks."""
    return threads or max(1, cpus // nproc_per_node)


class TorchrunSteps:
    """The steps of a stage as torchrun jobs over `launcher.nproc_per_node x nnodes` processes."""

    def __init__(self, cfg, *, benchmark, style, test_sets, paradigm, run_dir: Path):
        self.cfg = cfg = validate(cfg)  # the run's `Config` (a composed config is typed here)
        self.launcher, self.test_sets, self.paradigm = cfg.launcher, test_sets, paradigm
        self.config_path = run_dir / ".cpt" / "config.yaml"
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        write_config(self.config_path, cfg)
        self.model_path: str | None = None
        self.samples_dir = base_samples_dir(run_dir)  # the forward KL's draws from the base

    def load(self, path: str | Path) -> None:
        self.model_path = str(path)  # the workers load it; the controller holds no model

    # --- the steps ---------------------------------------------------------------------------

    def evaluate(self, out_dir: Path, drift_from: str | None = None, task: str | None = None,
                 points: list[InnerPoint] = ()) -> Evaluation:
        """One evaluate job: the model, then the stage's inner `points` in the same launch (no
        second torchrun start), each point's seconds measured by rank 0 and taken out of the end's."""
        start = time.time()
        for folder in (out_dir, *(p.dir for p in points)):
            folder.mkdir(parents=True, exist_ok=True)
            for name in ("drift.json", "harness.json", POINT_SECONDS):  # a killed attempt's leftovers
                (folder / name).unlink(missing_ok=True)
        self._run("evaluate", EvalSpec(dir=str(out_dir), model_path=self.model_path, seed=self.cfg.seed,
                                       drift_from=drift_from, task=task, base_samples=str(self.samples_dir),
                                       points=[str(p.model) for p in points], point_dirs=[str(p.dir) for p in points]),
                  out_dir)
        evaluation = self._gathered(out_dir, drift=bool(drift_from))
        inner = [self._gathered(p.dir) for p in points]
        evaluation.seconds = time.time() - start - sum(e.seconds for e in inner)
        evaluation.points = inner
        return evaluation

    def _gathered(self, folder: Path, drift: bool = False) -> Evaluation:
        """One evaluated model's results from its folder: the ranks' shards merged into the files one
        process writes, rank 0's drift, harness scores and (an inner point's) seconds."""
        records = merge_eval_shards(folder, self.test_sets)
        write_eval_records(folder, records)
        found = {name: read_json(folder / name) for name in ("drift.json", "harness.json", POINT_SECONDS)
                 if (folder / name).exists()}
        for name in found:
            (folder / name).unlink()
        return Evaluation.of(records, found.get(POINT_SECONDS, {}).get("seconds", 0.0),
                             Diagnostics.from_json(found["drift.json"]) if drift else None,
                             HarnessResult.from_json(found["harness.json"]) if "harness.json" in found else None)

    def filter(self, spec: StageSpec) -> Filtered:
        start = time.time()
        f = self.cfg.filter
        sampled, tokens = self._rollouts(spec, rif_sampling(f, self.paradigm.completion_length), None)
        scores = [s.scores for s in sampled]
        return record_filter(spec, f, scores, [keep_item(sc, f.keep) for sc in scores],
                             seconds=time.time() - start, tokens=tokens)

    def rollout(self, spec: StageSpec, items: list, rollouts: Rollouts) -> Sampling:
        start = time.time()
        position = {id(ex): i for i, ex in enumerate(spec.items)}
        sampled, tokens = self._rollouts(spec, rollouts, [position[id(ex)] for ex in items])
        return Sampling(sampled, tokens, time.time() - start)

    def _rollouts(self, spec: StageSpec, rollouts: Rollouts, indices: list[int] | None) -> tuple[list[Sampled], int]:
        """The rollout step over the ranks: one `Sampled` per item (the stage's items at
        `indices`, or all of them), in item order, and the tokens generated."""
        self._run("rollout", RolloutSpec.of(rollouts, stage=spec.stage, task=spec.task, dir=str(spec.dir),
                                            seed=spec.seed, model_path=self.model_path, item_indices=indices),
                  spec.dir, label=f"rollout-{rollouts.purpose}")
        paths = sorted(spec.dir.glob(f"rollout-{rollouts.purpose}-shard-*.json"))
        shards = [read_record(p, RolloutShard) for p in paths]
        by_item = {i: Sampled(c, sc) for shard in shards
                   for i, c, sc in zip(shard.indices, shard.completions, shard.scores)}
        count = len(spec.items) if indices is None else len(indices)
        if len(by_item) != count:
            raise StepFailed(f"rollout shards in {spec.dir} cover {len(by_item)} of {count} items")
        for path in paths:
            path.unlink()
        return [by_item[i] for i in range(count)], sum(s.generated_tokens for s in shards)

    def train(self, spec: StageSpec, items: list, on_log: OnLog, rollouts: list[Sampled] | None = None) -> Trained:
        position = {id(ex): i for i, ex in enumerate(spec.items)}
        log_path = spec.dir / "train_log.jsonl"
        log_path.unlink(missing_ok=True)
        (spec.dir / "result.json").unlink(missing_ok=True)
        shutil.rmtree(spec.partial_model_dir, ignore_errors=True)  # a killed attempt's leftovers
        tail = _LogTail(log_path, on_log)
        self._run("train", TrainSpec(stage=spec.stage, task=spec.task, dir=str(spec.dir), seed=spec.seed,
                                     base_path=spec.base_path, start_path=spec.start_path,
                                     item_indices=[position[id(ex)] for ex in items],
                                     # the controller wrote them (record_rollouts) before training
                                     rollouts_file=str(spec.dir / ROLLOUTS_JSONL) if rollouts is not None else None),
                  spec.dir, tail.poll)
        tail.poll()
        write_jsonl(log_path, tail.rows)  # the same format a single process writes
        self.model_path = str(spec.model_dir)
        return Trained.of(read_record(spec.dir / "result.json", TrainResult), len(items), tail.rows)

    # --- launching ---------------------------------------------------------------------------

    def command(self, step: str, spec_path: Path) -> list[str]:
        """The torchrun command line of one step (through srun on a multi-node SLURM job)."""
        lc = self.launcher
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={lc.nproc_per_node}",
               f"--nnodes={lc.nnodes}"]
        if lc.nnodes == 1:
            cmd.append("--standalone")
        else:
            cmd += ["--rdzv_backend=c10d", f"--rdzv_endpoint={rendezvous(lc)}",
                    f"--rdzv_id={os.environ.get('SLURM_JOB_ID', 'cpt-bench')}"]
        cmd += ["-m", "cpt_bench.run.worker", step, str(self.config_path), str(spec_path)]
        if lc.srun:
            # a step inside the job's allocation, beside the controller's own (--overlap)
            cmd = ["srun", "--overlap", f"--nodes={lc.nnodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1", *cmd]
        return cmd

    def child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in CHILD_DROP}
        threads = rank_threads(self.cfg.threads, self.launcher.nproc_per_node, available_cpus())
        env.update(WANDB_MODE="disabled", PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads))
        return env

    def _run(self, step: str, spec, folder: Path, poll=None, label: str | None = None) -> None:
        """Run one step to completion; raise StepFailed with its log's tail if it fails."""
        folder.mkdir(parents=True, exist_ok=True)
        label = label or step  # names the step's spec and log in the folder (RIF's and a paradigm's rollouts)
        spec_path, log_path = folder / f"{label}-spec.json", folder / f"{label}.log"
        write_record(spec_path, spec)
        with open(log_path, "w") as out:
            proc = subprocess.Popen(self.command(step, spec_path), stdout=out, stderr=subprocess.STDOUT,
                                    env=self.child_env(), start_new_session=True,
                                    preexec_fn=_child_setup(os.getpid()))
            relay = Relay(log_path)
            try:
                while proc.poll() is None:
                    if poll:
                        poll()
                    relay.pump()
                    time.sleep(0.5)
                relay.pump()
            finally:
                if proc.poll() is None:  # the controller is stopping (an error, a signal): so do its children
                    stop(proc)
        if proc.returncode:
            lines = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL:]
            raise StepFailed(f"{step} step failed (torchrun exit code {proc.returncode}); "
                             f"last lines of {log_path}:\n" + "\n".join(lines))


def merge_eval_shards(out_dir: Path, test_sets: dict[str, list]) -> dict[str, list[dict]]:
    """The ranks' `shard-<rank>.json` as one record list per task, in item order (as one
    process evaluates them); the shard files are removed once merged."""
    paths = sorted(out_dir.glob("shard-*.json"))
    rows = sorted((pair for p in paths for pair in zip(*_shard_columns(read_record(p, EvalShard)))),
                  key=lambda pair: pair[0])
    records: dict[str, list[dict]] = {task: [] for task in test_sets}
    for _, row in rows:
        records[row["task"]].append(row)
    if any(len(records[t]) != len(items) for t, items in test_sets.items()):
        raise StepFailed(f"the evaluation shards in {out_dir} do not cover every test item")
    for path in paths:
        path.unlink()
    return records


def _shard_columns(shard: EvalShard) -> tuple[list[int], list[dict]]:
    if len(shard.indices) != len(shard.records):
        raise StepFailed(f"an evaluation shard holds {len(shard.records)} records for {len(shard.indices)} items")
    return shard.indices, shard.records


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Terminate a child's whole process group (torchrun and its ranks), then kill what is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class _LogTail:
    """Forwards the lines a training worker appends to `train_log.jsonl` as they arrive."""

    def __init__(self, path: Path, on_log: OnLog):
        self.path, self.on_log, self.offset, self.rows = path, on_log, 0, []

    def poll(self) -> None:
        if not self.path.exists():
            return
        with open(self.path) as f:
            f.seek(self.offset)
            while (line := f.readline()).endswith("\n"):  # a partly written line waits for the next poll
                self.offset = f.tell()
                row = json.loads(line)
                total = row.pop("max_steps")
                self.rows.append(row)
                self.on_log(row["step"], total, {k: v for k, v in row.items() if k != "step"})
