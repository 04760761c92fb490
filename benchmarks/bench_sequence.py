"""Benchmark of the embedded default: `cpt-bench` (seven-task SFT) end to end, as a user runs it.

Measures, on this machine:
  * the one-off build of the embedded base model (fresh cache),
  * the wall time of the whole seven-task sequence through the CLI (warm cache),
  * the share of that wall time spent in evaluation (8 passes over 10 tasks).
Targets (issue #2): sequence <= 300 s on 2 CPU cores; evaluation <= 25 % of it.
Writes bench-results/sequence.json. Extra CLI overrides may be passed as arguments.
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


def main(extra: list[str]) -> int:
    exe = Path(sys.executable).with_name("cpt-bench")
    with tempfile.TemporaryDirectory() as tmp:
        cache, run_dir = Path(tmp) / "cache", Path(tmp) / "run"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}

        sys.path.insert(0, str(REPO / "src"))
        from cpt_bench.models import TinyRecipe, build_tiny_base

        t0 = time.perf_counter()
        build_tiny_base(TinyRecipe(), cache)
        build_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        res = subprocess.run([str(exe), f"model.cache_dir={cache}", f"hydra.run.dir={run_dir}", *extra],
                             env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            print(res.stdout[-3000:], res.stderr[-3000:])
            return 1
        info = json.loads((run_dir / "run.json").read_text())
        metrics = json.loads((run_dir / "metrics.json").read_text())
        stages = info["timings"]["stages"]
        eval_s = sum(s.get("eval_seconds", 0) for s in stages.values())
        train_s = sum(s.get("train_seconds", 0) for s in stages.values())
        result = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "base_model_build_seconds": round(build_s, 1),
            "sequence_wall_seconds": round(wall, 1),
            "in_process_seconds": info["timings"]["total_seconds"],
            "train_seconds": round(train_s, 1),
            "eval_seconds": round(eval_s, 1),
            "eval_share_of_wall": round(eval_s / wall, 3),
            "stages": len(stages) - 1,
            "final_avg_acc": metrics["final_avg_acc"],
            "forgetting": metrics["forgetting"],
            "targets_met": wall <= 300 and eval_s / wall <= 0.25,
        }
        print((run_dir / "summary.txt").read_text())
    out = REPO / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "sequence.json").write_text(json.dumps(result, indent=2) + "\n")
    width = max(map(len, result))
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
    return 0 if result["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
