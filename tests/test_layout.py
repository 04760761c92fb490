"""The package's structure as the README's module map draws it: imports go one way, down the
layers below, with no cycle between modules and no private name imported from another module;
no module is over 450 lines and no function over 80."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cpt_bench"

# each top-level module or sub-package and its layer: a unit imports only from lower layers (and
# from inside itself); the order is the README's "Layout"
LAYERS = {
    "errors": 0, "distributed": 0, "faults": 0, "quiet": 0, "metrics": 0, "registry": 0, "progress": 0,
    "choices": 1,
    "config": 2,
    "tasks": 3, "outputs": 3,
    "model": 4, "report": 4,
    "paradigms": 5,
    "builtin": 6, "continual": 6,
    "run": 7,
    "configstore": 8, "preflight": 8,
    "cli": 9, "slurm": 9, "calibrate": 9,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every `cpt_bench` import in the file, at any depth (lazy ones too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cpt_bench"):
            names = [a.name for a in node.names]
            subs = [f"{node.module}.{n}" for n in names if (PACKAGE.parent / f"{node.module}.{n}".replace(".", "/")
                                                             ).with_suffix(".py").exists()
                    or (PACKAGE.parent / f"{node.module}.{n}".replace(".", "/") / "__init__.py").exists()]
            out += [(s, []) for s in subs] or [(node.module, names)]
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("cpt_bench")]
    return out


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "conf" not in p.relative_to(PACKAGE).parts)
GRAPH = {module_name(p): imports(p) for p in SOURCES}


def test_every_unit_has_a_layer():
    assert {unit(m) for m in GRAPH if unit(m)} <= set(LAYERS), "a new module needs its layer in LAYERS"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_go_down_the_layers(module):
    here = unit(module)
    if not here:
        return
    for target, _ in GRAPH[module]:
        there = unit(target)
        if there and there != here:
            assert LAYERS[there] < LAYERS[here], f"{module} imports {target}: layer {LAYERS[there]} >= {LAYERS[here]}"


def test_no_import_cycle():
    edges = {m: {t for t, _ in targets if t in GRAPH and t != m} for m, targets in GRAPH.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(t):], t]))
            if t not in state:
                visit(t, [*path, t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])


def test_no_private_name_is_imported_from_another_module():
    private = [(m, t, n) for m, targets in GRAPH.items() for t, names in targets for n in names
               if n.startswith("_") and not n.startswith("__")]
    assert not private


def test_modules_and_functions_stay_small():
    long_modules = [(p.name, n) for p in SOURCES if (n := len(p.read_text().splitlines())) > 450]
    long_functions = [(p.name, node.name, node.end_lineno - node.lineno + 1) for p in SOURCES
                      for node in ast.walk(ast.parse(p.read_text()))
                      if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                      and node.end_lineno - node.lineno + 1 > 80]
    assert not long_modules and not long_functions


def test_every_package_under_src_ships_in_the_wheel():
    """pyproject lists its packages by hand (cpt_bench.conf is mapped from conf/, which discovery
    cannot do): a package missing there builds a wheel whose `cpt-bench` cannot start."""
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(d.relative_to(PACKAGE.parent).parts) for d in [PACKAGE, *PACKAGE.rglob("*")]
               if d.is_dir() and any(d.glob("*.py"))}
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - on_disk == {"cpt_bench.conf"}
