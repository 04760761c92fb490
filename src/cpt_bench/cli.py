"""`cpt-bench`: the Hydra entry point. Compose the config, validate it, run the sequence."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cpt_bench.config import register_configs

register_configs()
log = logging.getLogger("cpt_bench")


def quiet_libraries() -> None:
    """Keep the terminal to cpt-bench's own progress lines: no per-map or per-shard bars."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def _sweep_group() -> str | None:
    """Runs of one multirun share a W&B group named after the sweep directory."""
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return Path(hc.sweep.dir).as_posix().replace("/", "_").strip("_")
    return None


@hydra.main(version_base="1.3", config_path="pkg://cpt_bench.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from cpt_bench.continual import Run
    from cpt_bench.errors import ConfigError

    quiet_libraries()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        run = Run(cfg, run_dir, wandb_group=_sweep_group())
        metrics = run.execute()
    except ConfigError as exc:
        print(f"cpt-bench: error: {exc}", file=sys.stderr)
        sys.exit(2)
    return metrics["final_avg_acc"] if metrics else None  # a sweeper's objective


if __name__ == "__main__":
    main()
