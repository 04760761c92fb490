"""HF generation against vLLM's CPU build on the SmolLM2 study's evaluation, side by side in one
run (`make bench ARGS=vllm`, in make test-vllm's environment, `.venv-vllm`).

On format-aligned SmolLM2-135M-Instruct with the SmolLM2 study's prompts and test sets
(`+experiment=smollm2_study`), one evaluation of every test item (greedy, the study's
`eval.max_new_tokens`), alternated HF / vLLM and repeated, medians reported:

  hf        the product's evaluation through Hugging Face `generate` (`evaluate_tasks`, the study's
            `eval.batch_size`), in the study's dtype, `auto`: bf16 (float32 weights under bf16
            autocast) on a CPU with native bf16, float32 elsewhere (emulated bf16 is many times slower)
  vllm      the same items through `VLLMEngine` in the same dtype, generation only, and the
            engine's start (what each evaluation step of a run pays once)
  ratio     HF's seconds over vLLM's, without and with the engine's start

Also the items whose graded answer differs between the two (in bf16 the two are not
bit-identical; `make test-vllm` compares them in fp32). Aim (issue 33): >= 1.7x on a stage's
evaluation. Writes bench-results/vllm.json.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_smollm2 import REPO, Setting  # noqa: E402

REPEATS = 3


def main() -> int:
    from cpt_bench.model.loading import resolve_precision
    from cpt_bench.model.vllm_engine import VLLMEngine
    from cpt_bench.outputs.provenance import cpu_fingerprint
    from cpt_bench.run.steps import evaluate_sets

    setting = Setting("auto")
    dtype = "bf16" if resolve_precision("auto").trainer_bf16 else "fp32"  # vLLM's own dtype, as the run's
    cfg, sets, steps = setting.cfg, setting.test_sets, setting.steps
    items = sum(len(v) for v in sets.values())
    rows = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        hf = evaluate_sets(cfg, steps.model, steps.processing_class, setting.benchmark, sets, setting.style)
        hf_s = time.perf_counter() - start
        start = time.perf_counter()
        engine = VLLMEngine(setting.base, dtype=dtype)
        start_s = time.perf_counter() - start
        start = time.perf_counter()
        vl = evaluate_sets(cfg, None, steps.processing_class, setting.benchmark, sets, setting.style, engine=engine)
        vllm_s = time.perf_counter() - start
        engine.close()
        differ = sum(a["score"] != b["score"] for n in hf for a, b in zip(hf[n], vl[n]))
        rows.append({"hf_s": hf_s, "vllm_s": vllm_s, "engine_start_s": start_s, "scores_differ": differ})
        print(f"hf {hf_s:.1f} s, vllm {vllm_s:.1f} s (+ {start_s:.1f} s start), {differ} of {items} scores differ",
              flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    result = {"machine": f"{cpu_fingerprint()}, {os.cpu_count()} cores, {platform.platform()}", "dtype": dtype,
              "items": items,
              "repeats": REPEATS,
              "median": med, "ratio": med["hf_s"] / med["vllm_s"],
              "ratio_with_start": med["hf_s"] / (med["vllm_s"] + med["engine_start_s"]), "rows": rows}
    out = REPO / "bench-results" / "vllm.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"SmolLM2 study evaluation, {items} items, medians of {REPEATS}: HF {med['hf_s']:.1f} s, vLLM "
          f"{med['vllm_s']:.1f} s + {med['engine_start_s']:.1f} s start: {result['ratio']:.2f}x "
          f"({result['ratio_with_start']:.2f}x with the start) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
