"""The stage loop: evaluate the base model, then train and evaluate one stage per task.

    base --eval all--> R[0];  for task in order: train --> save --> eval all --> R[t]

Every stage leaves `stages/<kk>-<task>/` with its model, its eval records and a
`stage.json` written last, which marks the stage complete. A run that stops (crash,
pre-emption, Ctrl-C) is resumed from its last complete stage by running the same command
with the same run directory; a finished run is never overwritten without `overwrite=true`.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from cpt_bench import plots
from cpt_bench.evaluation import accuracy, evaluate_tasks
from cpt_bench.models import TinyRecipe, build_tiny_base, load_model_and_tokenizer
from cpt_bench.paradigms import StageContext, build_paradigm
from cpt_bench.results import StageEval, format_summary, run_metrics
from cpt_bench.tasks import Benchmark, ConfigError, build_benchmark, resolve_order
from cpt_bench.tracking import (
    command_line, hardware, make_tracker, package_versions, read_json, write_json,
    write_jsonl, write_matrix_csv,
)

log = logging.getLogger("cpt_bench")

RESULT_FILES = ["matrix.csv", "metrics.json", "heatmap.png", "curves.png", "summary.txt"]


def plan(cfg: DictConfig) -> tuple[Benchmark, list[str]]:
    """Validate the cheap parts of the config; raises ConfigError before any model exists."""
    benchmark = build_benchmark(cfg.benchmark)
    order = resolve_order(benchmark, cfg.order)
    build_paradigm(cfg.paradigm)
    if cfg.checkpoint.keep not in ("all", "last"):
        raise ConfigError(f"checkpoint.keep must be 'all' or 'last', not {cfg.checkpoint.keep!r}")
    if cfg.logger.mode not in ("offline", "online", "disabled"):
        raise ConfigError(f"logger.mode must be offline, online or disabled, not {cfg.logger.mode!r}")
    if cfg.model.builtin is None and cfg.model.path is None:
        raise ConfigError("model needs a `path` (local folder or hub id) or a `builtin` name")
    if cfg.model.builtin not in (None, "tiny"):
        raise ConfigError(f"unknown built-in model {cfg.model.builtin!r}; available: tiny")
    return benchmark, order


def stage_dir(run_dir: Path, stage: int, task: str) -> Path:
    return run_dir / "stages" / f"{stage:02d}-{task or 'base'}"


def _comparable(cfg: DictConfig) -> dict:
    """The config that defines the results (what must match to resume a run)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("overwrite", None)
    data.get("logger", {}).pop("mode", None)
    return data


def prepare_run_dir(cfg: DictConfig, run_dir: Path) -> list[StageEval]:
    """Refuse to clobber a finished run; return the stages an unfinished one completed."""
    run_json = run_dir / "run.json"
    if not run_json.exists():
        return []
    previous = read_json(run_json)
    if cfg.overwrite:
        log.warning("overwrite=true: clearing the previous run in %s", run_dir)
        shutil.rmtree(run_dir / "stages", ignore_errors=True)
        shutil.rmtree(run_dir / "wandb", ignore_errors=True)
        for name in ["run.json", *RESULT_FILES]:
            (run_dir / name).unlink(missing_ok=True)
        return []
    if previous.get("status") == "finished":
        raise ConfigError(
            f"{run_dir} already holds a finished run; pick another hydra.run.dir or pass overwrite=true"
        )
    if previous.get("config") != _comparable(cfg):
        raise ConfigError(
            f"{run_dir} holds an unfinished run with a different config; "
            "rerun it with the same overrides to resume, or pass overwrite=true"
        )
    done = []
    for path in sorted((run_dir / "stages").glob("*/stage.json")):
        rec = read_json(path)
        done.append(StageEval(rec["stage"], rec["trained_task"], rec["accuracy"], rec["n"]))
    done = [s for i, s in enumerate(done) if s.stage == i]  # only an unbroken prefix counts
    if done:
        log.info("resuming %s after stage %d", run_dir, done[-1].stage)
    return done


def base_model_path(cfg: DictConfig) -> str:
    if cfg.model.builtin == "tiny":
        recipe = TinyRecipe(**OmegaConf.to_container(cfg.model.recipe))
        return str(build_tiny_base(recipe, cfg.model.cache_dir))
    return cfg.model.path


def resolve_dtype(name: str) -> torch.dtype:
    if name == "auto":
        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    return {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[name]


class Run:
    """One CPT sequence in one run directory."""

    def __init__(self, cfg: DictConfig, run_dir: Path, wandb_group: str | None = None):
        self.cfg, self.run_dir, self.wandb_group = cfg, run_dir, wandb_group
        self.benchmark, self.order = plan(cfg)
        self.general = list(self.benchmark.general) if cfg.eval.general else []
        # drawing every split now surfaces a too-small task before any model is built
        self.test_sets = {t: self.benchmark.tasks[t].test() for t in [*self.order, *self.general]}
        self.train_sets = {t: self.benchmark.tasks[t].train() for t in self.order}
        self.stages: list[StageEval] = []
        self.timings: dict = {"stages": {}}
        self.info: dict = {}
        self.train_step_offset = 0

    # --- bookkeeping ------------------------------------------------------------------

    def write_run_json(self, status: str, error: str | None = None) -> None:
        self.info.update(status=status, error=error, timings=self.timings,
                         stages_completed=len(self.stages) - 1 if self.stages else 0)
        write_json(self.run_dir / "run.json", self.info)

    def write_results(self) -> dict | None:
        metrics = run_metrics(self.stages, self.order, self.general)
        write_matrix_csv(self.run_dir / "matrix.csv", self.stages)
        if metrics:
            write_json(self.run_dir / "metrics.json", {**metrics, "order": self.order,
                                                       "general_suite": self.general})
        return metrics

    def write_plots(self) -> dict[str, Path]:
        title = f"{self.cfg.paradigm.name} on {self.cfg.benchmark.name}, seed {self.cfg.seed}"
        return {
            "heatmap": plots.heatmap(self.stages, self.order, self.general, self.run_dir / "heatmap.png", title),
            "curves": plots.curves(self.stages, self.order, self.general, self.run_dir / "curves.png"),
        }

    # --- the loop -----------------------------------------------------------------------

    def evaluate(self, model, tokenizer, stage: int, task: str, test_sets) -> StageEval:
        start = time.time()
        records = evaluate_tasks(model, tokenizer, self.benchmark.tasks, test_sets,
                                 batch_size=self.cfg.eval.batch_size,
                                 max_new_tokens=self.cfg.eval.max_new_tokens)
        out = stage_dir(self.run_dir, stage, task) / "eval"
        out.mkdir(parents=True, exist_ok=True)
        for name, recs in records.items():
            write_jsonl(out / f"{name}.jsonl", [asdict(r) for r in recs])
        result = StageEval(stage, task, {k: accuracy(v) for k, v in records.items()},
                           {k: len(v) for k, v in records.items()})
        self.timings["stages"].setdefault(str(stage), {})["eval_seconds"] = round(time.time() - start, 3)
        return result

    def finish_stage(self, result: StageEval, tracker, extra: dict) -> None:
        self.stages.append(result)
        write_json(stage_dir(self.run_dir, result.stage, result.trained_task) / "stage.json",
                   {**asdict(result), **extra, "timings": self.timings["stages"][str(result.stage)]})
        metrics = self.write_results()
        tracker.log_stage(result, metrics)
        self.write_run_json("running")
        seen = self.order[: result.stage]
        shown = " ".join(f"{t}={100 * result.accuracy[t]:.0f}" for t in [*self.order, *self.general])
        avg = f" | avg over seen {100 * sum(result.accuracy[t] for t in seen) / len(seen):.1f}%" if seen else ""
        log.info("stage %d/%d done%s | %s", result.stage, len(self.order), avg, shown)

    def execute(self) -> dict | None:
        cfg, run_dir = self.cfg, self.run_dir
        started = time.time()
        run_dir.mkdir(parents=True, exist_ok=True)
        self.stages = []
        done = prepare_run_dir(cfg, run_dir)
        self.info = {
            "status": "running", "command": command_line(), "config": _comparable(cfg),
            "order": self.order, "general_suite": self.general, "seed": cfg.seed,
            "versions": package_versions(), "hardware": hardware(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        from transformers import set_seed

        set_seed(cfg.seed)

        t0 = time.time()
        base_path = base_model_path(cfg)
        self.timings["base_model_seconds"] = round(time.time() - t0, 3)
        self.info["base_model"] = base_path
        test_sets = self.test_sets
        self.write_run_json("running")

        name = f"{cfg.paradigm.name}-{cfg.benchmark.name}-{run_dir.name}"
        tracker = make_tracker(cfg.logger, run_dir, self.info["config"], name, self.wandb_group)
        ok, metrics, error = False, None, None
        try:
            metrics = self._loop(base_path, test_sets, done, tracker)
            ok = True
        except BaseException as exc:  # record the failure, keep all finished stages, re-raise
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.timings["total_seconds"] = round(time.time() - started, 3)
            images = self.write_plots() if self.stages else {}
            self.write_run_json("finished" if ok else "failed", error)
            tracker.finish(self.stages, metrics, images, ok)
        summary = format_summary(self.stages, self.order, self.general, metrics)
        (run_dir / "summary.txt").write_text(summary + "\n")
        print("\n" + summary + f"\n\nResults in {run_dir}", flush=True)
        return metrics

    def _loop(self, base_path: str, test_sets, done: list[StageEval], tracker) -> dict | None:
        cfg = self.cfg
        start_from = base_path
        if done:
            last = done[-1]
            start_from = str(stage_dir(self.run_dir, last.stage, last.trained_task) / "model") if last.stage else base_path
            for s in done:
                self.stages.append(s)
                tracker.log_stage(s, run_metrics(self.stages, self.order, self.general))
        dtype = resolve_dtype(cfg.model.dtype)
        model, tokenizer = load_model_and_tokenizer(start_from, dtype=dtype)
        use_cpu = not torch.cuda.is_available()
        if not use_cpu:
            model.to("cuda")
        if not self.stages:
            log.info("stage 0/%d: evaluating the base model on %d tasks", len(self.order), len(test_sets))
            self.finish_stage(self.evaluate(model, tokenizer, 0, "", test_sets), tracker, {"model": base_path})

        paradigm = build_paradigm(cfg.paradigm)
        for k, task_name in enumerate(self.order, start=1):
            if k < len(self.stages):
                continue
            task = self.benchmark.tasks[task_name]
            sdir = stage_dir(self.run_dir, k, task_name)
            train = self.train_sets[task_name]
            log.info("stage %d/%d: %s on %r (%d items)", k, len(self.order), paradigm.name, task_name, len(train))
            train_log: list[dict] = []
            printed = [0]

            def on_log(step: int, total: int, logs: dict, k=k, train_log=train_log, printed=printed) -> None:
                train_log.append({"step": step, **logs})
                tracker.log_train(self.train_step_offset + step, k, logs)
                # the terminal gets a line per quarter of the stage; files and W&B get every log
                quarter = 4 * step // max(total, 1)
                if "loss" in logs and quarter > printed[0]:
                    printed[0] = quarter
                    log.info("  stage %d step %d/%d loss %.4f", k, step, total, logs["loss"])

            ctx = StageContext(
                index=k, total=len(self.order), task=task, work_dir=sdir / "trainer", seed=cfg.seed + k,
                use_cpu=use_cpu, bf16=dtype == torch.bfloat16,
                deepspeed=OmegaConf.to_container(cfg.deepspeed.config) if cfg.deepspeed.config else None,
                on_log=on_log,
            )
            result = paradigm.train_stage(model, tokenizer, train, ctx)
            model = result.model
            self.train_step_offset += result.optimizer_steps
            write_jsonl(sdir / "train_log.jsonl", train_log)
            t0 = time.time()
            model.save_pretrained(sdir / "model")
            tokenizer.save_pretrained(sdir / "model")
            shutil.rmtree(sdir / "trainer", ignore_errors=True)
            if cfg.checkpoint.keep == "last" and k > 1:
                prev = self.order[k - 2]
                shutil.rmtree(stage_dir(self.run_dir, k - 1, prev) / "model", ignore_errors=True)
            self.timings["stages"][str(k)] = {"train_seconds": round(result.train_seconds, 3),
                                              "save_seconds": round(time.time() - t0, 3),
                                              "optimizer_steps": result.optimizer_steps}
            evaluated = self.evaluate(model, tokenizer, k, task_name, test_sets)
            self.finish_stage(evaluated, tracker, {"train": {**result.metrics, "items": len(train),
                                                             "optimizer_steps": result.optimizer_steps}})
        return run_metrics(self.stages, self.order, self.general)
