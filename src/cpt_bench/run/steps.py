"""The steps of one stage, each a typed spec in and a typed result out.

    filter (RIF rollouts) -> rollout (a paradigm's rollout step) -> train (and save the stage
    checkpoint) -> evaluate (one matrix row)

`LocalSteps` runs them in this process and hands the live model from one step to the next;
its inputs are plain values (a `StageSpec`: paths, items, seed) and its outputs are records,
so another executor can run the same steps in launched processes that read the checkpoint
from `spec.start_path` instead. Each step writes the files of its own stage folder
(`eval/<task>.jsonl`, `filter.jsonl`, `rollouts.jsonl`, `train_log.jsonl`, `model/`); the run directory's
shared files belong to the stage loop.
"""

from __future__ import annotations

import gc
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from cpt_bench import faults
from cpt_bench.choices import HarnessBackend, PeftMethod, Schedule
from cpt_bench.config import Config
from cpt_bench.continual import stage_hooks
from cpt_bench.continual.base import Method
from cpt_bench.errors import TrainingDiverged
from cpt_bench.model.evaluation import evaluate_tasks
from cpt_bench.model.harness import evaluate_harness
from cpt_bench.model.loading import load_checkpoint, run_precision
from cpt_bench.model.processing import PixelBounds
from cpt_bench.model.prompts import PromptStyle
from cpt_bench.outputs.curves import SNAPSHOTS
from cpt_bench.outputs.records import Diagnostics, FilterStats, HarnessResult, TrainStats
from cpt_bench.outputs.results import JOINT
from cpt_bench.outputs.rundir import write_jsonl
from cpt_bench.paradigms.base import Paradigm, StageContext
from cpt_bench.paradigms.filtering import keep_item, rif_sampling
from cpt_bench.paradigms.rollouts import Rollouts, Sampled
from cpt_bench.run import requeue
from cpt_bench.run.drift_step import base_samples_dir, drift_prompts, measure_drift, reference_model
from cpt_bench.run.rollout_step import Sampling, sample
from cpt_bench.run.wire import TrainResult
from cpt_bench.tasks import Benchmark
from cpt_bench.tasks.base import Example

log = logging.getLogger("cpt_bench")


@dataclass
class StageSpec:
    """What one training stage needs: where it starts, what it trains on, where it writes."""

    stage: int  # 1-based
    task: str  # the trained task ("joint" for the multi-task baseline)
    items: list[Example]  # its training items, before any filtering
    base_path: str  # the original base model (the paper's KL reference; parameter drift)
    start_path: str  # the checkpoint the stage starts from
    dir: Path  # stages/<kk>-<task>
    seed: int

    @property
    def model_dir(self) -> Path:
        return self.dir / "model"

    @property
    def partial_model_dir(self) -> Path:
        """Where the checkpoint is written; renamed to `model_dir` once complete."""
        return self.dir / "model.partial"


def publish_checkpoint(spec: StageSpec) -> None:
    """The stage's checkpoint, written into `model.partial/`, becomes `model/` in one rename:
    a run killed mid-save never leaves a `model/` that looks complete."""
    shutil.rmtree(spec.model_dir, ignore_errors=True)
    spec.partial_model_dir.rename(spec.model_dir)


@dataclass(frozen=True)
class InnerPoint:
    """An evaluation point inside a stage (eval.inner_points): the snapshot the training saved at
    optimizer step `step` (paradigms.base.save_snapshot) and where its eval records go."""

    step: int
    model: Path  # stages/<kk>-<task>/snapshots/step-<n>/
    dir: Path  # stages/<kk>-<task>/inner/step-<n>/


@dataclass
class Evaluation:
    """One row of the accuracy matrix, with each task's CoT format-compliance rate."""

    accuracy: dict[str, float]
    n: dict[str, int]
    format_rate: dict[str, float]
    seconds: float
    drift: Diagnostics = field(default_factory=Diagnostics)  # from the base, when asked for (drift_from)
    harness: HarnessResult | None = None  # eval.harness's scores, also in `accuracy` as harness:<task>
    points: list[Evaluation] = field(default_factory=list)  # the inner points' (`InnerPoint`), in order

    @classmethod
    def of(cls, records: dict[str, list[dict]], seconds: float, drift: Diagnostics | None = None,
           harness: HarnessResult | None = None) -> Evaluation:
        """From every task's graded records (`EvalRecord` as dicts), in the matrix's task order,
        then the harness's tasks as general columns."""
        scores = harness.scores if harness else []
        return cls(accuracy={**{k: sum(r["score"] for r in v) / len(v) if v else 0.0 for k, v in records.items()},
                             **{s.column: s.value for s in scores}},
                   n={**{k: len(v) for k, v in records.items()}, **{s.column: s.n for s in scores}},
                   format_rate={k: sum(r["format_ok"] for r in v) / len(v) for k, v in records.items() if v},
                   seconds=seconds, drift=drift or Diagnostics(), harness=harness)


def stage_items(benchmark: Benchmark, order: list[str], schedule: str, seed: int,
                replay=None) -> list[tuple[str, list[Example]]]:
    """(trained task, training items) per stage: one per task, or one joint stage on all of them;
    with `replay` (config.ReplayConfig), each stage's own items plus the replayed ones.

    Deterministic, so a launched worker rebuilds the same list and needs only item indices.
    schedule=evaluate trains nothing, so no training set is read."""
    if schedule == Schedule.evaluate:
        return [(t, []) for t in order]
    train_sets = {t: benchmark.tasks[t].train() for t in order}
    if schedule == JOINT:
        items = [ex for t in order for ex in train_sets[t]]
        random.Random(seed).shuffle(items)
        return [(JOINT, items)]
    return [(t, train_sets[t] + replayed(train_sets, order[:i], len(train_sets[t]), replay, seed + i + 1))
            for i, t in enumerate(order)]


def replayed(train_sets: dict[str, list[Example]], earlier: list[str], own: int, replay, seed: int) -> list[Example]:
    """The earlier tasks' items replayed beside `own` items, so that they make up
    `replay.fraction` of the stage (at most `replay.max_items`): for each, a task drawn
    uniformly among the earlier ones, then one of its items (no item twice)."""
    if not replay or not replay.fraction or not earlier:
        return []
    count = round(own * replay.fraction / (1 - replay.fraction))
    if replay.max_items is not None:
        count = min(count, replay.max_items)
    rng = random.Random(seed)
    pools = {t: rng.sample(train_sets[t], len(train_sets[t])) for t in earlier}  # each task's items, shuffled
    out: list[Example] = []
    while len(out) < count and any(pools.values()):
        task = rng.choice([t for t in earlier if pools[t]])
        out.append(pools[task].pop())
    return out


def load_model(cfg, path: str | Path, device: str | torch.device = "cpu"):
    """A checkpoint as every step loads it: the run's weights dtype, its image resolution, on `device`."""
    model, processing_class = load_checkpoint(path, dtype=run_precision(cfg).weights, pixels=PixelBounds.of(cfg.model))
    return model.to(device), processing_class


def train_step(paradigm: Paradigm, model, processing_class, items: list[Example], ctx: StageContext,
               spec: StageSpec, *, main: bool = True, hooks: list[Method] = ()) -> tuple[TrainResult, object]:
    """The body of a training step, in one process or on every rank of a launched one: train
    on `items` (or, when RIF kept none, keep the model unchanged) with the loss terms of the
    run's continual-learning `hooks`, then on the `main` process write the checkpoint's
    processing class, publish `model/` and run the hooks' `after_training`. Returns what the
    step reports and the model the stage ends with."""
    if main:
        shutil.rmtree(spec.partial_model_dir, ignore_errors=True)  # a killed attempt's leftovers
    rows = paradigm.rows(items, ctx.rollouts) if items else []
    ctx.loss_terms = [term for hook in hooks for term in hook.loss_terms(model, spec)] if rows else []
    if rows:
        result = paradigm.train_stage(model, processing_class, items, ctx)
        out = TrainResult(optimizer_steps=result.optimizer_steps, generated_tokens=result.generated_tokens,
                          train_seconds=result.train_seconds, save_seconds=result.save_seconds,
                          metrics=dict(result.metrics))
        model = result.model
        del result
    else:
        log.warning("stage %d: %s, skipping training", spec.stage,
                    "nothing to train on after the rollouts" if items else "no training items left")
        start = time.time()
        if main:
            model.save_pretrained(spec.partial_model_dir)
        out = TrainResult(optimizer_steps=0, generated_tokens=0, train_seconds=0.0, save_seconds=time.time() - start)
    # the inner points' snapshots were saved during training: their seconds are save seconds
    out.train_seconds -= ctx.snapshot_seconds
    out.save_seconds += ctx.snapshot_seconds
    out.metrics |= {f"cl/{k}": v for term in ctx.loss_terms for k, v in term.diagnostics().items()}
    if main:
        processing_class.save_pretrained(spec.partial_model_dir)
        publish_checkpoint(spec)
        shutil.rmtree(spec.dir / "trainer", ignore_errors=True)
        for hook in hooks:
            out.metrics |= {f"cl/{k}": v for k, v in hook.after_training(spec, ctx, items, processing_class).items()}
    return out, model


@dataclass
class Filtered:
    items: list[Example]  # the kept training items
    stats: FilterStats


@dataclass
class Trained:
    train: TrainStats
    diagnostics: dict[str, float]  # the paradigm's per-stage means, then parameter drift
    train_seconds: float
    save_seconds: float
    log: list[dict] = field(default_factory=list)  # every trainer log event

    @classmethod
    def of(cls, result: TrainResult, items: int, log: list[dict]) -> Trained:
        return cls(train=TrainStats(items=items, optimizer_steps=result.optimizer_steps,
                                    generated_tokens=result.generated_tokens),
                   diagnostics=dict(result.metrics), train_seconds=result.train_seconds,
                   save_seconds=result.save_seconds, log=log)


def evaluate_sets(cfg, model, processing_class, benchmark: Benchmark, test_sets: dict[str, list[Example]],
                  style: PromptStyle, engine=None) -> dict[str, list[dict]]:
    """Greedy evaluation of `test_sets` (every test item, or a rank's share of them), graded:
    each task's records as dicts (`EvalRecord`). The same call in one process and on each rank."""
    with run_precision(cfg).inference():
        records = evaluate_tasks(model, processing_class, benchmark.tasks, test_sets, style,
                                 batch_size=cfg.eval.batch_size, max_new_tokens=cfg.eval.max_new_tokens, engine=engine)
    return {name: [asdict(r) for r in recs] for name, recs in records.items()}


def harness_step(cfg: Config, model, processing_class, model_path: str | None) -> HarnessResult | None:
    """`eval.harness`'s tasks on the model, in the run's precision; None when it is off."""
    if cfg.eval.harness.backend == HarnessBackend.none:
        return None
    with run_precision(cfg).inference():
        return evaluate_harness(model, processing_class, cfg.eval.harness, model_path)


def write_eval_records(out_dir: Path, records: dict[str, list[dict]]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in records.items():
        write_jsonl(out_dir / f"{name}.jsonl", rows)
        faults.reached("evaluation")


# called with (global_step, max_steps, logs) on every trainer log event
OnLog = Callable[[int, int, dict[str, float]], None]


def record_filter(spec: StageSpec, f, scores: list[list[float]], keep: list[bool], *, seconds: float,
                  tokens: int) -> Filtered:
    """RIF's outcome, however it was rolled out: filter.jsonl (every item, its scores, the
    decision), the kept items and the stats; logged in one line."""
    write_jsonl(spec.dir / "filter.jsonl", [{"prompt": ex.prompt, "answer": ex.answer, "scores": sc, "kept": kp}
                                            for ex, sc, kp in zip(spec.items, scores, keep)])
    kept = [ex for ex, k in zip(spec.items, keep) if k]
    stats = FilterStats(rule=str(f.keep), num_rollouts=f.num_rollouts, items=len(spec.items), kept=len(kept),
                        kept_fraction=len(kept) / len(keep) if keep else 0.0, rollout_seconds=round(seconds, 3),
                        rollout_tokens=tokens, train_items_saved=len(spec.items) - len(kept))
    log.info("stage %d: RIF (%s, K=%d) kept %d/%d items (%.0f%%) in %.1f s", spec.stage, f.keep, f.num_rollouts,
             stats.kept, stats.items, 100 * stats.kept_fraction, seconds)
    return Filtered(kept, stats)


def check_finite(stage: int, step: int, logs: dict[str, float]) -> None:
    """Stop a diverged stage at the trainer log event that shows it (every `logging_steps`):
    a NaN or infinite loss, gradient norm or reward (GRPO's `reward`, `rewards/...`)."""
    for key, value in logs.items():
        watched = key in ("loss", "grad_norm") or key.startswith("reward")
        if watched and isinstance(value, int | float) and not math.isfinite(value):
            raise TrainingDiverged(
                f"stage {stage} diverged at step {step}: {key} is {value}; the stage stops unsaved and the stages "
                "before it are kept (the same command resumes; a lower paradigm.learning_rate usually helps)")


def stage_context(cfg, benchmark: Benchmark, style: PromptStyle, spec: StageSpec, on_log: OnLog,
                  rollouts: list[Sampled] | None = None) -> StageContext:
    """What a paradigm's trainer needs for `spec`, in this process (local or a launched rank)."""

    def logged(step: int, total: int, logs: dict[str, float]) -> None:
        faults.reached("training")
        requeue.check()
        check_finite(spec.stage, step, logs)
        on_log(step, total, logs)

    return StageContext(
        stage=spec.stage, task_name=spec.task, tasks=benchmark.tasks, style=style,
        base_path=spec.base_path, start_path=spec.start_path, work_dir=spec.dir / "trainer",
        save_dir=spec.partial_model_dir, seed=spec.seed, use_cpu=not torch.cuda.is_available(),
        bf16=run_precision(cfg).trainer_bf16,
        deepspeed=cfg.deepspeed.config or None,
        peft=cfg.peft if cfg.peft.name != PeftMethod.none else None,
        on_log=logged,
        rollouts=rollouts,
        inner_points=cfg.eval.inner_points,
        snapshot_dir=spec.dir / SNAPSHOTS,
    )


class LocalSteps:
    """A stage's steps in this process, on the model it holds (on the GPU when there is one)."""

    def __init__(self, cfg, *, benchmark: Benchmark, style: PromptStyle, test_sets: dict[str, list[Example]],
                 paradigm: Paradigm, run_dir: Path | None = None):
        # run_dir: the executors share one signature; a launched one keeps its config there, and
        # both the forward KL's draws from the base (base_samples_dir)
        self.cfg, self.benchmark, self.style, self.test_sets, self.paradigm = cfg, benchmark, style, test_sets, paradigm
        self.samples_dir = base_samples_dir(run_dir) if run_dir is not None else None  # the forward KL's draws
        self.general = [t for t in test_sets if t in benchmark.general]
        self.hooks = stage_hooks(cfg)  # the run's continual-learning method (and O-LoRA's)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = self.processing_class = self.model_path = None

    def load(self, path: str | Path) -> None:
        """Hold the checkpoint at `path` (and its processing class) as the current model."""
        self.model = self.processing_class = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.model, self.processing_class = load_model(self.cfg, path, self.device)
        self.model_path = str(path)

    def evaluate(self, out_dir: Path, drift_from: str | None = None, task: str | None = None,
                 points: list[InnerPoint] = ()) -> Evaluation:
        """Greedy evaluation of every test set; each task's records go to `out_dir/<task>.jsonl`.
        With `drift_from` (the base model), also the parameter drift from it, and with the
        trained `task` and `eval.kl_samples` > 0 the output drift (KL to the base, both directions).
        Then each of the stage's inner `points` (its snapshot, evaluated as the end is, no drift)."""
        start = time.time()
        rows = evaluate_sets(self.cfg, self.model, self.processing_class, self.benchmark, self.test_sets, self.style)
        write_eval_records(out_dir, rows)
        harness = harness_step(self.cfg, self.model, self.processing_class, self.model_path)
        seconds = time.time() - start
        drift = None
        if drift_from:
            base = reference_model(run_precision(self.cfg).weights, str(drift_from)) \
                if task and self.cfg.eval.kl_samples else None
            prompts = drift_prompts(self.test_sets, self.general, task) if task else {}
            try:  # the cached base visits the accelerator for this step only
                drift = measure_drift(self.cfg, self.model, self.processing_class, drift_from, self.style, prompts,
                                      base.to(self.device) if base else None, self.samples_dir)
            finally:
                if base is not None:
                    base.to("cpu")
        evaluation = Evaluation.of(rows, seconds, drift, harness)
        evaluation.points = [self._evaluate_snapshot(point) for point in points]
        return evaluation

    def _evaluate_snapshot(self, point: InnerPoint) -> Evaluation:
        """An inner point's snapshot evaluated beside the model held, which stays as it is."""
        start, held = time.time(), (self.model, self.processing_class, self.model_path)
        try:
            self.model, self.processing_class = load_model(self.cfg, point.model, self.device)
            self.model_path = str(point.model)
            evaluation = self.evaluate(point.dir)
        finally:
            self.model, self.processing_class, self.model_path = held
        evaluation.seconds = time.time() - start  # its loading included
        return evaluation

    def filter(self, spec: StageSpec) -> Filtered:
        """RIF: keep the items the current model can learn from; record what it cost."""
        start = time.time()
        sampled, tokens = self._sample(spec, spec.items, rif_sampling(self.cfg.filter,
                                                                      self.paradigm.completion_length))
        scores = [s.scores for s in sampled]
        keep = [keep_item(sc, self.cfg.filter.keep) for sc in scores]
        return record_filter(spec, self.cfg.filter, scores, keep, seconds=time.time() - start, tokens=tokens)

    def rollout(self, spec: StageSpec, items: list[Example], rollouts: Rollouts) -> Sampling:
        """The paradigm's rollout step on the stage's (kept) items, with the stage's start model."""
        start = time.time()
        sampled, tokens = self._sample(spec, items, rollouts)
        return Sampling(sampled, tokens, time.time() - start)

    def _sample(self, spec: StageSpec, items: list[Example], rollouts: Rollouts) -> tuple[list[Sampled], int]:
        from transformers import set_seed

        set_seed(spec.seed)  # the stage's own sampling seed: a resumed run draws the same rollouts
        return sample(self.cfg, self.model, self.processing_class, items, rollouts, benchmark=self.benchmark,
                      style=self.style)

    def train(self, spec: StageSpec, items: list[Example], on_log: OnLog,
              rollouts: list[Sampled] | None = None) -> Trained:
        """Train one stage on `items` (with the paradigm's `rollouts` of them, if it asked for
        any), leave its Hugging Face checkpoint in `spec.model_dir` and hold the trained model;
        the trainer's log goes to `train_log.jsonl`."""
        logs: list[dict] = []

        def forward(step: int, total: int, row: dict) -> None:
            logs.append({"step": step, **row})
            on_log(step, total, row)

        ctx = stage_context(self.cfg, self.benchmark, self.style, spec, forward, rollouts)
        result, self.model = train_step(self.paradigm, self.model, self.processing_class, items, ctx, spec,
                                        hooks=self.hooks)
        self.model_path = str(spec.model_dir)
        write_jsonl(spec.dir / "train_log.jsonl", logs)
        if self.cfg.deepspeed.config:
            self._reload_from_deepspeed(spec.model_dir)
        return Trained.of(result, len(items), logs)

    def _reload_from_deepspeed(self, model_dir: Path) -> None:
        """DeepSpeed still holds the trained model (under ZeRO-3 its weights are partitioned
        away): evaluation and the next stage start from the gathered checkpoint instead."""
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()  # else from_pretrained would partition the weights again
        self.load(model_dir)
