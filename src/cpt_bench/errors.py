"""The errors a user sees: each is reported as one line (`cpt-bench: error: ...`, exit 2)."""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad user input, reported as one line before any expensive work."""


class RunDirInUse(ConfigError):
    """Another controller holds the run directory (run/runlock.py): nothing in it is this
    command's to touch."""


class DataError(ConfigError):
    """A task's data that is missing, too small or too broken to trust; raised while the
    splits are drawn, before any model is built (a ConfigError, so the CLI exits 2 with it)."""


class ModelLoadError(ConfigError):
    """A checkpoint that cpt-bench cannot use as it stands."""


class TrainingDiverged(RuntimeError):
    """A non-finite loss, gradient norm or reward: the stage stops before its checkpoint is
    saved; the stages before it stay complete and resumable."""


class ItemsMisaligned(RuntimeError):
    """Two evaluations of one task whose records do not hold the same test items at the same
    positions: per-item comparisons (flips.csv) would count the wrong pairs, so none is made."""


class ReportError(Exception):
    """`cpt-bench-report` was given nothing it can compare."""


def unknown(what: str, name: object, registry) -> ConfigError:
    """The one wording for a name missing from a registry: what, the name, the valid keys."""
    return ConfigError(f"unknown {what} {name!r}; available: {', '.join(map(str, registry))}")
