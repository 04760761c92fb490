"""One step of a stage in one process of a torchrun job (`launcher=torchrun`).

    python -m torch.distributed.run ... -m cpt_bench.worker <train|evaluate|filter> CONFIG SPEC

CONFIG is the run's resolved config (written once by the controller), SPEC the step's JSON
spec (written per step). The worker uses no Hydra and no W&B: it rebuilds the benchmark from
the config, deterministically, so items cross the process boundary as indices. What it
computes goes to files the controller reads; its exit code says whether it failed.

    train     every rank trains (one process group; DeepSpeed ZeRO when configured); the
              checkpoint is saved through the trainer (ZeRO-3 gathers it); rank 0 streams
              `train_log.jsonl` (one line per log event, flushed) and writes `result.json`
    evaluate  each rank holds a full replica on its own device and greedily evaluates the test
              items i with i % world == rank into `shard-<rank>.jsonl`; rank 0 also measures
              the parameter drift from the base model when asked
    filter    RIF rollouts, sharded the same way, into `filter-shard-<rank>.jsonl`
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import OmegaConf

log = logging.getLogger("cpt_bench.worker")


class Worker:
    def __init__(self, config_path: str, spec_path: str):
        from cpt_bench.config import PARADIGM_SCHEMAS
        from cpt_bench.paradigms import build_paradigm
        from cpt_bench.prompts import PromptStyle
        from cpt_bench.tasks import build_benchmark, resolve_order

        self.cfg = cfg = OmegaConf.load(config_path)
        self.spec = json.loads(Path(spec_path).read_text())
        self.rank, self.world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.benchmark = build_benchmark(cfg.benchmark)
        self.order = resolve_order(self.benchmark, cfg.order)
        self.general = list(self.benchmark.general) if cfg.eval.general else []
        self.style = PromptStyle.for_benchmark(self.benchmark, cfg.cot)
        schema = OmegaConf.merge(OmegaConf.structured(PARADIGM_SCHEMAS[cfg.paradigm.name]), cfg.paradigm)
        self.paradigm = build_paradigm(OmegaConf.to_object(schema), self.world)
        self.dir = Path(self.spec["dir"])
        self.dir.mkdir(parents=True, exist_ok=True)

    def load(self, path: str):
        from cpt_bench.loading import load_checkpoint, resolve_dtype

        model, processing_class = load_checkpoint(path, dtype=resolve_dtype(self.cfg.model.dtype))
        if torch.cuda.is_available():
            model.to(f"cuda:{self.local_rank}")
        return model, processing_class

    def sum(self, value: int) -> int:
        """`value` summed over the ranks (each rank counts its own rollouts)."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return value
        total = torch.tensor([value], device=f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu")
        dist.all_reduce(total)
        return int(total.item())

    def items(self) -> list:
        from cpt_bench.steps import stage_items

        return stage_items(self.benchmark, self.order, self.cfg.schedule, self.cfg.seed,
                           self.cfg.replay)[self.spec["stage"] - 1][1]

    def generator(self, path: str):
        """(model, processing class, engine) for generating from `path`: the model itself, or
        with `eval.backend=vllm` a vLLM engine (and no model on the GPU beside it)."""
        if self.cfg.eval.backend != "vllm":
            return (*self.load(path), None)
        from cpt_bench.loading import load_processing_class
        from cpt_bench.vllm_engine import VLLMEngine

        return None, load_processing_class(path), VLLMEngine(path, seed=self.spec["seed"] + self.rank)

    def mine(self, n: int) -> list[int]:
        """This rank's share of n items: every world-th, starting at its rank."""
        return list(range(self.rank, n, self.world))

    # --- the steps ---------------------------------------------------------------------------

    def evaluate(self) -> None:
        from cpt_bench.drift import param_drift
        from cpt_bench.evaluation import evaluate_tasks
        from cpt_bench.rundir import write_json, write_jsonl
        from cpt_bench.steps import output_drift, test_sets

        sets = test_sets(self.benchmark, self.order, self.general)
        flat = [(task, ex) for task, items in sets.items() for ex in items]  # the global item order
        indices = {task: [] for task in sets}
        for i in self.mine(len(flat)):
            indices[flat[i][0]].append(i)
        path = self.spec["model_path"]
        model, processing_class, engine = self.generator(path)
        records = evaluate_tasks(model, processing_class, self.benchmark.tasks,
                                 {task: [flat[i][1] for i in idx] for task, idx in indices.items()}, self.style,
                                 batch_size=self.cfg.eval.batch_size, max_new_tokens=self.cfg.eval.max_new_tokens,
                                 engine=engine)
        rows = [{"index": i, **asdict(r)} for task in sets for i, r in zip(indices[task], records[task])]
        write_jsonl(self.dir / f"shard-{self.rank}.jsonl", rows)
        if self.rank == 0 and self.spec.get("drift_from"):
            if model is None:  # vLLM generated: the weights are read on the CPU for the drift alone
                from cpt_bench.loading import load_checkpoint

                model, _ = load_checkpoint(path)
            drift = {"param_drift": param_drift(model, self.spec["drift_from"])}
            if self.spec.get("task") and self.cfg.eval.kl_samples:
                drift["output_drift"] = output_drift(self.cfg, model, processing_class, self.spec["drift_from"],
                                                     self.style, sets, self.order, self.general, self.spec["task"])
            write_json(self.dir / "drift.json", drift)

    def filter(self) -> None:
        from transformers import set_seed

        from cpt_bench.paradigms.filtering import rollout_scores
        from cpt_bench.rundir import write_jsonl

        set_seed(self.spec["seed"] + self.rank)  # each rank samples its own rollouts
        items = self.items()
        idx = self.mine(len(items))
        f = self.cfg.filter
        model, processing_class, engine = self.generator(self.spec["model_path"])
        scores, tokens = rollout_scores(
            model, processing_class, [items[i] for i in idx], tasks=self.benchmark.tasks, style=self.style,
            num_rollouts=f.num_rollouts, temperature=f.temperature,
            max_new_tokens=self.paradigm.completion_length or self.cfg.eval.max_new_tokens,
            batch_size=max(1, f.batch_size // f.num_rollouts), engine=engine)
        write_jsonl(self.dir / f"filter-shard-{self.rank}.jsonl",
                    [{"index": i, "scores": s} for i, s in zip(idx, scores)] + [{"generated_tokens": tokens}])

    def train(self) -> None:
        from transformers import set_seed

        from cpt_bench.rundir import write_json
        from cpt_bench.steps import StageSpec, publish_checkpoint, stage_context
        from cpt_bench.vision_zero3 import align_vision_tower, needs_alignment

        spec = self.spec
        set_seed(spec["seed"])
        items = [self.items()[i] for i in spec["item_indices"]]
        model, processing_class = self.load(spec["start_path"])
        log_file = open(self.dir / "train_log.jsonl", "w") if self.rank == 0 else None  # noqa: SIM115

        def on_log(step: int, total: int, logs: dict) -> None:
            if log_file:
                log_file.write(json.dumps({"step": step, "max_steps": total, **logs}) + "\n")
                log_file.flush()

        stage = StageSpec(stage=spec["stage"], task=spec["task"], items=items, base_path=spec["base_path"],  # kept ones
                          start_path=spec["start_path"], dir=self.dir, seed=spec["seed"])
        ctx = stage_context(self.cfg, self.benchmark, self.style, stage, on_log)
        if needs_alignment(model, ctx.deepspeed, self.world):
            align_vision_tower(model, processing_class)
        if items:
            result = self.paradigm.train_stage(model, processing_class, items, ctx)
            out = {"optimizer_steps": result.optimizer_steps, "generated_tokens": self.sum(result.generated_tokens),
                   "metrics": result.metrics, "train_seconds": result.train_seconds,
                   "save_seconds": result.save_seconds}
        else:  # RIF kept nothing: the stage trains nothing, the model is unchanged
            start = time.time()
            if self.rank == 0:
                model.save_pretrained(stage.partial_model_dir)
            out = {"optimizer_steps": 0, "generated_tokens": 0, "metrics": {}, "train_seconds": 0.0,
                   "save_seconds": time.time() - start}
        if log_file:
            log_file.close()
        if torch.cuda.is_available():
            out["metrics"]["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30  # rank 0's
        if self.rank == 0:
            processing_class.save_pretrained(stage.partial_model_dir)
            publish_checkpoint(stage)
            shutil.rmtree(self.dir / "trainer", ignore_errors=True)
            write_json(self.dir / "result.json", out)  # last: the controller reads it after the exit code


def main(argv: list[str] | None = None) -> int:
    step, config_path, spec_path = argv if argv is not None else sys.argv[1:]
    logging.basicConfig(level=logging.INFO, format=f"[rank {os.environ.get('RANK', 0)}] %(name)s: %(message)s")
    from cpt_bench.cli import quiet_libraries

    quiet_libraries()
    worker = Worker(config_path, spec_path)
    log.info("%s step of stage %s on rank %d of %d", step, worker.spec.get("stage", "-"), worker.rank, worker.world)
    {"train": worker.train, "evaluate": worker.evaluate, "filter": worker.filter}[step]()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
