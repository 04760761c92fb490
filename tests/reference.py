"""Pinned reference matrices: a fixed-seed run's `matrix.csv`, compared exactly.

torch is pinned, so on the CPU a reference was made on, the same command gives the same
bytes; a silent change of results (a changed default, a reordered draw, another prompt)
fails the test instead of passing a loose bound. Float results of CPU training can differ
between CPU kinds (model and result-changing flags, `cpu_fingerprint`), so the references are
kept per kind, one folder each (`tests/reference/<kind>/`, its `cpu.json` naming it). The toy
runs pinned here gave the same bytes on every kind made so far (AMD EPYC with and without
AVX-512, Intel Xeon with AVX-512), so a kind without a folder of its own is compared with the
kept kinds' reference where they all agree, and fails (never skips) where they do not.

Make this CPU kind's, or regenerate them after a change that is meant to move results (then on
every kind kept here: the others go stale and fail):

    make reference        # = CPT_BENCH_UPDATE_REFERENCE=1 pytest -k pinned_reference
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from cpt_bench.outputs.provenance import cpu_fingerprint

REFERENCE_DIR = Path(__file__).parent / "reference"


def kind_folder(fingerprint: str) -> Path:
    """`tests/reference/<kind>/`, named after the CPU fingerprint (e.g. amd-epyc-avx2-fma)."""
    return REFERENCE_DIR / re.sub(r"[^a-z0-9_]+", "-", fingerprint.lower()).strip("-")


def expected_matrix(name: str, fingerprint: str, reference_dir: Path = REFERENCE_DIR) -> tuple[str, str]:
    """The pinned `<name>.csv` for this CPU kind, and where it came from: the kind's own folder,
    or else the kept kinds' reference where every kind kept agrees (AssertionError otherwise)."""
    own = reference_dir / kind_folder(fingerprint).name / f"{name}.csv"
    if own.exists():
        return own.read_text(), f"this CPU kind's ({fingerprint})"
    kept = {json.loads((p.parent / "cpu.json").read_text())["cpu"]: p.read_text()
            for p in sorted(reference_dir.glob(f"*/{name}.csv"))}
    assert kept, f"no reference {name} on any CPU kind: `make reference` makes this kind's"
    assert len(set(kept.values())) == 1, (
        f"no reference {name} for this CPU ({fingerprint}) and the kept kinds differ "
        f"({'; '.join(kept)}): `make reference` makes this kind's")
    return next(iter(kept.values())), f"the one every kept kind gave ({'; '.join(kept)})"


def check_reference(name: str, run_dir: Path) -> None:
    """Assert `run_dir/matrix.csv` equals the pinned `<name>.csv` byte for byte."""
    matrix = (run_dir / "matrix.csv").read_text()
    here = cpu_fingerprint()
    if os.environ.get("CPT_BENCH_UPDATE_REFERENCE"):
        folder = kind_folder(here)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.csv").write_text(matrix)
        (folder / "cpu.json").write_text(json.dumps({"cpu": here}, indent=2) + "\n")
        return
    expected, source = expected_matrix(name, here)
    assert matrix == expected, (
        f"{name}: the fixed-seed matrix on {here} differs from {source} (if a change meant to move "
        "results, or this CPU kind gives other bytes: make reference on each kind)")
