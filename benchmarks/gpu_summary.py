"""Summarise gpu_check.sh's runs: step time, tokens per second, peak GPU memory, and the three
risk checks of gpu_risks.py, as one JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def summarise(out: Path) -> dict:
    gpu = (out / "gpu.txt").read_text().strip().splitlines()[-1] if (out / "gpu.txt").exists() else "unknown"
    result = {"gpu": gpu}
    for name in ("sft", "rft"):
        path = out / f"{name}-stage.json"
        if not path.exists():
            result[name] = None
            continue
        stage = json.loads(path.read_text())
        steps, seconds = stage["train"]["optimizer_steps"], stage["timings"]["train_seconds"]
        log = [json.loads(x) for x in (out / f"{name}-train_log.jsonl").read_text().splitlines()] \
            if (out / f"{name}-train_log.jsonl").exists() else []
        tokens = stage["train"]["generated_tokens"] if name == "rft" else max((r.get("num_tokens", 0) for r in log),
                                                                               default=0)
        result[name] = {"optimizer_steps": steps, "train_seconds": seconds,
                        "seconds_per_step": seconds / steps if steps else None,
                        "tokens_per_second": tokens / seconds if seconds else None,
                        "token_kind": "generated" if name == "rft" else "trained",
                        "peak_gpu_memory_gb": stage["diagnostics"].get("peak_gpu_memory_gb"),
                        "eval_seconds": stage["timings"].get("eval_seconds")}
    for risk in ("kl", "eval", "grpo"):  # gpu_risks.py's checks (absent: it ran out of time or failed)
        path = out / f"risk-{risk}.json"
        result[f"risk_{risk}"] = json.loads(path.read_text()) if path.exists() else None
    result["preflight"] = predictions(out, result)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def predictions(out: Path, result: dict) -> dict:
    """Per part, the preflight's predicted per-GPU total (gpu_preflight.py) beside the peak it
    measured (GiB, torch's max_memory_allocated): the training step for sft, rft and grpo, the
    evaluation step for eval; an out-of-memory error is the measurement for a part that had one."""
    measured = {"sft": (result.get("sft") or {}).get("peak_gpu_memory_gb"),
                "rft": (result.get("rft") or {}).get("peak_gpu_memory_gb"),
                "eval": ((result.get("risk_eval") or {}).get("capped") or {}).get("peak_gb"),
                "grpo": (result.get("risk_grpo") or {}).get("peak_gb")}
    oom = {"eval": "out_of_memory" in ((result.get("risk_eval") or {}).get("capped") or {}),
           "grpo": "out_of_memory" in (result.get("risk_grpo") or {})}
    rows = {}
    for part, peak in measured.items():
        path = out / f"preflight-{part}.json"
        if not path.exists():
            continue
        got = json.loads(path.read_text())
        step = got["evaluation"] if part == "eval" else got["training"]
        rows[part] = {"predicted_gib": round(step["total_gib"], 1), "predicted_verdict": step["verdict"],
                      "measured_peak_gib": peak, "out_of_memory": oom.get(part, False)}
    return rows


if __name__ == "__main__":
    print(json.dumps(summarise(Path(sys.argv[1])), indent=2))
