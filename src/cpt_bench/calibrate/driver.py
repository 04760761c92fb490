"""Running a calibrated study: the probes (one `cpt-bench` run each, in the study's probe
folder) and then the seeds at the chosen rates (one `cpt-bench -m` sweep per family, on
whatever Hydra launcher the study names: joblib on one machine, SLURM on a cluster).

Probe folders are named by their settings (the family, a hash of every override that makes
it, the rate), so a resumed or extended search finds its finished probes and never runs one
twice, and a family whose settings changed never reads another's. The seed sweeps name each
run by its rate and seed (`hydra.sweep.subdir`), so extending a family's rates keeps every
finished run where it was. A probe is never one of the study's runs: it runs under the
calibration seed, in `calibration/`, which the report does not read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from cpt_bench.calibrate.record import CalibrationRecord, FamilyRecord, SeedsAt, read_record
from cpt_bench.calibrate.search import Probe, Round, Search, next_probe, place, plan_round
from cpt_bench.calibrate.spec import LR_KEY, StudySpec
from cpt_bench.errors import ConfigError
from cpt_bench.outputs.rundir import read_json

log = logging.getLogger("cpt_bench.calibrate")

PROBES = "calibration"  # the probes' folder in the study folder (cpt-bench-report skips it)
CLI = [sys.executable, "-m", "cpt_bench.cli"]
SET_UP_POLL = 2.0  # seconds between looks at whether the first probe has built the base model


class ProbeFailed(RuntimeError):
    """A probe or seed run exited with an error; its log says why."""


def family_folder(spec: StudySpec, family: str) -> str:
    """`<family>-<hash>`: the hash of every override a probe of the family runs with, so a
    changed family or study never reuses another's probes."""
    settings = [*spec.common, *spec.families[family].overrides, f"seed={spec.calibration_seed}"]
    return f"{family}-{hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:8]}"


def finished_gain(run_dir: Path) -> float | None:
    """A finished run's gain (metrics.json), None if it has not finished."""
    try:
        info, metrics = read_json(run_dir / "run.json"), read_json(run_dir / "metrics.json")
    except (OSError, ValueError):
        return None
    gain = metrics.get("gain")
    return float(gain) if info.get("status") == "finished" and gain is not None else None


def _threads(spec: StudySpec) -> list[str]:
    """Parallel probes share the cores: each gets its share of torch threads unless set."""
    if spec.jobs == 1 or any(o.startswith("threads=") for o in spec.common):
        return []
    return [f"threads={max(1, (os.cpu_count() or 1) // spec.jobs)}"]


def _log(run_dir: Path) -> Path:
    return run_dir.parent / f"{run_dir.name}.log"  # beside the run: its name's dots are no suffix


def recorded_probes(study: Path) -> dict[tuple[str, float], float]:
    """The probes an earlier search recorded in calibration.json, by (probes folder, rate): a
    study resumed where its probe runs are gone (a fresh clone of a committed record) reads them
    from there; the folder's name carries the hash of the family's settings."""
    rec = read_record(study)
    return {(Path(f["probes_folder"]).name, float(p["lr"])): float(p["gain"])
            for f in (rec or {}).get("families", []) for p in f.get("probes", [])}


def probe_dir(spec: StudySpec, study: Path, family: str, lr: float) -> Path:
    return study / PROBES / family_folder(spec, family) / f"lr={lr:g}"


def wait_set_up(run: Future, run_dir: Path) -> None:
    """Until the run has written run.json (the controller does once its base model is built and
    cached) or has ended: a run started before that would build the same base again."""
    while not run.done() and not (run_dir / "run.json").exists():
        time.sleep(SET_UP_POLL)


def run_probe(spec: StudySpec, study: Path, family: str, lr: float,
              recorded: dict[tuple[str, float], float] | None = None) -> float:
    """The probe's gain: read back if its run finished (or, its run gone, from the record of an
    earlier search: `recorded`), else run (or resume) it."""
    folder = family_folder(spec, family)
    run_dir = probe_dir(spec, study, family, lr)
    gain = finished_gain(run_dir)
    if gain is None and (folder, lr) in (recorded or {}) and not run_dir.exists():
        gain = recorded[(folder, lr)]
        log.info("probe %s lr=%g: gain %+.1f pts (recorded in calibration.json)", family, lr, 100 * gain)
        return gain
    if gain is not None:
        log.info("probe %s lr=%g: gain %+.1f pts (done before)", family, lr, 100 * gain)
        return gain
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    cmd = [*CLI, *spec.common, *spec.families[family].overrides, *_threads(spec), f"{LR_KEY}={lr:g}",
           f"seed={spec.calibration_seed}", f"hydra.run.dir='{run_dir}'"]  # quoted: the folder name holds '='
    started = time.monotonic()
    with open(_log(run_dir), "w") as out:
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT)
    gain = finished_gain(run_dir)
    if code != 0 or gain is None:
        raise ProbeFailed(f"probe {family} lr={lr:g} failed (exit {code}): see {_log(run_dir)}")
    log.info("probe %s lr=%g: gain %+.1f pts (%.0f s)", family, lr, 100 * gain, time.monotonic() - started)
    return gain


def run_search(spec: StudySpec, study: Path, done: dict[str, list[Probe]],
               after_round: Callable[[Round], None] = lambda plan: None) -> Round:
    """Probe round after round until the search is over, each family's probes appended to
    `done` as they finish (`after_round` then records them); every probe's run kept."""
    searches = {f: spec.search(f) for f in spec.families}
    recorded = recorded_probes(study)

    def probe(item: tuple[str, float]) -> float:
        return run_probe(spec, study, *item, recorded=recorded)

    if (targets := spec.target_gains()) is not None and spec.jobs > 1:
        return search_apart(spec, study, done, searches, targets, probe, after_round)
    while (plan := plan_round(done, searches, spec.target_gains(), spec.num_targets)).probes:
        first = not any(done.values())
        with ThreadPoolExecutor(max_workers=spec.jobs) as pool:
            runs = {}
            for family, lr in plan.probes.items():
                runs[family] = pool.submit(probe, (family, lr))
                if first:  # the very first probe alone until it has built what every run shares (a base model)
                    wait_set_up(runs[family], probe_dir(spec, study, family, lr))
                    first = False
        for family, lr in plan.probes.items():
            done[family].append(Probe(lr, runs[family].result()))
        after_round(plan)
    return plan


def search_apart(spec: StudySpec, study: Path, done: dict[str, list[Probe]], searches: dict[str, Search],
                 targets: list[float], probe: Callable[[tuple[str, float]], float],
                 after_round: Callable[[Round], None]) -> Round:
    """The search with given targets: a family's next probe then depends on its own probes only
    (`next_probe`), so each family goes on at its own pace and a slot that a fast family's probe
    frees goes to that family's next probe instead of idling until the round's slowest probe ends.
    Each family probes the same rates, in the same order, as round by round."""
    fixed = tuple(targets)
    with ThreadPoolExecutor(max_workers=spec.jobs) as pool:
        running: dict[Future, tuple[str, float]] = {}

        def submit(family: str) -> None:
            if (lr := next_probe(done[family], targets, searches[family])) is None:
                return
            first = not any(done.values()) and not running
            running[pool.submit(probe, (family, lr))] = (family, lr)
            if first:  # the very first probe alone until it has built what every run shares (a base model)
                wait_set_up(next(iter(running)), probe_dir(spec, study, family, lr))

        for family in searches:
            submit(family)
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                family, lr = running.pop(future)
                try:
                    done[family].append(Probe(lr, future.result()))
                except ProbeFailed:
                    for other in running:  # no new probe starts; the running ones end and are kept
                        other.cancel()
                    raise
                after_round(Round({family: lr}, fixed))
                submit(family)
    return Round({}, fixed)


def record(spec: StudySpec, name: str, done: dict[str, list[Probe]], plan: Round) -> CalibrationRecord:
    targets = list(plan.targets) if plan.targets else None
    families = [FamilyRecord(f, list(spec.families[f].overrides), f"{PROBES}/{family_folder(spec, f)}", done[f],
                             place(done[f], targets, spec.search(f)) if targets else [])
                for f in spec.families]
    return CalibrationRecord(name, spec.tolerance / 100, targets, not spec.targets, plan.note, families)


def seed_rates(fam: FamilyRecord) -> list[float]:
    return sorted({p.lr for p in fam.placements if p.lr is not None})


def run_seeds(spec: StudySpec, study: Path, fam: FamilyRecord) -> bool:
    """The family's seeds at its chosen rates: one `cpt-bench -m` sweep into `<study>/<family>`,
    then their gains read into `fam.seeds`; False when there was nothing to run (no rate, or every
    run finished before)."""
    rates = seed_rates(fam)
    read_seeds(spec, study, fam)
    if not rates or all(len(s.gains) == len(spec.seeds) for s in fam.seeds):
        return False
    cmd = [*CLI, "-m", *spec.common, *fam.overrides, f"{LR_KEY}={','.join(f'{lr:g}' for lr in rates)}",
           f"seed={','.join(map(str, spec.seeds))}", f"hydra.sweep.dir='{study / fam.name}'",
           "hydra.sweep.subdir='lr=${" + LR_KEY + "}-seed=${seed}'",
           "~hydra.callbacks.report"]  # the study's report, over every family, is written after each family
    log.info("seeds of %s: %d rates x %d seeds into %s", fam.name, len(rates), len(spec.seeds), study / fam.name)
    code = subprocess.call(cmd)
    if code != 0:
        raise ProbeFailed(f"the seed sweep of {fam.name} failed (exit {code})")
    read_seeds(spec, study, fam)
    return True


def read_seeds(spec: StudySpec, study: Path, fam: FamilyRecord) -> None:
    """Each placed target's seeds: their finished runs' gains."""
    fam.seeds = [SeedsAt(p.lr, p.target, tuple(g for seed in spec.seeds if (g := finished_gain(
        study / fam.name / f"lr={p.lr:g}-seed={seed}")) is not None))
        for p in fam.placements if p.lr is not None]


def check_study_folder(study: Path) -> None:
    if study.exists() and not study.is_dir():
        raise ConfigError(f"{study}: not a folder")
