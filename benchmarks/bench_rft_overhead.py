"""cpt-bench's RFT stage vs a bare GRPOTrainer script: same model, data, config and steps.

The bare script below is what a user would write by hand: a dataset of prompts, a reward
that grades the answer, GRPOTrainer, train(). The cpt-bench side is the stage as the stage
loop runs it (paradigm.train_stage: dataset, trainer, diagnostics, log forwarding). Each is
run `--repeats` times, alternating, in one process; medians are compared.
Target (issue #3): cpt-bench / bare <= 1.10. Writes bench-results/rft_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--items", type=int, default=256)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets
    import transformers
    from hydra import compose, initialize_config_module
    from transformers import PrinterCallback
    from trl import GRPOTrainer

    from cpt_bench.builtin.tiny import build_tiny_base
    from cpt_bench.config import TinyRecipe
    from cpt_bench.configstore import register_configs
    from cpt_bench.model.loading import load_checkpoint
    from cpt_bench.model.prompts import PromptStyle
    from cpt_bench.paradigms.base import StageContext
    from cpt_bench.paradigms.rft import RFT
    from cpt_bench.tasks import build_benchmark
    from cpt_bench.tasks.grading import grade_exact

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    register_configs()
    with initialize_config_module(config_module="cpt_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["paradigm=rft"])
    bench = build_benchmark(cfg.benchmark)
    style = PromptStyle.for_benchmark(bench, False)
    items = bench.tasks["max"].train()[: args.items]
    paradigm = RFT(cfg.paradigm)

    with tempfile.TemporaryDirectory() as tmp:
        base = str(build_tiny_base(TinyRecipe(), os.environ.get("CPT_BENCH_CACHE")))

        def stage_context(work: Path) -> StageContext:
            return StageContext(stage=1, task_name="max", tasks=bench.tasks, style=style, base_path=base,
                                start_path=base, work_dir=work, save_dir=work / "model", seed=1, use_cpu=True,
                                bf16=False)

        def bare() -> float:
            model, tok = load_checkpoint(base)
            t0 = time.perf_counter()
            data = datasets.Dataset.from_list([{"prompt": style.user_text(ex), "answer": ex.answer} for ex in items])

            def reward(completions, answer, **_):
                return [grade_exact(c, a) for c, a in zip(completions, answer, strict=True)]

            ctx = stage_context(Path(tmp) / "bare")
            trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=paradigm.trainer_args(ctx, [1.0]),
                                  train_dataset=data, processing_class=tok)
            trainer.remove_callback(PrinterCallback)
            trainer.train()
            trainer.save_model(str(ctx.save_dir))  # a cpt-bench stage ends with its checkpoint too
            return time.perf_counter() - t0

        def ours() -> float:
            model, tok = load_checkpoint(base)
            t0 = time.perf_counter()
            ctx = stage_context(Path(tmp) / "ours")
            paradigm.train_stage(model, tok, items, ctx)
            return time.perf_counter() - t0

        times = {"bare": [], "cpt_bench": []}
        for _ in range(args.repeats):
            times["bare"].append(bare())
            times["cpt_bench"].append(ours())
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "items": len(items), "prompts_per_step": paradigm.prompts_per_step,
        "num_generations": cfg.paradigm.num_generations,
        "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "median_seconds": {k: round(v, 2) for k, v in med.items()},
        "ratio": round(med["cpt_bench"] / med["bare"], 3),
        "target_ratio": 1.10,
    }
    result["target_met"] = result["ratio"] <= 1.10
    out = REPO / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "rft_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
