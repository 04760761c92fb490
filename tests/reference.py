"""Pinned reference matrices: a fixed-seed run's `matrix.csv`, compared exactly.

torch is pinned, so on the CPU a reference was made on, the same command gives the same
bytes; a silent change of results (a changed default, a reordered draw, another prompt)
fails the test instead of passing a loose bound. Float results of CPU training differ
between CPU kinds (model and result-changing flags, `cpu_fingerprint`), so the references are
kept per kind, one folder each (`tests/reference/<kind>/`, its `cpu.json` naming it); on a CPU
kind without one the comparison is skipped with that reason (visible in pytest's summary).

Make this CPU kind's, or regenerate them after a change that is meant to move results (then on
every kind kept here: the others go stale and fail):

    make reference        # = CPT_BENCH_UPDATE_REFERENCE=1 pytest -k pinned_reference
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from cpt_bench.outputs.provenance import cpu_fingerprint

REFERENCE_DIR = Path(__file__).parent / "reference"


def kind_folder(fingerprint: str) -> Path:
    """`tests/reference/<kind>/`, named after the CPU fingerprint (e.g. amd-epyc-avx2-fma)."""
    return REFERENCE_DIR / re.sub(r"[^a-z0-9_]+", "-", fingerprint.lower()).strip("-")


def check_reference(name: str, run_dir: Path) -> None:
    """Assert `run_dir/matrix.csv` equals this CPU kind's pinned `<name>.csv` byte for byte."""
    matrix = (run_dir / "matrix.csv").read_text()
    here = cpu_fingerprint()
    folder = kind_folder(here)
    if os.environ.get("CPT_BENCH_UPDATE_REFERENCE"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.csv").write_text(matrix)
        (folder / "cpu.json").write_text(json.dumps({"cpu": here}, indent=2) + "\n")
        return
    if not (folder / f"{name}.csv").exists():
        kinds = sorted(json.loads(p.read_text())["cpu"] for p in REFERENCE_DIR.glob("*/cpu.json"))
        pytest.skip(f"no reference {name} for this CPU ({here}); kept for: {'; '.join(kinds)}. "
                    "`make reference` makes this kind's")
    assert matrix == (folder / f"{name}.csv").read_text(), \
        f"{name}: the fixed-seed matrix changed on {here} (if intended: make reference on each kind)"
