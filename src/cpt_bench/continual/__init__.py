"""Classic continual-learning methods beside the paradigms (`cl=<name>`), one module each,
found by `methods()`; `peft=olora` (olora.py) uses the same hooks from the `peft` node.

A method module defines its config schema (a `base.MethodSettings` subclass, which its YAML
under conf/cl/ extends as `/cl_<name>_schema@_here_`), what it does to a stage (a `base.Method`
subclass) and `METHOD = MethodSpec(name, schema, build)`. Adding a method is that module and
that YAML; the stage loop and the training step call its hooks without knowing which it is.
One method per run; replay is the `+strategy=replay` axis, which every method composes with.
"""

from __future__ import annotations

import functools

from cpt_bench.continual.base import Method, MethodSpec
from cpt_bench.errors import unknown
from cpt_bench.registry import discover


@functools.cache
def methods() -> dict[str, MethodSpec]:
    """Every method of this package, by name: the `METHOD` of each module that has one."""
    return discover(__name__, __path__, "METHOD")


def method_spec(name: str) -> MethodSpec:
    if name not in methods():
        raise unknown("continual-learning method (cl)", name, methods())
    return methods()[name]


def build_method(cfg) -> Method:
    """The method `cfg.name` names, configured by its (validated) schema node."""
    from cpt_bench.config import as_schema

    return method_spec(cfg.name).build(as_schema(cfg))


def stage_hooks(cfg) -> list[Method]:
    """Every hook set a run's stages call: its `cl` method, then O-LoRA's when `peft=olora`."""
    from cpt_bench.choices import PeftMethod
    from cpt_bench.continual.olora import OLoRA

    hooks = [build_method(cfg.cl)]
    if cfg.peft.name == PeftMethod.olora:
        hooks.append(OLoRA(cfg.peft.orthogonality))
    return hooks
