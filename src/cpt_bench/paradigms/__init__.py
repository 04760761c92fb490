"""Paradigms: how one stage trains the model on one task, one module each, found by `paradigms()`.

A paradigm module defines its config schema (a `base.StageTraining` subclass, which its YAML
under conf/paradigm/ extends as `/paradigm_<name>_schema@_here_`), its adapter over a TRL
trainer (`base.Paradigm`) and `PARADIGM = ParadigmSpec(name, schema, build)`. Adding a
paradigm is that module and that YAML; nothing else is edited. TRL is imported by a paradigm
only when it trains, so finding them all stays cheap.
"""

from __future__ import annotations

import functools

from cpt_bench.errors import unknown
from cpt_bench.paradigms.base import ParadigmSpec
from cpt_bench.registry import discover


@functools.cache
def paradigms() -> dict[str, ParadigmSpec]:
    """Every paradigm of this package, by name: the `PARADIGM` of each module that has one."""
    return discover(__name__, __path__, "PARADIGM")


def paradigm_spec(name: str) -> ParadigmSpec:
    if name not in paradigms():
        raise unknown("paradigm", name, paradigms())
    return paradigms()[name]


def build_paradigm(cfg, world_size: int = 1):
    """The paradigm `cfg.name` names, configured by its (validated) schema node, for a stage
    that trains over `world_size` processes (the launcher's, not this process's environment)."""
    return paradigm_spec(cfg.name).build(cfg, world_size)
