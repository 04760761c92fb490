"""The stage loop: the controller of one CPT sequence (or the joint baseline).

    setup:   plan, draw the data, open the run dir (resume state), build the base model, tracker
    stage 0: evaluate the base model                                   --> R[0]
    stage t: [filter] -> [rollout] -> train -> checkpoint -> [cl: merge] -> evaluate -> record  --> R[t]
    finish:  run.json, plots, W&B closed (always, also when a stage fails)

The controller owns the run directory, resume, the tracker and every shared result file; the
steps of a stage (steps.py) take a `StageSpec` and return typed results. Every stage leaves
`stages/<kk>-<task>/` with its model, its eval records and a `stage.json` written last, which
marks the stage complete. A run that stops (crash, pre-emption, Ctrl-C) is resumed from its
last complete stage by running the same command with the same run directory; a finished run
is never overwritten without `overwrite=true`.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from omegaconf import DictConfig

from cpt_bench import faults
from cpt_bench.builtin import base_model_path
from cpt_bench.choices import FilterName, KeepCheckpoints, LauncherName, Schedule
from cpt_bench.config import Config
from cpt_bench.continual import stage_hooks
from cpt_bench.distributed import ensure_process_group_env, skip_inference_kernel
from cpt_bench.model.harness import harness_columns
from cpt_bench.model.loading import run_precision
from cpt_bench.model.prompts import PromptStyle
from cpt_bench.outputs import plots
from cpt_bench.outputs.provenance import command_line, hardware, package_versions
from cpt_bench.outputs.records import Compute, Diagnostics, StageRecord, StageTimings
from cpt_bench.outputs.results import JOINT, format_summary, long_rows, run_metrics
from cpt_bench.outputs.rundir import (
    MATRIX_CSV,
    METRICS_JSON,
    RUN_JSON,
    STAGE_JSON,
    SUMMARY_TXT,
    disk_bytes,
    stage_dir,
    write_flips,
    write_json,
    write_jsonl,
    write_matrix_csv,
    write_text,
)
from cpt_bench.outputs.tracking import make_tracker
from cpt_bench.progress import duration, eta, stage_eta
from cpt_bench.run import requeue
from cpt_bench.run.curve_step import Curves
from cpt_bench.run.launch import TorchrunSteps
from cpt_bench.run.plan import plan
from cpt_bench.run.resume import check_disk, comparable, finished_metrics, prepare_run_dir
from cpt_bench.run.rollout_step import record_rollouts
from cpt_bench.run.runlock import RunDirLock
from cpt_bench.run.steps import Evaluation, LocalSteps, StageSpec, stage_items

log = logging.getLogger("cpt_bench")

STEP_RUNNERS = {LauncherName.local: LocalSteps, LauncherName.torchrun: TorchrunSteps}  # where a stage's steps run


def rollout_backend(paradigm) -> str | None:
    """The engine that generates a paradigm's rollouts (vLLM's greedy output is not
    bit-identical to transformers'); None for a paradigm that generates nothing."""
    if not hasattr(paradigm, "use_vllm"):
        return None
    return "vllm" if paradigm.use_vllm else "hf"


def optional(what: str, fn, *args):
    """`fn(*args)` for a part of a run's outputs that its record does not depend on: a failure
    (a full disk, a plotting error) is a warning naming it, never the run's failure."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("%s not written: %s: %s", what, type(exc).__name__, exc)
        return None


class TrainingProgress:
    """A stage's trainer logs: every event to the tracker, a terminal line per quarter of the
    stage's optimizer steps (whether or not the trainer logged a loss there), with its rate and ETA."""

    def __init__(self, tracker, stage: int, step_offset: int):
        self.tracker, self.stage, self.step_offset, self.quarter = tracker, stage, step_offset, 0
        self.start = time.monotonic()

    def __call__(self, step: int, total: int, logs: dict[str, float]) -> None:
        self.tracker.log_train(self.step_offset + step, self.stage, logs)
        quarter = 4 * step // max(total, 1)
        if quarter > self.quarter:
            self.quarter = quarter
            elapsed = time.monotonic() - self.start
            loss = f" loss {logs['loss']:.4f}" if "loss" in logs else ""
            reward = f" reward {logs['reward']:.3f}" if "reward" in logs else ""
            left = eta(step, total, elapsed)
            pace = f" | {step / elapsed:.2f} steps/s, ETA {duration(left)}" if left is not None and step < total else ""
            log.info("  stage %d step %d/%d%s%s%s", self.stage, step, total, loss, reward, pace)


class Run:
    """One CPT sequence (or the joint baseline) in one run directory."""

    def __init__(self, cfg: Config | DictConfig, run_dir: Path, wandb_group: str | None = None,
                 in_sweep: bool = False, experiment: str | None = None,
                 on_claim: Callable[[bool], None] | None = None):
        """`cfg`: a composed config or a `Config`; the run holds it as the validated `Config`;
        `experiment`: the `+experiment` preset it was composed with (recorded in run.json);
        `on_claim(resumed)`: called once the run holds its directory and every check before
        training has passed, just before run.json says "running" (the CLI's record, cli.py)."""
        planned = plan(cfg)
        self.experiment = experiment
        self.cfg: Config = planned.config
        self.run_dir, self.wandb_group, self.in_sweep = run_dir, wandb_group, in_sweep
        self.on_claim = on_claim
        self.benchmark, self.order, self.paradigm = planned.benchmark, planned.order, planned.paradigm
        self.hooks = stage_hooks(self.cfg)  # the continual-learning method's (and O-LoRA's)
        cfg = self.cfg
        # the general columns: the benchmark's suite, then eval.harness's tasks (harness:<task>)
        self.suite = list(self.benchmark.general) if cfg.eval.general else []
        self.general = [*self.suite, *harness_columns(cfg.eval.harness)]
        self.stages: list[StageRecord] = []
        self.stage_started: float | None = None
        self.stage_seconds: list[float] = []  # this process's finished stages: the stage lines' ETA
        self.compute = Compute()
        self.timings: dict = {"stages": {}}
        self.info: dict = {}

    # --- setup -> stages -> finish ---------------------------------------------------------

    def execute(self) -> dict | None:
        """Run (or resume) the sequence, holding the run directory for this controller alone."""
        with RunDirLock(self.run_dir):
            return self._execute()

    def _execute(self) -> dict | None:
        started = time.time()
        if self.in_sweep and (stored := finished_metrics(self.cfg, self.run_dir)) is not None:
            # a re-submitted sweep (e.g. after some jobs were pre-empted) skips what is done
            log.info("%s already holds this finished run: returning its stored metrics", self.run_dir)
            return stored or None
        self.setup()
        ok, metrics, error, status = False, None, None, "failed"
        try:
            if not self.stages:
                self.evaluate_base()
            self.log_batch()
            for spec in self.pending_stages():
                self.run_stage(spec)
            metrics = self.write_results()  # again: a run resumed after its last stage.json has none yet
            faults.reached("before_finished")
            self.prune_checkpoints(finished=True)
            ok = True
        except BaseException as exc:  # record the failure, keep all finished stages, re-raise
            error = f"{type(exc).__name__}: {exc}"
            # Ctrl-C, or submitit's exit on SLURM's pre-emption/time-limit signal (then requeued)
            status = "interrupted" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "failed"
            raise
        finally:
            self.finish(started, "finished" if ok else status, metrics, error)
        summary = format_summary(self.stages, self.order, self.general, metrics)
        optional(SUMMARY_TXT, write_text, self.run_dir / SUMMARY_TXT, summary + "\n")
        print("\n" + summary + f"\n\nResults in {self.run_dir}", flush=True)
        return metrics

    def setup(self) -> None:
        """Data, run directory and resume state, provenance, seed, base model, tracker, model."""
        cfg, run_dir = self.cfg, self.run_dir
        # drawing every split first surfaces a too-small task before any model is built
        self.test_sets = self.benchmark.test_sets(self.order, self.suite)
        self.stage_items = stage_items(self.benchmark, self.order, cfg.schedule, cfg.seed, cfg.replay)
        run_dir.mkdir(parents=True, exist_ok=True)
        for record in prepare_run_dir(cfg, run_dir):  # the finished stages' cost still counts
            self.stages.append(record)
            self.compute.add(record)
            self.timings["stages"][str(record.stage)] = record.timings.to_json()
        self.curves = Curves(run_dir) if cfg.eval.inner_points else None  # its inner points so far
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.info = {
            "status": "running", "command": command_line(), "config": comparable(cfg),
            "order": self.order, "general_suite": self.general, "seed": cfg.seed, "experiment": self.experiment,
            "versions": package_versions(), "hardware": hardware(), "precision": run_precision(cfg).describe(),
            # which engine generated: vLLM's greedy output is not bit-identical to transformers'
            "backends": {"evaluation": str(cfg.eval.backend), "rif_rollouts": str(cfg.eval.backend),
                         "grpo_rollouts": rollout_backend(cfg.paradigm)},
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        from transformers import set_seed

        set_seed(cfg.seed)
        if cfg.launcher.name == LauncherName.local and cfg.deepspeed.config:
            skip_inference_kernel()
            if ensure_process_group_env():
                log.info("deepspeed=%s in this process: a one-process group on this machine "
                         "(launcher=torchrun for more GPUs)", cfg.deepspeed.name)
        t0 = time.time()
        self.base_path = base_model_path(cfg.model)
        self.timings["base_model_seconds"] = round(time.time() - t0, 3)
        self.check_disk()
        self.info["base_model"] = self.base_path
        if self.on_claim:
            self.on_claim(bool(self.stages))
        self.write_run_json("running")
        kind = "evaluate" if cfg.schedule == Schedule.evaluate else cfg.paradigm.name
        name = f"{kind}-{cfg.benchmark.name}-{run_dir.name}"
        self.tracker = make_tracker(cfg.logger, run_dir, self.info["config"], name, self.wandb_group)
        for i, record in enumerate(self.stages):
            self.tracker.log_stage(record, run_metrics(self.stages[: i + 1], self.order, self.general))
        self.steps = STEP_RUNNERS[cfg.launcher.name](
            cfg, benchmark=self.benchmark, style=PromptStyle.for_benchmark(self.benchmark, cfg.cot),
            test_sets=self.test_sets, paradigm=self.paradigm, run_dir=run_dir)
        if len(self.stages) <= self.num_stages:  # a stage is left (a resumed run may have none)
            self.steps.load(self.start_path())

    def check_disk(self) -> None:
        stages_left = 0 if self.cfg.schedule == Schedule.evaluate else self.num_stages - max(len(self.stages) - 1, 0)
        check_disk(self.run_dir, self.base_path, stages_left, self.cfg.checkpoint.keep, self.cfg.eval.inner_points)

    def finish(self, started: float, status: str, metrics: dict | None, error: str | None) -> None:
        """Always runs: run.json's status first, then what is optional (plots, the tracker), each
        of which only warns when it fails, so that nothing optional ever keeps the record from
        saying how the run ended. A failed run first frees its stage's half-written checkpoint
        (never used: the next attempt replaces it), so that a full disk has room for the record."""
        self.timings["total_seconds"] = round(time.time() - started, 3)
        self.compute.wall_seconds = self.timings["total_seconds"]
        if status != "finished":
            for partial in (self.run_dir / "stages").glob("*/model.partial"):
                shutil.rmtree(partial, ignore_errors=True)
        self.write_run_json(status, error)
        images = optional("the run's plots", self.write_plots) if self.stages else None
        optional("the tracker's close", self.tracker.finish, self.stages, metrics, images or {}, status == "finished")

    # --- the stages ------------------------------------------------------------------------

    @property
    def num_stages(self) -> int:
        return 1 if self.cfg.schedule == Schedule.joint else len(self.order)

    def start_path(self) -> str:
        """The checkpoint the next stage starts from: the last completed stage's, else the base."""
        last = self.stages[-1] if self.stages else None
        if last is None or last.stage == 0:
            return self.base_path
        # a stage evaluated from a checkpoint trained elsewhere names it; a trained one has its own
        return last.model or str(stage_dir(self.run_dir, last.stage, last.trained_task) / "model")

    def prune_checkpoints(self, finished: bool = False) -> None:
        """checkpoint.keep: drop the recorded stages' models that resume no longer needs (all but
        the latest; with `none` the latest too once the sequence is done). Run after a stage is
        recorded, never before: until then resume needs the previous stage's model."""
        keep = self.cfg.checkpoint.keep
        if keep == KeepCheckpoints.all:
            return
        done = [r for r in self.stages if r.stage > 0]
        for record in done if finished and keep == KeepCheckpoints.none else done[:-1]:
            shutil.rmtree(stage_dir(self.run_dir, record.stage, record.trained_task) / "model", ignore_errors=True)

    def pending_stages(self):
        """The specs of the stages still to train, in order (a resumed run skips the done ones)."""
        for stage, (task, items) in enumerate(self.stage_items, start=1):
            if stage < len(self.stages):
                continue
            yield StageSpec(stage=stage, task=task, items=items, base_path=self.base_path,
                            start_path=self.start_path(), dir=stage_dir(self.run_dir, stage, task),
                            seed=self.cfg.seed + stage)

    def evaluate_base(self) -> None:
        log.info("stage 0/%d: evaluating the base model on %d tasks%s", self.num_stages, len(self.test_sets),
                 " (CoT)" if self.cfg.cot else "")
        faults.enter_stage(0)
        evaluation = self.steps.evaluate(stage_dir(self.run_dir, 0, "") / "eval")
        self.record(self.stage_record(0, "", evaluation, model=self.base_path))

    def log_batch(self) -> None:
        p = self.paradigm
        if p.completions_per_prompt > 1:
            log.info("%s: %d prompts x %d completions per optimizer step", p.name, p.prompts_per_step,
                     p.completions_per_prompt)

    def run_stage(self, spec: StageSpec) -> None:
        """filter -> rollout (when the paradigm asks for it) -> train (leaves the checkpoint) ->
        evaluate -> record."""
        self.stage_started = time.monotonic()
        faults.enter_stage(spec.stage)
        requeue.check()
        spec.dir.mkdir(parents=True, exist_ok=True)
        if self.cfg.schedule == Schedule.evaluate:
            return self.evaluate_checkpoint(spec)
        filtered = self.steps.filter(spec) if self.cfg.filter.name == FilterName.rif else None
        items = filtered.items if filtered else spec.items
        # replay.fraction: the earlier tasks' items among a sequential stage's
        replayed = [ex for ex in items if ex.task != spec.task] if spec.task != JOINT else []
        if replayed:
            write_jsonl(spec.dir / "replay.jsonl", [{"task": ex.task, "prompt": ex.prompt, "answer": ex.answer}
                                                    for ex in replayed])
        log.info("stage %d/%d: %s on %r (%d items%s)%s", spec.stage, self.num_stages, self.paradigm.name, spec.task,
                 len(items), f", {len(replayed)} of them replayed" if replayed else "",
                 stage_eta(self.stage_seconds, self.num_stages - spec.stage + 1))
        sampling = rollout_stats = None
        if (rollouts := self.paradigm.rollouts) is not None:  # the paradigm's declared rollout step
            sampling = self.steps.rollout(spec, items, rollouts)
            rows = self.paradigm.rows(items, sampling.sampled)
            rollout_stats = record_rollouts(spec, rollouts.length(self.cfg.eval.max_new_tokens), items, sampling, rows,
                                            PromptStyle.for_benchmark(self.benchmark, self.cfg.cot))
        if self.curves:
            self.curves.clear(spec)
        progress = TrainingProgress(self.tracker, spec.stage, self.compute.optimizer_steps)
        trained = self.steps.train(spec, items, progress, sampling.sampled if sampling else None)
        # the method's last word on the stage's model (cl=merge): before it is evaluated
        finished = [stats for hook in self.hooks if (stats := hook.finish_stage(spec, self.steps)) is not None]
        trained.train.replayed = len(replayed)
        if sampling:  # tokens generated to train, counted as GRPO's are
            trained.train.generated_tokens += sampling.tokens
        # TRL counts the tokens its trainers process (cumulative over the stage) in `num_tokens`
        trained.train.processed_tokens = int(max((row.get("num_tokens", 0) for row in trained.log), default=0))
        points = self.curves.pending(spec) if self.curves else []  # its end first, then these
        evaluation = self.steps.evaluate(spec.dir / "eval", drift_from=self.base_path, task=spec.task, points=points)
        diagnostics = replace(evaluation.drift, training=trained.diagnostics,
                              rif_kept_fraction=filtered.stats.kept_fraction if filtered else None)
        timings = StageTimings(train_seconds=round(trained.train_seconds, 3),
                               save_seconds=round(trained.save_seconds, 3),
                               optimizer_steps=trained.train.optimizer_steps,
                               rollout_seconds=round(sampling.seconds, 3) if sampling else None,
                               inner_eval_seconds=self.record_points(spec, points, evaluation.points))
        self.record(self.stage_record(spec.stage, spec.task, evaluation, timings=timings, diagnostics=diagnostics,
                                      train=trained.train, filter=filtered.stats if filtered else None,
                                      rollouts=rollout_stats, cl=finished[0] if finished else None,
                                      disk_bytes=disk_bytes(spec.dir)))
        self.prune_checkpoints()

    def record_points(self, spec: StageSpec, points: list, evaluations: list[Evaluation]) -> float | None:
        """The stage's inner points into curves.csv and the tracker, one by one; their seconds."""
        if not self.curves:
            return None
        for point, evaluation in zip(points, evaluations, strict=True):
            rows = self.curves.add(spec, point, evaluation, self.compute.optimizer_steps, self.stages)
            self.tracker.log_curve(rows, self.order, self.general)
            faults.reached("inner_point")
        Curves.clear(spec)  # the snapshots are evaluated (or were, by a killed attempt)
        return round(sum(e.seconds for e in evaluations), 3)

    def evaluate_checkpoint(self, spec: StageSpec) -> None:
        """schedule=evaluate: the stage's checkpoint was trained elsewhere; load, evaluate, record."""
        path = str(self.cfg.checkpoints[spec.stage - 1])
        log.info("stage %d/%d: evaluating %s (trained on %r elsewhere)", spec.stage, self.num_stages, path,
                 spec.task)
        self.steps.load(path)
        evaluation = self.steps.evaluate(spec.dir / "eval", drift_from=self.base_path, task=spec.task)
        self.record(self.stage_record(spec.stage, spec.task, evaluation, model=path,
                                      diagnostics=evaluation.drift,
                                      disk_bytes=disk_bytes(spec.dir)))

    @staticmethod
    def stage_record(stage: int, task: str, evaluation: Evaluation, *, timings: StageTimings | None = None,
                     diagnostics: Diagnostics | None = None, **fields) -> StageRecord:
        timings = timings or StageTimings()
        timings.eval_seconds = round(evaluation.seconds, 3)
        rates = evaluation.format_rate
        diagnostics = replace(diagnostics or Diagnostics(), format_rate=sum(rates.values()) / max(len(rates), 1))
        return StageRecord(stage=stage, trained_task=task, accuracy=evaluation.accuracy, n=evaluation.n,
                           diagnostics=diagnostics, format_rate=rates, timings=timings, harness=evaluation.harness,
                           **fields)

    def record(self, record: StageRecord) -> None:
        """A stage is complete: its stage.json (last in its folder), the run's files, the tracker."""
        self.stages.append(record)
        self.compute.add(record)
        self.timings["stages"][str(record.stage)] = record.timings.to_json()
        if record.stage > 0 and self.stage_started is not None:  # the stage lines' ETA: this process's stages
            self.stage_seconds.append(time.monotonic() - self.stage_started)
        write_json(stage_dir(self.run_dir, record.stage, record.trained_task) / STAGE_JSON, record.to_json())
        faults.reached("result_files")
        metrics = self.write_results()
        self.tracker.log_stage(record, metrics, self.flips)
        if self.curves:  # the stage's end (or the base) on the curves' axis too
            self.tracker.log_curve(self.curves.ends(self.stages), self.order, self.general)
        self.write_run_json("running")
        seen = self.order if record.trained_task == JOINT else self.order[: record.stage]
        shown = " ".join(f"{t}={100 * record.accuracy[t]:.0f}" for t in [*self.order, *self.general])
        avg = f" | avg over seen {100 * sum(record.accuracy[t] for t in seen) / len(seen):.1f}%" if seen else ""
        log.info("stage %d/%d done%s | %s", record.stage, self.num_stages, avg, shown)

    # --- the run's files -------------------------------------------------------------------

    def write_run_json(self, status: str, error: str | None = None) -> None:
        self.info.update(status=status, error=error, timings=self.timings, compute=self.compute.to_json(),
                         stages_completed=len(self.stages) - 1 if self.stages else 0)
        write_json(self.run_dir / RUN_JSON, self.info)

    def write_results(self) -> dict | None:
        metrics = run_metrics(self.stages, self.order, self.general)
        write_matrix_csv(self.run_dir / MATRIX_CSV, long_rows(self.stages))
        self.flips = write_flips(self.run_dir, self.stages, self.benchmark.tasks)  # from the eval files on disk
        if self.curves:
            self.curves.write(self.stages)
        if metrics:
            write_json(self.run_dir / METRICS_JSON, {**metrics, "order": self.order, "general_suite": self.general})
        return metrics

    def write_plots(self) -> dict[str, Path]:
        cfg = self.cfg
        title = (f"{cfg.paradigm.name} ({cfg.schedule}{', CoT' if cfg.cot else ''}) on {cfg.benchmark.name}, "
                 f"seed {cfg.seed}")
        return {
            "heatmap": plots.heatmap(self.stages, self.order, self.general, self.run_dir / "heatmap.png", title),
            "curves": plots.curves(self.stages, self.order, self.general, self.run_dir / "curves.png"),
        }
