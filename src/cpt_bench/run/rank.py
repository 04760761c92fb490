"""The steps as one rank of a launched step runs them (worker.py starts the rank first).

The worker uses no Hydra and no W&B: it rebuilds the benchmark from the config,
deterministically, so items cross the process boundary as indices. Each step's body is the
one the in-process launcher runs (steps.py: `evaluate_sets`, `train_step`; drift_step.py: `measure_drift`;
rollout_step.py: `sample`); a rank only adds its share of the items and the files the controller reads
(what each step writes: worker.py's docstring).
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import os
import time
from pathlib import Path

import torch

from cpt_bench.choices import HarnessBackend
from cpt_bench.config import Config, validate
from cpt_bench.continual import stage_hooks
from cpt_bench.distributed import zero_stage
from cpt_bench.model.loading import load_processing_class
from cpt_bench.model.processing import PixelBounds
from cpt_bench.model.prompts import PromptStyle
from cpt_bench.model.vision_zero3 import align_vision_tower, needs_alignment
from cpt_bench.outputs.rundir import write_json
from cpt_bench.paradigms import build_paradigm
from cpt_bench.run.drift_step import drift_prompts, measure_drift
from cpt_bench.run.rollout_step import read_rollouts, sample
from cpt_bench.run.steps import (
    StageSpec,
    evaluate_sets,
    harness_step,
    load_model,
    stage_context,
    stage_items,
    train_step,
)
from cpt_bench.run.wire import POINT_SECONDS, EvalShard, EvalSpec, RolloutShard, RolloutSpec, TrainSpec, write_record
from cpt_bench.tasks import build_benchmark, resolve_order

log = logging.getLogger("cpt_bench.run.worker")


def policy_device(device: str, zero: int | None) -> str:
    """Where the policy is loaded before training: under ZeRO-3 it stays on the CPU and
    DeepSpeed moves only this rank's partition to the GPU (a full 7B replica per rank on the
    GPU first would need the memory ZeRO-3 is there to save); otherwise on the rank's device."""
    return "cpu" if zero == 3 else device


class RankSteps:
    """One rank's view of a launched step: the run's config, the step's spec, its device."""

    def __init__(self, cfg: Config, spec: EvalSpec | RolloutSpec | TrainSpec, device: str = "cpu"):
        self.cfg, self.spec, self.device = validate(cfg), spec, device
        self.rank, self.world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.benchmark = build_benchmark(cfg.benchmark)
        self.order = resolve_order(self.benchmark, cfg.order)
        self.general = list(self.benchmark.general) if cfg.eval.general else []
        self.style = PromptStyle.for_benchmark(self.benchmark, cfg.cot)
        self.dir = Path(spec.dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    @functools.cached_property
    def paradigm(self):
        """Built when a step needs it (training): building it imports
        TRL and DeepSpeed, seconds an evaluation step does not have to spend on every rank."""
        return build_paradigm(self.cfg.paradigm, self.world)

    def spread(self, value: float) -> float:
        """The largest minus the smallest of `value` over the ranks (0: every rank computed the same)."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return 0.0
        high = torch.tensor([value], dtype=torch.float64, device=self.device)
        low = torch.tensor([-value], dtype=torch.float64, device=self.device)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        dist.all_reduce(low, op=dist.ReduceOp.MAX)
        return float(high.item() + low.item())

    def sum(self, value: int) -> int:
        """`value` summed over the ranks (each rank counts its own rollouts)."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return value
        total = torch.tensor([value], device=self.device)
        dist.all_reduce(total)
        return int(total.item())

    def items(self, stage: int) -> list:
        return stage_items(self.benchmark, self.order, self.cfg.schedule, self.cfg.seed, self.cfg.replay)[stage - 1][1]

    def generator(self, path: str, seed: int):
        """(model, processing class, engine) for generating from `path`: the model itself, or
        with `eval.backend=vllm` a vLLM engine (and no model on the GPU beside it)."""
        if str(self.cfg.eval.backend) != "vllm":
            return (*load_model(self.cfg, path, self.device), None)
        from cpt_bench.model.vllm_engine import VLLMEngine

        pixels = PixelBounds.of(self.cfg.model)
        engine = VLLMEngine(path, seed=seed + self.rank, pixels=pixels, dtype=str(self.cfg.model.dtype))
        return None, load_processing_class(path, pixels), engine

    def mine(self, n: int) -> list[int]:
        """This rank's share of n items: every world-th, starting at its rank."""
        return list(range(self.rank, n, self.world))

    # --- the steps ---------------------------------------------------------------------------

    def evaluate(self) -> None:
        """The model's evaluation (its harness scores and drift on rank 0), then each of the stage's
        inner points (`spec.points`, snapshots) into its own folder, each rank its share of the items;
        rank 0 records each point's seconds (`POINT_SECONDS`)."""
        spec = self.spec
        self.evaluate_model(spec.model_path, self.dir, spec.drift_from, spec.task)
        for path, folder in zip(spec.points, spec.point_dirs, strict=True):
            start = time.time()
            self.evaluate_model(path, Path(folder))
            if self.rank == 0:
                write_json(Path(folder) / POINT_SECONDS, {"seconds": time.time() - start})

    def evaluate_model(self, path: str, folder: Path, drift_from: str | None = None, task: str | None = None) -> None:
        cfg = self.cfg
        folder.mkdir(parents=True, exist_ok=True)
        sets = self.benchmark.test_sets(self.order, self.general)
        flat = [(t, ex) for t, items in sets.items() for ex in items]  # the global item order
        indices: dict[str, list[int]] = {t: [] for t in sets}
        for i in self.mine(len(flat)):
            indices[flat[i][0]].append(i)
        model, processing_class, engine = self.generator(path, self.spec.seed)
        try:
            rows = evaluate_sets(cfg, model, processing_class, self.benchmark,
                                 {t: [flat[i][1] for i in idx] for t, idx in indices.items()}, self.style, engine)
            write_record(folder / f"shard-{self.rank}.json",
                         EvalShard(indices=[i for t in sets for i in indices[t]],
                                   records=[r for t in sets for r in rows[t]]))
            harness_on = cfg.eval.harness.backend != HarnessBackend.none
            if self.rank != 0 or not (drift_from or harness_on):
                return
            if engine is not None:  # the engine gives its GPU back; the harness and the drift read real weights
                engine.close()
                engine = model = None
                gc.collect()
                model, processing_class = load_model(cfg, path, self.device)
            if harness_on:  # a live model gives the harness no data-parallel share: rank 0 runs it all
                if self.world > 1:
                    log.info("eval.harness runs on rank 0 only: lm-eval shards no live model over ranks")
                write_json(folder / "harness.json", harness_step(cfg, model, processing_class, path).to_json())
            if not drift_from:
                return
            base = None
            if task and cfg.eval.kl_samples:
                base = load_model(cfg, drift_from, self.device)[0].eval()  # the run's dtype, this rank's device
            prompts = drift_prompts(sets, self.general, task) if task else {}
            drift = measure_drift(cfg, model, processing_class, drift_from, self.style, prompts, base,
                                  Path(self.spec.base_samples) if self.spec.base_samples else None)
            write_json(folder / "drift.json", drift.to_json())
        finally:
            if engine is not None:  # before the next point's engine asks for the GPU
                engine.close()

    def rollout(self) -> None:
        from transformers import set_seed  # here, not at the top: it imports peft (2-3 s an evaluation skips)

        spec = self.spec
        set_seed(spec.seed + self.rank)  # each rank samples its own rollouts
        items = self.items(spec.stage)
        if spec.item_indices is not None:
            items = [items[i] for i in spec.item_indices]
        idx = self.mine(len(items))  # positions in `items`
        model, processing_class, engine = self.generator(spec.model_path, spec.seed)
        sampled, tokens = sample(self.cfg, model, processing_class, [items[i] for i in idx], spec.rollouts,
                                 benchmark=self.benchmark, style=self.style, engine=engine)
        write_record(self.dir / f"rollout-{spec.purpose}-shard-{self.rank}.json",
                     RolloutShard(indices=idx, completions=[s.completions for s in sampled],
                                  scores=[s.scores for s in sampled], generated_tokens=tokens))

    def train(self) -> None:
        from transformers import set_seed

        spec = self.spec
        set_seed(spec.seed)
        items = [self.items(spec.stage)[i] for i in spec.item_indices]
        device = policy_device(self.device, zero_stage(self.cfg))
        model, processing_class = load_model(self.cfg, spec.start_path, device)
        main = self.rank == 0
        log_file = open(self.dir / "train_log.jsonl", "w") if main else None  # noqa: SIM115

        def on_log(step: int, total: int, logs: dict) -> None:
            if log_file:
                log_file.write(json.dumps({"step": step, "max_steps": total, **logs}) + "\n")
                log_file.flush()

        stage = StageSpec(stage=spec.stage, task=spec.task, items=items, base_path=spec.base_path,  # the kept ones
                          start_path=spec.start_path, dir=self.dir, seed=spec.seed)
        rollouts = read_rollouts(Path(spec.rollouts_file)) if spec.rollouts_file else None
        ctx = stage_context(self.cfg, self.benchmark, self.style, stage, on_log, rollouts)
        if needs_alignment(model, ctx.deepspeed, self.world):
            align_vision_tower(model, processing_class)
            ctx.align_vision = True  # and the trainer's KL reference (paradigms/rft.py)
        try:
            result, _ = train_step(self.paradigm, model, processing_class, items, ctx, stage, main=main,
                                   hooks=stage_hooks(self.cfg))
        finally:
            if log_file:
                log_file.close()
        result.generated_tokens = self.sum(result.generated_tokens)
        for key in sorted(k for k in result.metrics if k.endswith("_unscaled")):  # every rank holds its loss terms
            result.metrics[f"{key}_rank_spread"] = self.spread(result.metrics[key])
        if torch.cuda.is_available():
            result.metrics["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30  # rank 0's
        if main:
            write_record(self.dir / "result.json", result)  # last: the controller reads it after the exit code
