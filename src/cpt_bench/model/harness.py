"""General ability measured by the harnesses researchers already use, as columns of the matrix.

`eval.harness.backend=lm_eval` hands the model, as the evaluate step holds it after the base
model and after every stage, to EleutherAI's lm-evaluation-harness (`simple_evaluate` with an
`HFLM` around the live model and its tokenizer) on `eval.harness.tasks`: the harness's own
tasks, or task YAMLs under `eval.harness.include_path` (which may point at local JSON or
parquet files). Each task's primary metric (the first of its metrics where higher is better),
its standard error, the items scored, the few-shot count and the task's version become a
`HarnessScore`; its value becomes the general-suite column `harness:<task>` of the accuracy
matrix, counted in the general change exactly as the benchmark's own general tasks are.

`lmms_eval` (vision-language models: MMMU, POPE) goes through lmms-eval's `simple_evaluate`
with its `qwen2_5_vl` model loaded from the stage's checkpoint. It is prepared, not verified:
lmms-eval needs torchvision and pins wandb 0.25, neither installable beside this project's
locked CPU environment (docs/cluster.md).

`check_harness` runs when a run is planned, before any model: the harness installed, every
task known, each task's data readable (with `HF_HUB_OFFLINE=1`, from the local cache only);
each failure is one ConfigError line.
"""

from __future__ import annotations

import functools
import importlib
import logging
import time
from importlib import metadata

from cpt_bench.choices import HarnessBackend
from cpt_bench.config import HarnessConfig
from cpt_bench.errors import ConfigError
from cpt_bench.outputs.records import HARNESS_PREFIX, HarnessResult, HarnessScore

log = logging.getLogger("cpt_bench")

# backend -> (module, pip distribution, the cpt-bench extra that installs it)
INSTALL = {HarnessBackend.lm_eval: ("lm_eval", "lm-eval", "cpt-bench[harness]"),
           HarnessBackend.lmms_eval: ("lmms_eval", "lmms-eval", "cpt-bench[harness-vlm]")}
BOOTSTRAP_ITERS = 1000  # the harness's bootstrap for stderrs of non-mean metrics (its default: 100,000)


def harness_columns(h: HarnessConfig) -> list[str]:
    """The matrix columns the harness adds (none with backend=none)."""
    return [] if h.backend == HarnessBackend.none else [HARNESS_PREFIX + task for task in h.tasks]


def _module(h: HarnessConfig):
    name, dist, extra = INSTALL[h.backend]
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(f"eval.harness.backend={h.backend} needs {dist}, which is not installed "
                          f"({exc.msg}): pip install '{extra}'") from None


def _task_manager(h: HarnessConfig):
    return _built_task_manager(INSTALL[h.backend][0], h.include_path)


@functools.cache
def _built_task_manager(package: str, include_path: str | None):
    """A harness's TaskManager, built once per process: building one indexes every task YAML
    the harness ships (about 6 s for lm-eval on 2 CPU cores), and a run asks at planning and at
    every evaluation."""
    tasks = importlib.import_module(f"{package}.tasks")
    return tasks.TaskManager(include_path=include_path) if include_path else tasks.TaskManager()


def check_harness(h: HarnessConfig) -> None:
    """Everything that can fail before a model is built: the harness installed, every task
    known, every task's data readable here (offline: from the cache). Raises ConfigError."""
    if h.backend == HarnessBackend.none:
        return
    _module(h)
    manager = _task_manager(h)
    known = set(manager.all_tasks)
    unknown = [t for t in h.tasks if t not in known]
    if unknown:
        where = f" or under eval.harness.include_path={h.include_path}" if h.include_path else ""
        raise ConfigError(f"eval.harness: unknown task {unknown[0]!r}: not one of {h.backend}'s {len(known)} "
                          f"tasks{where} (its `--tasks list` lists them)")
    tasks = importlib.import_module(f"{INSTALL[h.backend][0]}.tasks")
    try:
        tasks.get_task_dict(list(h.tasks), manager)  # reads every task's data, as evaluation will
    except Exception as exc:  # noqa: BLE001 - datasets and the hub raise many kinds; each becomes one line
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"eval.harness: the data of {', '.join(h.tasks)} could not be read ({type(exc).__name__}: "
                          f"{detail}); offline (HF_HUB_OFFLINE=1) a task's dataset must already be in the Hugging "
                          "Face cache: download it once where there is a network (docs/cluster.md)") from None


def primary_score(results: dict, task: str) -> HarnessScore:
    """A task's (or group's) primary metric in a harness's `simple_evaluate` output: the first
    of its metrics where higher is better, with its stderr, items, few-shot count and version."""
    row = results["results"][task]
    better = results.get("higher_is_better", {}).get(task, {})
    keys = [k for k in row if "," in k and "_stderr," not in k and isinstance(row[k], int | float)]
    chosen = next((k for k in keys if better.get(k.split(",")[0])), None)
    if chosen is None:
        raise ConfigError(f"eval.harness task {task!r} reports no metric where higher is better ({', '.join(keys)}): "
                          "the matrix holds scores in [0, 1]")
    name, _, filt = chosen.partition(",")
    value = float(row[chosen])
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"eval.harness task {task!r}: its primary metric {name} is {value}, not in [0, 1]; "
                          "the matrix holds scores in [0, 1]: pick a task scored as a share")
    stderr = row.get(f"{name}_stderr,{filt}")
    samples = results.get("n-samples", {})
    members = [task] if task in samples else results.get("group_subtasks", {}).get(task, [])
    n = sum(samples[m]["effective"] for m in members if m in samples)
    version = results.get("versions", {}).get(task)
    return HarnessScore(task, chosen, value, float(stderr) if isinstance(stderr, int | float) else None, int(n),
                        results.get("n-shot", {}).get(task), None if version is None else str(version))


def evaluate_harness(model, processing_class, h: HarnessConfig, model_path: str | None = None) -> HarnessResult:
    """The harness's tasks on `model` (lm_eval: the live model; lmms_eval: loaded from
    `model_path`, the checkpoint it holds). Runs in the caller's precision context."""
    module = _module(h)
    start = time.time()
    common = dict(tasks=list(h.tasks), task_manager=_task_manager(h), num_fewshot=h.num_fewshot,
                  limit=int(h.limit) if h.limit is not None and h.limit >= 1 else h.limit,
                  apply_chat_template=h.apply_chat_template, gen_kwargs=dict(h.gen_kwargs) or None,
                  log_samples=False, bootstrap_iters=BOOTSTRAP_ITERS, random_seed=h.seed,
                  numpy_random_seed=h.seed, torch_random_seed=h.seed, fewshot_random_seed=h.seed)
    if h.backend == HarnessBackend.lm_eval:
        from lm_eval.models.huggingface import HFLM

        from cpt_bench.model.processing import text_tokenizer

        model.eval()
        lm = HFLM(pretrained=model, tokenizer=text_tokenizer(processing_class), batch_size=h.batch_size)
        results = module.simple_evaluate(model=lm, **common)
    else:
        results = importlib.import_module("lmms_eval.evaluator").simple_evaluate(
            model="qwen2_5_vl", model_args=f"pretrained={model_path}", batch_size=h.batch_size, **common)
    scores = [primary_score(results, task) for task in h.tasks]
    seconds = time.time() - start
    log.info("harness (%s): %s in %.1f s", h.backend,
             ", ".join(f"{s.task} {s.metric.split(',')[0]} {100 * s.value:.1f}" for s in scores), seconds)
    return HarnessResult(str(h.backend), metadata.version(INSTALL[h.backend][1]), scores, round(seconds, 3))
