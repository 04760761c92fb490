"""cl=none: the paradigm alone (the default)."""

from __future__ import annotations

from dataclasses import dataclass

from cpt_bench.continual.base import Method, MethodSettings, MethodSpec


@dataclass
class NoMethodSettings(MethodSettings):
    name: str = "none"


METHOD = MethodSpec("none", NoMethodSettings, lambda cfg: Method())
