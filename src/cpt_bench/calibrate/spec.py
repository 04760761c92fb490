"""A calibrated study's declaration: its families, targets, probe budget and seeds.

A study is a YAML file (the shipped ones in calibrate/studies/, or a path of your own), read
into the typed `StudySpec` (a misspelt key or a wrong type fails as it is read) and checked for
ranges in one line before any run starts. Gains and the tolerance are given in points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cpt_bench.calibrate.search import MIN_TARGETS, Search
from cpt_bench.errors import ConfigError

STUDIES = Path(__file__).parent / "studies"
LR_KEY = "paradigm.learning_rate"


@dataclass
class FamilySpec:
    """One family: a paradigm with its method settings, and where to start looking."""

    overrides: list[str] = field(default_factory=list)  # cpt-bench overrides that make the family
    lr: list[float] = field(default_factory=list)  # [low, high]: the first two probes


@dataclass
class StudySpec:
    families: dict[str, FamilySpec] = field(default_factory=dict)
    common: list[str] = field(default_factory=list)  # cpt-bench overrides of every run (probes and seeds)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    calibration_seed: int = 1000  # the probes' seed: outside the study's seeds, never in a mean
    targets: list[float] = field(default_factory=list)  # gains in points; empty: placed automatically
    num_targets: int = 4  # automatic targets
    tolerance: float = 1.5  # points: a target is reached when the seeds' mean gain is this close
    probes: int = 6  # the probe budget of each family
    lr_limits: list[float] = field(default_factory=lambda: [1e-7, 1e-2])
    step: float = 3.0  # the factor between bracketing probes
    jobs: int = 1  # probes run side by side (each with its share of the cores)

    def search(self, family: str) -> Search:
        spec = self.families[family]
        return Search(prior=(spec.lr[0], spec.lr[1]), budget=self.probes, tolerance=self.tolerance / 100,
                      lr_limits=(self.lr_limits[0], self.lr_limits[1]), step=self.step)

    def target_gains(self) -> list[float] | None:
        return [t / 100 for t in self.targets] or None

    def validate(self) -> None:
        if not self.families:
            raise ConfigError("study: no families")
        for name, fam in self.families.items():
            if len(fam.lr) != 2 or not 0 < fam.lr[0] < fam.lr[1]:
                raise ConfigError(f"study: families.{name}.lr must be [low, high] with 0 < low < high, got {fam.lr}")
            if any(o.split("=", 1)[0] in (LR_KEY, "seed") for o in fam.overrides):
                raise ConfigError(f"study: families.{name}.overrides may not set {LR_KEY} or seed (the study does)")
            if not name.replace("_", "").isalnum():
                raise ConfigError(f"study: family name {name!r}: letters, digits and _ only (it names folders)")
        if any(o.split("=", 1)[0].lstrip("+") in (LR_KEY, "seed") for o in self.common):
            raise ConfigError(f"study: common may not set {LR_KEY} or seed (the study does)")
        if not self.seeds or self.calibration_seed in self.seeds:
            raise ConfigError(f"study: calibration_seed {self.calibration_seed} must lie outside seeds {self.seeds}")
        if self.targets and (len(self.targets) < MIN_TARGETS or sorted(self.targets) != list(self.targets)):
            raise ConfigError(f"study: targets {self.targets}: at least {MIN_TARGETS}, ascending")
        if self.num_targets < MIN_TARGETS:
            raise ConfigError(f"study: num_targets {self.num_targets}: at least {MIN_TARGETS}")
        if not self.tolerance > 0 or self.probes < 2 or self.jobs < 1 or not self.step > 1:
            raise ConfigError("study: tolerance > 0, probes >= 2, jobs >= 1 and step > 1 are needed")
        lo, hi = self.lr_limits
        if not 0 < lo < hi or not math.isfinite(hi):
            raise ConfigError(f"study: lr_limits {self.lr_limits}: needs 0 < low < high")


def shipped() -> list[str]:
    return sorted(p.stem for p in STUDIES.glob("*.yaml"))


def load_spec(study: str, settings: list[str] | None = None) -> StudySpec:
    """A shipped study by name, or a YAML file; `settings` (key=value) override its fields."""
    path = Path(study) if study.endswith((".yaml", ".yml")) else STUDIES / f"{study}.yaml"
    if not path.is_file():
        raise ConfigError(f"study {study!r}: no such file; shipped studies: {', '.join(shipped())}")
    try:
        node = OmegaConf.merge(OmegaConf.structured(StudySpec), OmegaConf.load(path),
                               OmegaConf.from_dotlist(settings or []))
        spec: StudySpec = OmegaConf.to_object(node)
    except (OmegaConfBaseException, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"study {study!r}: {' '.join(str(exc).split())}") from exc
    spec.validate()
    return spec


def check_composes(spec: StudySpec) -> None:
    """Every family's runs compose into a valid cpt-bench config (a misspelt override, a wrong
    type, a value out of range) before any probe starts: one line naming the family."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException

    from cpt_bench.config import validate
    from cpt_bench.configstore import register_configs

    register_configs()
    with initialize_config_module(config_module="cpt_bench.conf", version_base="1.3"):
        for name, fam in spec.families.items():
            overrides = [*spec.common, *fam.overrides, f"{LR_KEY}={fam.lr[0]:g}", f"seed={spec.calibration_seed}"]
            try:
                validate(compose("config", overrides=overrides))
            except (HydraException, OmegaConfBaseException, ConfigError) as exc:
                raise ConfigError(f"study family {name!r}: {' '.join(str(exc).split())}") from exc
