"""Every `cpt-bench ...` command of the README and docs/ composes, as `cpt-bench ... --cfg job`
would: no documented command rots when a key, a group or a preset is renamed."""

from __future__ import annotations

import re
import shlex

import pytest

from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# written with a placeholder for the reader to fill in: not a command as it stands
PLACEHOLDER = re.compile(r"<[^>]*>|\.\.\.|\$\(|\bD/")
FLAGS = {"-m", "--multirun", "--cfg", "job", "--help", "--info", "--resolve"}


def commands(text: str) -> list[str]:
    """`cpt-bench` command lines: in code blocks (continued over `\\`), and in inline code."""
    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("cpt-bench "):
                found.append(line.split("  #")[0].split(" # ")[0].strip())
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    found += [c for c in re.findall(r"`(cpt-bench [^`]+)`", prose)]
    return [c for c in found if not PLACEHOLDER.search(c)]


DOCUMENTED = sorted({(page.name, c) for page in PAGES for c in commands(page.read_text())})
# each distinct command once, with the pages that show it (a command shown twice composes once)
PAGES_OF = {c: sorted({p for p, d in DOCUMENTED if d == c}) for _, c in DOCUMENTED}


def test_the_pages_hold_commands():
    assert len(DOCUMENTED) > 40 and {p for p, _ in DOCUMENTED} >= {"README.md", "runs.md", "experiments.md"}


def variants(args: list[str]) -> list[list[str]]:
    """The overrides of each run a command starts: for a sweep, each value of every swept key once."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(args)
    values = [list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.input_line] for o in parsed]
    sweep_keys = [o.key_or_group for o in parsed]
    count = max((len(v) for v in values), default=1)
    return [[v[i % len(v)] if len(v) == 1 else f"{k}={v[i % len(v)]}" for k, v in zip(sweep_keys, values)]
            for i in range(count)]


@pytest.mark.parametrize("pages,command", [(p, c) for c, p in sorted(PAGES_OF.items())],
                         ids=[f"{', '.join(p)}: {c}" for c, p in sorted(PAGES_OF.items())])
def test_a_documented_command_composes(pages, command):
    from hydra import compose, initialize_config_module

    from cpt_bench.configstore import register_configs

    args = [a for a in shlex.split(command)[1:] if a not in FLAGS]
    register_configs()
    for overrides in variants(args):
        with initialize_config_module(config_module="cpt_bench.conf", version_base="1.3"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
        assert cfg.paradigm.name and cfg.benchmark.name, (pages, command)
