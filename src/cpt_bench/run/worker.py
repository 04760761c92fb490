"""One step of a stage in one process of a torchrun job (`launcher=torchrun`).

    python -m torch.distributed.run ... -m cpt_bench.run.worker <train|evaluate|rollout> CONFIG SPEC

CONFIG is the run's resolved config (written once by the controller), SPEC the step's typed
spec (wire.py, written per step). This module only starts the rank, before anything that
may touch CUDA is imported: its device (`CUDA_VISIBLE_DEVICES` narrowed to its own GPU where
the step's engine needs it, `torch.cuda.set_device`), DeepSpeed's communication layer for
training; then rank.py runs the step. What a step computes goes to files the controller
reads (wire.py); the exit code says whether it failed.

    train     every rank trains (one process group; DeepSpeed ZeRO when configured); the
              checkpoint is saved through the trainer (ZeRO-3 gathers it); rank 0 streams
              `train_log.jsonl` (one line per log event, flushed) and writes `result.json`
    evaluate  each rank holds a full replica on its own device and greedily evaluates the test
              items i with i % world == rank into `shard-<rank>.json`; rank 0 also measures
              the drift from the base model when asked (`drift.json`)
    rollout   K rollouts per item (RIF's, or a paradigm's rollout step), sharded the same way,
              into `rollout-<purpose>-shard-<rank>.json`
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from cpt_bench.distributed import start_rank, zero_stage

log = logging.getLogger("cpt_bench.run.worker")


def own_engine_device(step: str, cfg) -> bool:
    """Whether the step's engine must see only the rank's own GPU: vLLM's (tensor parallel
    size 1) takes the first visible GPU, so on 8 ranks every engine would land on GPU 0."""
    return step in ("evaluate", "rollout") and str(cfg.eval.backend) == "vllm"


def main(argv: list[str] | None = None) -> int:
    step, config_path, spec_path = argv if argv is not None else sys.argv[1:]
    raw = OmegaConf.load(config_path)  # only what starting the rank needs; typed and checked below
    device = start_rank(own_device=own_engine_device(step, raw),
                        deepspeed=step == "train" and zero_stage(raw) is not None)
    logging.basicConfig(level=logging.INFO, format=f"[rank {os.environ.get('RANK', 0)}] %(name)s: %(message)s")
    import torch

    from cpt_bench.quiet import quiet_libraries
    from cpt_bench.run.rank import RankSteps
    from cpt_bench.run.wire import SPECS, read_config, read_record

    quiet_libraries()
    cfg = read_config(Path(config_path))  # the run's typed Config, through the same validate()
    steps = RankSteps(cfg, read_record(Path(spec_path), SPECS[step]), device)
    log.info("%s step of stage %s on rank %d of %d (%s)", step, getattr(steps.spec, "stage", "-"), steps.rank,
             steps.world, device)
    getattr(steps, step)()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
