"""`cpt-bench-sbatch`: print the sbatch script a SLURM sweep would submit, and submit nothing.

    cpt-bench-sbatch +experiment=paper_sft hydra/launcher=slurm hydra.launcher.partition=gpu

takes the overrides of `cpt-bench -m ...` (a leading `-m` is accepted and ignored) and composes
the config as `cpt-bench -m` does: Hydra initialised with `initialize_config_module`
("cpt_bench.conf", job name `cli`), then the compose call behind `compose(...,
return_hydra_config=True)` in multirun mode, so that sweep overrides such as `seed=0,1,2` or
`+experiment=a,b` are allowed. The jobs are expanded as Hydra's BasicSweeper does
(`hydra.sweeper.params`, then the command line's overrides) and each job's config is composed.
`hydra.launcher` is then mapped onto submitit as hydra-submitit-launcher's `SlurmLauncher.launch`
does: `max_num_timeout` goes to the executor, the shared keys (`timeout_min`, `gpus_per_node`,
`tasks_per_node`, `mem_gb`, ...) to `update_parameters` as they are and every other key with a
`slurm_` prefix; submitit renames them (`timeout_min` -> `time`, `mem_gb` -> `mem`,
`tasks_per_node` -> `ntasks_per_node`, `name` -> `job_name`). A batch of more than one job is
one job array (`--array=0-<n-1>%<array_parallelism>`), a single job is not.

The script is rendered by submitit's private `submitit.slurm.slurm._make_sbatch_string`, the
function SlurmExecutor itself writes its submission files with, so the output is what submitit
would write; being private, it may change between submitit releases. Checked against
submitit 1.5.4 and hydra-submitit-launcher 1.2.0 (hydra-core 1.3.8).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple
from unittest import mock

from omegaconf import DictConfig, OmegaConf

SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
USAGE = """usage: cpt-bench-sbatch [-m] OVERRIDE...

Print the sbatch script that `cpt-bench -m OVERRIDE...` would submit through
hydra/launcher=slurm (a sweep of several jobs is one job array), and the number of jobs;
submits nothing. Example:
  cpt-bench-sbatch +experiment=paper_sft hydra/launcher=slurm hydra.launcher.partition=gpu
"""


class SbatchError(Exception):
    """A problem with the overrides, reported in one line."""


@contextmanager
def _hydra():
    """Hydra initialised on cpt-bench's packaged configs; job name `cli`, as under `cpt-bench`."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from cpt_bench.configstore import register_configs

    register_configs()
    with initialize_config_module("cpt_bench.conf", version_base="1.3", job_name="cli"):
        yield GlobalHydra.instance().hydra


def sweep_jobs(hydra, cfg: DictConfig) -> list[list[list[str]]]:
    """The sweep's batches of jobs (each job a list of overrides), as Hydra's BasicSweeper
    expands them: the preset's `hydra.sweeper.params` first, then the command line's task
    overrides (which win on the same key), as a product, in batches of `max_batch_size` (each
    batch is launched as one job array)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = cfg.hydra.sweeper
    if sweeper.get("_target_") != f"{BasicSweeper.__module__}.{BasicSweeper.__name__}":
        raise SbatchError(f"only Hydra's basic sweeper is supported, not {sweeper.get('_target_')}")
    params = sweeper.get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list(cfg.hydra.overrides.task)
    overrides = OverridesParser.create(config_loader=hydra.config_loader).parse_overrides(lines)
    return [[list(job) for job in batch]
            for batch in BasicSweeper.split_arguments(overrides, sweeper.get("max_batch_size"))]


def compose(overrides: list[str]) -> tuple[DictConfig, list[list[list[str]]]]:
    """The multirun config of `cpt-bench -m OVERRIDES` (hydra node included) and its batches of
    jobs. Every job's own config is composed too, as the sweeper does before launching, so a bad
    value in any job fails here."""
    from hydra.core.utils import setup_globals
    from hydra.errors import HydraException
    from hydra.types import RunMode
    from omegaconf.errors import OmegaConfBaseException

    setup_globals()  # registers ${now:...} etc.
    try:
        with _hydra() as hydra:
            cfg = hydra.compose_config("config", overrides, run_mode=RunMode.MULTIRUN, from_shell=False)
            batches = sweep_jobs(hydra, cfg)
            for job in (job for batch in batches for job in batch):
                hydra.config_loader.load_sweep_config(cfg, job)
    except (HydraException, OmegaConfBaseException) as exc:
        raise SbatchError(" ".join(str(exc).split())) from exc
    return cfg, batches


def launcher_params(cfg: DictConfig) -> dict:
    """hydra.launcher resolved, as SlurmLauncher receives it (without `_target_`)."""
    launcher = cfg.hydra.launcher
    target = launcher.get("_target_")
    if target != SLURM_LAUNCHER:
        raise SbatchError(f"hydra.launcher is {target}, not SLURM; add hydra/launcher=slurm")
    params = OmegaConf.to_container(launcher, resolve=True)
    params.pop("_target_")
    return params


def render(params: dict, num_jobs: int) -> str:
    """The sbatch script of SlurmLauncher.launch for `num_jobs` jobs, through submitit's own
    executor (its parameter checks and renames), stopped before anything is submitted."""
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from submitit import AutoExecutor
    from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string

    # as in SlurmLauncher.launch (hydra-submitit-launcher 1.2.0)
    init_keys = {"max_num_timeout"}
    init_params = {"folder": params["submitit_folder"]}
    init_params.update({f"slurm_{k}": v for k, v in params.items() if k in init_keys})
    # SlurmExecutor refuses to exist where there is no `srun`; it is only asked to render here
    with mock.patch.object(SlurmExecutor, "affinity", classmethod(lambda cls: 2)):
        executor = AutoExecutor(cluster="slurm", **init_params)
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{
        k if k in base else f"slurm_{k}": v
        for k, v in params.items() if k not in init_keys | {"submitit_folder"}
    })
    slurm = executor._executor
    # one job: a plain job; more: one array (SlurmExecutor._internal_process_submissions)
    map_count = num_jobs if num_jobs > 1 else None
    return _make_sbatch_string(command=slurm._submitit_command_str, folder=slurm.folder,
                               map_count=map_count, **slurm.parameters)


class Rendered(NamedTuple):
    script: str  # the sbatch script of the first submission (the only one unless max_batch_size)
    jobs: list[list[str]]  # every job's overrides
    submissions: int  # one per batch of jobs: a job array, or a single job


def sbatch(overrides: list[str]) -> Rendered:
    """The sbatch script `cpt-bench -m OVERRIDES` would submit first, and the sweep's jobs."""
    overrides = [o for o in overrides if o not in ("-m", "--multirun")]
    cfg, batches = compose(overrides)
    jobs = [job for batch in batches for job in batch]
    return Rendered(render(launcher_params(cfg), len(batches[0])), jobs, len(batches))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        sys.exit(0 if argv else 2)
    try:
        out = sbatch(argv)
    except SbatchError as exc:
        print(f"cpt-bench-sbatch: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(out.script, end="" if out.script.endswith("\n") else "\n")
    batches = f" in {out.submissions} submissions (the first shown)" if out.submissions > 1 else ""
    print(f"# the sweep expands to {len(out.jobs)} job(s){batches}; nothing was submitted")
    print(f"\n# preflight of the first job on its node ({' '.join(out.jobs[0])})")
    print(job_preflight(out.jobs[0]))


def job_preflight(job: list[str]) -> str:
    """The preflight (cpt_bench.preflight) of one job of the sweep, for the node it asks for
    (its launcher's ranks per node as GPUs unless preflight.gpus says otherwise); one line on error."""
    from hydra.types import RunMode

    from cpt_bench.errors import ConfigError
    from cpt_bench.preflight import render, run_preflight

    try:
        with _hydra() as hydra:
            cfg = hydra.compose_config("config", job, run_mode=RunMode.MULTIRUN, from_shell=False)
        return render(run_preflight(cfg, Path(cfg.hydra.sweep.dir)))
    except ConfigError as exc:
        return f"preflight: error: {exc}"


if __name__ == "__main__":
    main()
