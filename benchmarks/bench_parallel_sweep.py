"""The 20-run `+experiment=pareto` sweep, one sequence after another vs two at a time with
`hydra/launcher=joblib` (one torch thread each), on this machine, through the CLI.

Both sweeps use the same prebuilt base model; W&B is off (logger=none) so only the runs are
timed. Writes bench-results/parallel_sweep.json: wall seconds of each, the speed-up, and
whether the two sweeps' metrics agree (they need not be bit-identical: a sequential run uses
torch's default thread count, a parallel one a single thread).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SWEEP = ["-m", "+experiment=pareto", "logger=none"]
WAYS = {"sequential": [], "joblib_2_jobs": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}


def sweep(name: str, extra: list[str], cache: Path, out: Path) -> dict:
    exe = Path(sys.executable).with_name("cpt-bench")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    t0 = time.perf_counter()
    res = subprocess.run([str(exe), *SWEEP, *extra, f"model.cache_dir={cache}", f"hydra.sweep.dir={out / name}"],
                         env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{res.stderr[-3000:]}")
    metrics = {p.parent.name: json.loads(p.read_text()) for p in (out / name).glob("*/metrics.json")}
    print(f"{name}: {wall:.0f} s, {len(metrics)} runs", flush=True)
    return {"wall_seconds": round(wall, 1), "runs": len(metrics), "metrics": metrics}


def main() -> int:
    sys.path.insert(0, str(REPO / "src"))
    from cpt_bench.builtin.tiny import build_tiny_base
    from cpt_bench.config import TinyRecipe

    with tempfile.TemporaryDirectory() as tmp:
        cache, out = Path(tmp) / "cache", Path(tmp) / "sweeps"
        build_tiny_base(TinyRecipe(), cache)
        results = {name: sweep(name, extra, cache, out) for name, extra in WAYS.items()}
    seq, par = results["sequential"], results["joblib_2_jobs"]
    keys = ["final_avg_acc", "gain", "forgetting", "general_delta"]
    diffs = [abs(seq["metrics"][run][k] - par["metrics"][run][k]) for run in seq["metrics"] for k in keys
             if seq["metrics"][run].get(k) is not None]
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "sequential_seconds": seq["wall_seconds"], "joblib_2_jobs_seconds": par["wall_seconds"],
        "speedup": round(seq["wall_seconds"] / par["wall_seconds"], 2),
        "runs": seq["runs"], "largest_metric_difference": round(max(diffs), 4) if diffs else None,
    }
    path = REPO / "bench-results" / "parallel_sweep.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({**summary, "results": results}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
