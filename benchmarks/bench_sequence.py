"""Benchmarks of whole sequences on the embedded default, run through the CLI as a user would.

Scenarios (the first three by default, or name some):
  sft      `cpt-bench`                          target: <= 300 s, evaluation <= 25 % of it
  rft      `cpt-bench paradigm=rft`             target: <= 600 s
  rft_rif  `cpt-bench paradigm=rft filter=rif`  RIF's rollout cost vs the training it saves
  smollm2_cpu  `cpt-bench +experiment=smollm2_cpu`  the real-LM CPU profile (~15 min on 2 cores;
               `make bench ARGS=smollm2` is bench_smollm2.py, fp32 vs bf16 piece by piece)
A rebuild of the embedded base model from its recipe is measured first, in a fresh cache (what
`make tiny-base` or `model.shipped=false` costs; target <= 180 s; the runs load the shipped
one), and so is the SmolLM2 conversion when that scenario runs.
Writes bench-results/sequence.json (sequence-<names>.json for a chosen set).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = {
    "sft": ([], 300),
    "rft": (["paradigm=rft"], 600),
    "rft_rif": (["paradigm=rft", "filter=rif"], None),
    "smollm2_cpu": (["+experiment=smollm2_cpu"], None),
}
DEFAULT = ["sft", "rft", "rft_rif"]


def run_scenario(name: str, cache: Path, tmp: Path) -> dict:
    overrides, target = SCENARIOS[name]
    run_dir = tmp / name
    exe = Path(sys.executable).with_name("cpt-bench")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    t0 = time.perf_counter()
    res = subprocess.run([str(exe), *overrides, f"model.cache_dir={cache}", f"hydra.run.dir={run_dir}"],
                         env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    info = json.loads((run_dir / "run.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    c = info["compute"]
    out = {
        "command": "cpt-bench " + " ".join(overrides),
        "wall_seconds": round(wall, 1),
        "train_seconds": round(c["train_seconds"], 1),
        "eval_seconds": round(c["eval_seconds"], 1),
        "eval_share_of_wall": round(c["eval_seconds"] / wall, 3),
        "rollout_seconds": round(c["rollout_seconds"], 1),
        "optimizer_steps": c["optimizer_steps"],
        "generated_tokens": c["generated_tokens"],
        "final_avg_acc": metrics["final_avg_acc"],
        "gain": metrics["gain"],
        "forgetting": metrics["forgetting"],
        "general_delta": metrics["general_delta"],
        "target_wall_seconds": target,
    }
    if name == "rft_rif":
        stages = [json.loads(p.read_text()) for p in sorted((run_dir / "stages").glob("*/stage.json"))]
        filt = [s["filter"] for s in stages if "filter" in s]
        out["rif_kept_fraction_per_task"] = {s["trained_task"]: round(s["filter"]["kept_fraction"], 3)
                                             for s in stages if "filter" in s}
        out["rif_items_kept"] = sum(f["kept"] for f in filt)
        out["rif_items_total"] = sum(f["items"] for f in filt)
    print((run_dir / "summary.txt").read_text())
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(SCENARIOS)} (default: {', '.join(DEFAULT)})")
    names = parser.parse_args(argv).scenarios or DEFAULT
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}")
    sys.path.insert(0, str(REPO / "src"))
    from cpt_bench.builtin.smollm2 import build_smollm2
    from cpt_bench.builtin.tiny import build_tiny_base
    from cpt_bench.config import TinyRecipe

    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        t0 = time.perf_counter()
        build_tiny_base(TinyRecipe(), cache, shipped=False)
        result["base_model_build_seconds"] = round(time.perf_counter() - t0, 1)
        if "smollm2_cpu" in names:
            t0 = time.perf_counter()
            build_smollm2(cache)
            result["smollm2_conversion_seconds"] = round(time.perf_counter() - t0, 1)
        for name in names:
            result[name] = run_scenario(name, cache, Path(tmp))
    if "rft" in result and "rft_rif" in result:
        rft, rif = result["rft"], result["rft_rif"]
        result["rif_saving"] = {
            "train_seconds_saved": round(rft["train_seconds"] - rif["train_seconds"], 1),
            "rollout_seconds_spent": rif["rollout_seconds"],
            "optimizer_steps_saved": rft["optimizer_steps"] - rif["optimizer_steps"],
            "net_wall_seconds_saved": round(rft["wall_seconds"] - rif["wall_seconds"], 1),
        }
    ok = result["base_model_build_seconds"] <= 180
    for name in names:
        r, target = result[name], SCENARIOS[name][1]
        ok &= target is None or r["wall_seconds"] <= target
    if "sft" in result:
        ok &= result["sft"]["eval_share_of_wall"] <= 0.25
    result["targets_met"] = bool(ok)
    out = REPO / "bench-results"
    out.mkdir(exist_ok=True)
    stem = "sequence" if names == DEFAULT else "sequence-" + "-".join(names)  # keep the default's file
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
