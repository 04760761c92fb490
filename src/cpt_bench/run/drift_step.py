"""The drift step of an evaluation: how far the evaluated model moved from the base, in its
weights and its outputs (the reverse and the forward KL), as both executors measure it
(steps.LocalSteps in this process, rank 0 of a launched evaluation)."""

from __future__ import annotations

import functools
import random
import time
from pathlib import Path

import torch

from cpt_bench.config import Config, EvalConfig
from cpt_bench.model.drift import forward_kl, output_kl, param_drift
from cpt_bench.model.loading import load_checkpoint, run_precision
from cpt_bench.model.prompts import PromptStyle
from cpt_bench.outputs.records import Diagnostics, KLToBase
from cpt_bench.outputs.results import JOINT
from cpt_bench.outputs.rundir import stage_dir
from cpt_bench.progress import Progress
from cpt_bench.tasks.base import Example
from cpt_bench.tasks.images import load_images


@functools.lru_cache(maxsize=1)
def reference_model(dtype: torch.dtype, base_path: str):
    """The base model output drift compares against, loaded once per process: every stage of a
    sequence run in this process asks for the same one. It stays on the CPU between stages
    (see `LocalSteps.evaluate`)."""
    model, _ = load_checkpoint(base_path, dtype=dtype)
    return model.eval()


def drift_prompts(test_sets: dict[str, list[Example]], general: list[str], task: str) -> dict[str, list[Example]]:
    """The items output drift is measured on after training `task`: its test items (every CPT
    task's for the joint stage) and the general suite's."""
    order = [t for t in test_sets if t not in general]
    return {"task": [ex for t in (order if task == JOINT else [task]) for ex in test_sets[t]],
            "general": [ex for t in general for ex in test_sets[t]]}


def base_samples_dir(run_dir: Path) -> Path:
    """Where a run keeps the forward KL's draws from the base (`model.drift.base_draw`): beside
    the base's evaluation, `stages/00-base/forward_kl/`, one file per prompt set. On disk in the
    run directory because each stage under `launcher=torchrun` is a new process (rank 0
    measures drift after evaluation), so a draw made in memory would be lost after its stage;
    there, one process or many read the same files, and a resumed run its earlier draws. Beside
    stage 0 rather than in `.cpt/` because the draw belongs to the base: `overwrite=true`
    clears it with the stages (a base re-made at the same path is drawn again)."""
    return stage_dir(run_dir, 0, "") / "forward_kl"


def measure_drift(cfg: Config, model, processing_class, base_path: str, style: PromptStyle,
                  prompts: dict[str, list[Example]], base=None, samples_dir: Path | None = None) -> Diagnostics:
    """The evaluated model's drift from the base: its weights always; with `prompts`
    (`drift_prompts`) and `eval.kl_samples` > 0 its outputs too, the reverse and the forward KL
    to `base` (the base model on the same device; its draws for the forward one cached in
    `samples_dir`, `base_samples_dir`), with the seconds each took."""
    drift = Diagnostics(param_drift=param_drift(model, base_path))
    if prompts and cfg.eval.kl_samples and base is not None:
        seconds = {"kl_to_base": 0.0, "forward_kl": 0.0}
        estimates = [(name, direction) for name, items in prompts.items() if items for direction in seconds]
        with run_precision(cfg).inference(), Progress("output drift", len(estimates), "estimate") as progress:
            for name, direction in estimates:
                start = time.time()
                setattr(drift, f"{direction}_{name}", output_drift(model, base, processing_class, style, prompts[name],
                                                                   cfg.eval, direction, samples_dir))
                seconds[direction] += time.time() - start
                progress.update()
        drift.kl_to_base_seconds = round(seconds["kl_to_base"], 3)
        drift.forward_kl_seconds = round(seconds["forward_kl"], 3)
    return drift


def output_drift(model, base, processing_class, style: PromptStyle, items: list[Example], settings: EvalConfig,
                 direction: str = "kl_to_base", samples_dir: Path | None = None) -> KLToBase:
    """The KL between the model and the base on `eval.kl_samples` of `items` drawn with
    `eval.kl_seed` (only their images are read), sampling up to `eval.max_new_tokens` tokens:
    `kl_to_base` the reverse KL(model || base), `forward_kl` the forward KL(base || model)."""
    chosen = random.Random(settings.kl_seed).sample(items, min(settings.kl_samples, len(items)))
    prompts = [style.prompt(processing_class, ex) for ex in chosen]
    images = [load_images(ex.images) for ex in chosen] if any(ex.images for ex in chosen) else None
    common = dict(samples=len(chosen), max_new_tokens=settings.max_new_tokens, seed=settings.kl_seed)
    est = (forward_kl(model, base, processing_class, prompts, images, cache=samples_dir, **common)
           if direction == "forward_kl" else output_kl(model, base, processing_class, prompts, images, **common))
    return KLToBase(est.kl, est.kl_se, est.kl_per_token)
