"""The schema registered in Hydra's ConfigStore: the run's `Config` and each group's node.

Group schemas are stored as root configs (not groups), so `--help` lists only real choices;
each YAML extends its schema with `- /<group>_schema@_here_` in its defaults list. Paradigm
and continual-learning method nodes come from their registries (`paradigm_<name>_schema`,
`cl_<name>_schema`), so a new paradigm or method needs no edit here.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from cpt_bench.config import GROUP_SCHEMAS, Config
from cpt_bench.continual import methods
from cpt_bench.paradigms import paradigms


def register_configs() -> None:
    """Store every schema node (idempotent: the same nodes under the same names)."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    nodes = {**GROUP_SCHEMAS, **{f"paradigm_{name}_schema": spec.schema for name, spec in paradigms().items()},
             **{f"cl_{name}_schema": spec.schema for name, spec in methods().items()}}
    for name, node in nodes.items():
        cs.store(name=name, node=node)
