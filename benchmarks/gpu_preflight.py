"""The preflight's predictions for the parts of benchmarks/gpu_check.sh, written beside the peaks
the parts measure (gpu_summary.py puts them side by side), so a lent GPU calibrates the estimate.

    python benchmarks/gpu_preflight.py OUT_DIR     (writes OUT_DIR/preflight-<part>.json)

Each part's config is the one gpu_check.sh runs (the sft and rft stages: Qwen2.5-0.5B's shape,
the same sizes) or the closest cpt-bench config of a gpu_risks.py check: `eval` the paper's
evaluation batch (64 x 1,024 new tokens at the pixel cap), `grpo` one unsharded GRPO step of the
7B with the KL reference and 0.3 of an 80 GB card held for vLLM. No model is built.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

STAGE = ["model=qwen2_5_0_5b_instruct", "model.dtype=bf16", "launcher=torchrun", "launcher.nproc_per_node=1",
         "deepspeed=zero3", "logger=none", "order.tasks=[add]", "benchmark.train_size=256", "benchmark.test_size=64",
         "eval.general=false", "eval.batch_size=64"]
CARD = ["preflight.gpus=1", "preflight.gpu_memory_gb=80"]  # gpu_risks.py caps its process to an 80 GB card
PARTS = {  # as gpu_check.sh runs them
    "sft": [*STAGE, "paradigm=sft", "paradigm.per_device_batch_size=8", "paradigm.epochs=1",
            "paradigm.max_length=128"],
    "rft": [*STAGE, "paradigm=rft", "paradigm.per_device_batch_size=64", "paradigm.max_steps=8",
            "paradigm.max_completion_length=32"],
    "eval": ["+experiment=paper_rft", "eval.batch_size=64", "eval.max_new_tokens=1024", *CARD],
    "grpo": ["+experiment=paper_rft", "deepspeed=none", "paradigm.use_vllm=true",
             "paradigm.vllm_gpu_memory_utilization=0.3", "paradigm.gradient_accumulation_steps=16",
             "paradigm.vllm_max_model_length=null", *CARD],
}


def main(out: Path) -> None:
    from hydra import compose, initialize_config_module

    from cpt_bench.configstore import register_configs
    from cpt_bench.preflight import render, run_preflight

    register_configs()
    out.mkdir(parents=True, exist_ok=True)
    for part, overrides in PARTS.items():
        with initialize_config_module(config_module="cpt_bench.conf", version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        result = run_preflight(cfg, out)
        print(f"--- {part}\n{render(result)}", flush=True)
        (out / f"preflight-{part}.json").write_text(json.dumps({**asdict(result), "fits": result.fits}, indent=2,
                                                               default=str) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
