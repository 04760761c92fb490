"""Pinned reference matrices: a fixed-seed run's `matrix.csv`, compared exactly.

torch is pinned, so on the CPU a reference was made on, the same command gives the same
bytes; a silent change of results (a changed default, a reordered draw, another prompt)
fails the test instead of passing a loose bound. Float results of CPU training differ
between CPU models, so each reference names the CPU it was made on; on another CPU the
comparison is skipped with that reason (visible in pytest's summary).

Regenerate on this machine, after a change that is meant to move results:

    make reference        # = CPT_BENCH_UPDATE_REFERENCE=1 pytest -k pinned_reference
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cpt_bench.outputs.provenance import cpu_fingerprint

REFERENCE_DIR = Path(__file__).parent / "reference"
def check_reference(name: str, run_dir: Path) -> None:
    """Assert `run_dir/matrix.csv` equals the pinned `tests/reference/<name>.csv` byte for byte."""
    matrix = (run_dir / "matrix.csv").read_text()
    csv_path, meta_path = REFERENCE_DIR / f"{name}.csv", REFERENCE_DIR / f"{name}.json"
    if os.environ.get("CPT_BENCH_UPDATE_REFERENCE"):
        REFERENCE_DIR.mkdir(exist_ok=True)
        csv_path.write_text(matrix)
        meta_path.write_text(json.dumps({"cpu": cpu_fingerprint()}, indent=2) + "\n")
        return
    made_on = json.loads(meta_path.read_text())["cpu"]
    if made_on != cpu_fingerprint():
        pytest.skip(f"reference {name} was made on {made_on}, this CPU is {cpu_fingerprint()}: run `make reference`")
    assert matrix == csv_path.read_text(), f"{name}: the fixed-seed matrix changed (if intended: make reference)"
