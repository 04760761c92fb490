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
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    print(json.dumps(summarise(Path(sys.argv[1])), indent=2))
