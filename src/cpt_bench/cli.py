"""`cpt-bench`: the Hydra entry point. Compose the config, validate it, run the sequence."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from cpt_bench.configstore import register_configs
from cpt_bench.errors import RunDirInUse
from cpt_bench.quiet import quiet_libraries
from cpt_bench.run import requeue
from cpt_bench.run.runlock import LOCK_FILE

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


class RunProvenance:
    """The run directory's record of how it was made, written only once the run holds the
    directory and every check has passed: Hydra's own (`.hydra/`, `cli.log`) is switched off in
    conf/config.yaml because Hydra writes it before any check, so a refused command (a held lock,
    a finished directory, a bad value) would rewrite a run's record or leave a folder behind.
    Until `claim`, log lines are held in memory; they open cli.log then, in order."""

    FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's default

    def __init__(self, run_dir: Path, cfg: DictConfig):
        self.run_dir, self.cfg = run_dir, cfg
        self.existed = any(run_dir.iterdir())  # Hydra has just made the folder when it is empty
        self.held = logging.handlers.MemoryHandler(capacity=10**6, flushLevel=logging.CRITICAL + 1)
        self.file: logging.FileHandler | None = None
        logging.getLogger().addHandler(self.held)

    def claim(self, resumed: bool) -> None:
        """The run holds its directory: write the config and overrides (a resumed run keeps the
        record of the command that started it) and open cli.log with the lines held so far."""
        if not resumed:
            hydra_dir = self.run_dir / ".hydra"
            hydra_dir.mkdir(exist_ok=True)
            (hydra_dir / "config.yaml").write_text(OmegaConf.to_yaml(self.cfg))
            overrides = list(HydraConfig.get().overrides.task)
            (hydra_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
        self.file = logging.FileHandler(self.run_dir / "cli.log")  # appends: a resumed run's log goes on
        self.file.setFormatter(logging.Formatter(self.FORMAT))
        self.held.setTarget(self.file)
        self.held.flush()
        logging.getLogger().addHandler(self.file)
        self.close()

    def refused(self, exc: Exception) -> None:
        """A refused command leaves no folder it made: Hydra makes the run directory (and its
        parents) before any check, and the run's lock file is made before the checks it guards.
        Only empty folders and this command's own lock file go; another controller's never."""
        self.close()
        if self.existed or isinstance(exc, RunDirInUse):
            return
        cpt = self.run_dir / ".cpt"
        if cpt.is_dir() and [p.name for p in cpt.iterdir()] == [Path(LOCK_FILE).name]:
            (self.run_dir / LOCK_FILE).unlink()
            cpt.rmdir()
        if self.run_dir.is_dir() and not any(self.run_dir.iterdir()):
            self.run_dir.rmdir()
            for parent in self.run_dir.parents:  # e.g. runs/<date>/, which Hydra made with it
                if Path.cwd() not in parent.parents or any(parent.iterdir()):
                    break
                parent.rmdir()

    def close(self) -> None:
        """Stop holding lines in memory (cli.log, once open, stays open until `release`)."""
        logging.getLogger().removeHandler(self.held)
        self.held.close()

    def release(self) -> None:
        """The run has ended: close cli.log (a sweep runs many jobs in one process)."""
        self.close()
        if self.file is not None:
            logging.getLogger().removeHandler(self.file)
            self.file.close()


def os_error_line(exc: OSError, run_dir: Path) -> str:
    """One line for a run that failed on a file: what, why, what to do, and whether run.json says so."""
    import errno
    import json

    where = f"{exc.filename}: " if exc.filename else ""
    fix = ("free space on that disk (or pick another hydra.run.dir) and rerun the same command: it resumes after "
           "the last finished stage" if exc.errno == errno.ENOSPC else "fix that and rerun the same command to resume")
    try:
        status = json.loads((run_dir / "run.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    record = ("run.json records the failure" if status == "failed"
              else f"run.json could not be written and still says {status!r}" if status else "no run.json was written")
    return f"{where}{exc.strerror or exc}; {fix} ({record})"


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
    record = RunProvenance(run_dir, cfg)
    try:
        if cfg.preflight.enabled:  # plans for the node described; builds no model, writes no run.json
            from cpt_bench.preflight import preflight_main

            record.close()
            preflight_main(cfg, run_dir)
            return None
        group = _sweep_group()
        experiment = HydraConfig.get().runtime.choices.get("experiment")  # the +experiment preset, if any
        run = Run(cfg, run_dir, wandb_group=group, in_sweep=group is not None, experiment=experiment,
                  on_claim=record.claim)
        metrics = run.execute()
    except ConfigError as exc:
        record.refused(exc)
        print(f"cpt-bench: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except TrainingDiverged as exc:  # recorded in run.json as failed; the finished stages are kept
        print(f"cpt-bench: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:  # a full disk, a vanished or read-only file: its cause, its fix, the record's state
        print(f"cpt-bench: error: {os_error_line(exc, run_dir)}", file=sys.stderr)
        sys.exit(1)
    finally:
        record.release()
    return metrics["final_avg_acc"] if metrics else None  # a sweeper's objective


if __name__ == "__main__":
    main()
