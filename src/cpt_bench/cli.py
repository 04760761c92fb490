"""`cpt-bench`: the Hydra entry point. Compose the config, validate it, run the sequence."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from cpt_bench.configstore import register_configs
from cpt_bench.quiet import quiet_libraries
from cpt_bench.run import requeue

register_configs()
log = logging.getLogger("cpt_bench")


def _sweep_group() -> str | None:
    """Runs of one multirun share a W&B group named after the sweep directory."""
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return Path(hc.sweep.dir).as_posix().replace("/", "_").strip("_")
    return None


def _joblib_threads(cfg: DictConfig) -> None:
    """Under hydra-joblib-launcher, n_jobs sequences share this machine's cores: unless `threads`
    is set, give each job max(1, cores // n_jobs) torch threads instead of torch's default (every
    core), so the jobs do not oversubscribe the CPU. n_jobs < 0 counts back from the cores as
    joblib does (-1 = all of them)."""
    launcher = HydraConfig.get().launcher
    if "joblib" not in str(launcher.get("_target_", "")) or cfg.threads is not None:
        return
    import joblib

    cores = joblib.cpu_count()  # what joblib itself resolves n_jobs=-1 against (affinity, cgroups)
    n_jobs = int(launcher.get("n_jobs") or 1)
    jobs = max(cores + 1 + n_jobs, 1) if n_jobs < 0 else n_jobs
    with open_dict(cfg):
        cfg.threads = max(1, cores // jobs)
    log.info("joblib launcher: %d parallel job(s) on %d cores -> threads=%d per job", jobs, cores, cfg.threads)


@hydra.main(version_base="1.3", config_path="pkg://cpt_bench.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from cpt_bench.errors import ConfigError, TrainingDiverged
    from cpt_bench.run.controller import Run

    if os.environ.get("SLURM_PROCID", "0") != "0":
        # a multi-node SLURM job runs this task once per node: the controller is task 0, which
        # starts every node's workers itself (launcher=torchrun launcher.srun=true)
        log.info("SLURM task %s: the sequence's controller runs on task 0; nothing to do here",
                 os.environ["SLURM_PROCID"])
        return None
    quiet_libraries()
    requeue.guard()  # under hydra/launcher=slurm: never run on beside the requeued copy
    _joblib_threads(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        if cfg.preflight.enabled:  # plans for the node described; builds no model, writes no run.json
            from cpt_bench.preflight import preflight_main

            preflight_main(cfg, run_dir)
            return None
        group = _sweep_group()
        experiment = HydraConfig.get().runtime.choices.get("experiment")  # the +experiment preset, if any
        run = Run(cfg, run_dir, wandb_group=group, in_sweep=group is not None, experiment=experiment)
        metrics = run.execute()
    except ConfigError as exc:
        print(f"cpt-bench: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except TrainingDiverged as exc:  # recorded in run.json as failed; the finished stages are kept
        print(f"cpt-bench: error: {exc}", file=sys.stderr)
        sys.exit(1)
    return metrics["final_avg_acc"] if metrics else None  # a sweeper's objective


if __name__ == "__main__":
    main()
