"""The real-LM path on this CPU, float32 against bf16 side by side in one run (`make bench ARGS=smollm2`).

On format-aligned SmolLM2-135M-Instruct with the SmolLM2 study's prompts and settings
(`+experiment=smollm2_study`), each figure in both precisions (`model.dtype=fp32` and `bf16`,
which on a CPU is float32 weights under bf16 autocast, `loading.Precision`), alternated and
repeated, medians reported:

  generation  greedy, `BATCHES` prompts at a time, exactly `NEW_TOKENS` new tokens: generated
              tokens/s and all tokens (prompt + generated) per second, beside the forward bound:
              one forward over the same sequences, tokens/s
  evaluation  one evaluation of the study's test sets through the product's step (seconds)
  sft, grpo   seconds per optimizer step of the study's paradigms through the product's step
              (`LocalSteps.train`; GRPO with and without the KL term, and with
              `paradigm.generation_steps=4`)
  run share   evaluation's share of a study run, from the figures above and the study's shape
  learning    whether bf16 still learns: the study's first stage (`add`, 8 optimizer steps) from the
              base in both precisions, SFT (lr 5e-6) and GRPO (lr 2e-5), its mean training loss and
              the accuracy on the trained task's 64 test items before and after (`--learning`
              runs only this part; its figures do not depend on the machine's load)

Targets (issue 18): evaluation >= 3x and a GRPO step >= 2.5x faster in bf16 than in float32,
generation >= 40 % of the bf16 forward bound. Writes bench-results/smollm2.json.
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

import torch

REPO = Path(__file__).resolve().parents[1]
STUDY = ["+experiment=smollm2_study", "logger=none"]
BATCHES = (16, 64)
NEW_TOKENS = 48
PRECISIONS = ("fp32", "bf16")


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from cpt_bench.configstore import register_configs

    register_configs()
    with initialize_config_module(config_module="cpt_bench.conf", version_base="1.3"):
        return hydra_compose("config", overrides=[*STUDY, *overrides])


class Setting:
    """The study's benchmark, prompts and steps in one precision (and optional overrides)."""

    def __init__(self, dtype: str, *overrides: str):
        from cpt_bench.builtin import base_model_path
        from cpt_bench.model.prompts import PromptStyle
        from cpt_bench.run.plan import plan
        from cpt_bench.run.steps import LocalSteps

        self.cfg = compose(f"model.dtype={dtype}", *overrides)
        planned = plan(self.cfg)
        self.benchmark, self.order = planned.benchmark, planned.order
        self.style = PromptStyle.for_benchmark(self.benchmark, self.cfg.cot)
        self.test_sets = self.benchmark.test_sets(self.order, list(self.benchmark.general))
        self.base = base_model_path(self.cfg.model)
        self.steps = LocalSteps(self.cfg, benchmark=self.benchmark, style=self.style, test_sets=self.test_sets,
                                paradigm=planned.paradigm)
        self.steps.load(self.base)


def generation(setting: Setting, batch: int) -> dict:
    """Generated and processed tokens/s of `batch` prompts at exactly NEW_TOKENS new tokens, and
    the forward bound over the same sequences."""
    from cpt_bench.model.loading import run_precision
    from cpt_bench.model.prompts import encode_prompts, format_prompt

    model, tok = setting.steps.model, setting.steps.processing_class
    items = [ex for items in setting.test_sets.values() for ex in items][:batch]
    enc = encode_prompts(tok, [format_prompt(tok, setting.style.user_text(ex)) for ex in items], None, "cpu")
    model.eval()
    with torch.no_grad(), run_precision(setting.cfg).inference():
        start = time.perf_counter()
        out = model.generate(**enc, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        gen = time.perf_counter() - start
        start = time.perf_counter()
        model(input_ids=out, attention_mask=torch.ones_like(out))
        fwd = time.perf_counter() - start
    return {"generated_tok_s": batch * NEW_TOKENS / gen, "processed_tok_s": out.numel() / gen,
            "forward_tok_s": out.numel() / fwd, "prompt_tokens": enc["input_ids"].shape[1]}


def evaluation_seconds(setting: Setting) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        return setting.steps.evaluate(Path(tmp) / "eval").seconds


def step_seconds(setting: Setting) -> list[float]:
    """Seconds of each optimizer step of stage 1 after the first (which also builds the trainer)."""
    from cpt_bench.run.steps import StageSpec, stage_items

    task, items = stage_items(setting.benchmark, setting.order, setting.cfg.schedule, 0, setting.cfg.replay)[0]
    ends: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = StageSpec(stage=1, task=task, items=items, base_path=setting.base, start_path=setting.base,
                         dir=Path(tmp) / "stage", seed=1)
        spec.dir.mkdir()
        setting.steps.train(spec, items, lambda step, total, logs: ends.append(time.perf_counter())
                            if "loss" in logs else None)
    setting.steps.load(setting.base)  # the next measurement starts from the base again
    return [b - a for a, b in zip(ends, ends[1:])]


def learning(dtype: str, paradigm: str, lr: str, seed: int) -> dict:
    """One stage of the study from the base: the trainer's mean loss and the trained task's accuracy."""
    from transformers import set_seed

    from cpt_bench.run.steps import StageSpec, stage_items

    set_seed(seed)
    setting = Setting(dtype, f"paradigm={paradigm}", f"paradigm.learning_rate={lr}", "eval.general=false",
                      f"seed={seed}")
    task, items = stage_items(setting.benchmark, setting.order, setting.cfg.schedule, 0, setting.cfg.replay)[0]
    setting.steps.test_sets = {task: setting.test_sets[task]}
    with tempfile.TemporaryDirectory() as tmp:
        before = setting.steps.evaluate(Path(tmp) / "before").accuracy[task]
        spec = StageSpec(stage=1, task=task, items=items, base_path=setting.base, start_path=setting.base,
                         dir=Path(tmp) / "stage", seed=seed + 1)  # the stage loop's seed for stage 1
        spec.dir.mkdir()
        trained = setting.steps.train(spec, items, lambda step, total, logs: None)
        after = setting.steps.evaluate(Path(tmp) / "after").accuracy[task]
    losses = [row["loss"] for row in trained.log if "loss" in row]
    return {"task": task, "optimizer_steps": trained.train.optimizer_steps,
            "mean_loss": round(statistics.fmean(losses), 4), "accuracy_before": round(before, 4),
            "accuracy_after": round(after, 4), **({"mean_reward": round(trained.diagnostics["reward"], 4)}
                                                 if "reward" in trained.diagnostics else {})}


def learning_check(seeds: int, paradigms: list[str]) -> dict:
    """Per paradigm and precision, each seed's stage and the mean accuracy after it."""
    out = {}
    for name, paradigm, lr in (("sft", "sft_smollm2", "5e-6"), ("grpo", "rft_smollm2", "2e-5")):
        if name not in paradigms:
            continue
        runs = {p: [learning(p, paradigm, lr, seed) for seed in range(seeds)] for p in PRECISIONS}
        out[f"{name} lr {lr}"] = {p: {"runs": r, "mean_accuracy_after": round(statistics.fmean(x["accuracy_after"]
                                                                                            for x in r), 4)}
                                  for p, r in runs.items()}
    return out


def median(rows: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in rows), 1)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="generation measurements per batch and precision")
    parser.add_argument("--learning", action="store_true", help="only the learning check (fp32 vs bf16 stage)")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds of the learning check")
    parser.add_argument("--paradigms", nargs="+", default=["sft", "grpo"], help="the learning check's paradigms")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    from cpt_bench.outputs.provenance import cpu_fingerprint

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    result: dict = {"machine": f"{cpu_fingerprint()}, {os.cpu_count()} cores, {platform.platform()}",
                    "torch_threads": torch.get_num_threads(), "new_tokens": NEW_TOKENS}
    out = REPO / "bench-results"
    out.mkdir(exist_ok=True)
    if args.learning:
        result["learning"] = learning_check(args.seeds, args.paradigms)
        (out / "smollm2-learning.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return 0
    steps_cap = ["paradigm.max_steps=4", "paradigm.logging_steps=1"]
    settings = {p: Setting(p) for p in PRECISIONS}
    gen: dict = {p: {b: [] for b in BATCHES} for p in PRECISIONS}
    for _ in range(args.repeats):  # alternated, so a drift of the machine's speed hits both alike
        for batch in BATCHES:
            for p in PRECISIONS:
                gen[p][batch].append(generation(settings[p], batch))
    result["generation"] = {
        p: {str(b): {k: median(rows, k) for k in ("generated_tok_s", "processed_tok_s", "forward_tok_s")}
            | {"share_of_bf16_forward": round(median(rows, "generated_tok_s")
                                              / median(gen["bf16"][b], "forward_tok_s"), 3),
               "prompt_tokens": rows[0]["prompt_tokens"]}
            for b, rows in gen[p].items()} for p in PRECISIONS}
    result["evaluation_seconds"] = {p: round(evaluation_seconds(settings[p]), 1) for p in PRECISIONS}
    result["evaluation_items"] = sum(len(v) for v in settings["bf16"].test_sets.values())
    del settings
    variants = {"sft": ["paradigm=sft_smollm2"], "grpo": ["paradigm=rft_smollm2"],
                "grpo_kl": ["paradigm=rft_smollm2", "paradigm.kl_coef=0.01"],
                "grpo_generation_steps_4": ["paradigm=rft_smollm2", "paradigm.generation_steps=4"]}
    result["step_seconds"] = {}
    for name, overrides in variants.items():
        times = {p: step_seconds(Setting(p, *overrides, *steps_cap)) for p in PRECISIONS}
        result["step_seconds"][name] = {p: round(statistics.median(t), 2) for p, t in times.items()}
        print(name, times, flush=True)
    ev, st = result["evaluation_seconds"], result["step_seconds"]
    cfg = compose()
    evaluations, optimizer_steps = len(cfg.order.tasks) + 1, len(cfg.order.tasks) * 8  # the study: 8 steps a stage
    result["study_eval_share"] = {
        p: {k: round(evaluations * ev[p] / (evaluations * ev[p] + optimizer_steps * st[k][p]), 3)
            for k in ("sft", "grpo")} for p in PRECISIONS}
    bound = result["generation"]["bf16"]
    result["speedup_bf16"] = {"evaluation": round(ev["fp32"] / ev["bf16"], 2),
                              **{k: round(v["fp32"] / v["bf16"], 2) for k, v in st.items()}}
    result["targets"] = {
        "evaluation_3x": result["speedup_bf16"]["evaluation"] >= 3,
        "grpo_step_2_5x": result["speedup_bf16"]["grpo"] >= 2.5,
        "generation_40pct_of_forward": {b: bound[b]["share_of_bf16_forward"] >= 0.4 for b in bound},
    }
    result["learning"] = learning_check(args.seeds, args.paradigms)
    (out / "smollm2.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
