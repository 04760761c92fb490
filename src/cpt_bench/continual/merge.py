"""cl=merge: after each stage (the first included), the model that is evaluated, saved and
carried into the next stage is a merge of the weights the stage started from and the stage's.

`rule=linear` (default, WiSE-FT):  (1 - alpha) * theta_prev + alpha * theta_stage.
The task-vector rules are peft's own (`peft.utils.merge_utils`: task_arithmetic, ties,
dare_linear, dare_ties), on task vectors taken either
  - `task_vectors_from=previous`: theta_prev + merge([theta_stage - theta_prev], [alpha]), or
  - `task_vectors_from=base`:     theta_base + merge([theta_prev - theta_base, theta_stage - theta_base],
                                                     [1 - alpha, alpha]),
so task_arithmetic equals linear up to rounding either way, and TIES/DARE differ by what they
trim (`density`, the share of each task vector kept) and, from the base, by their sign
election between the earlier stages and this one. DARE's random drop is seeded by the stage.

The merge works on the published checkpoint files in the controller (tensor by tensor, float32,
written back in the checkpoint's dtype), so it runs the same under both launchers, any
DeepSpeed stage and LoRA (whose stage checkpoint is already merged into full weights).
`evaluate_unmerged=true` also evaluates the stage's own model before the merge
(`stages/<kk>-<task>/eval_unmerged/`, stage.json's `cl.unmerged_accuracy`): one more
evaluation per stage, the cost of an evaluation step (`timings.eval_seconds`).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cpt_bench.choices import MergeRule, TaskVectorsFrom, require
from cpt_bench.continual.base import Method, MethodSettings, MethodSpec
from cpt_bench.outputs.records import ContinualStats
from cpt_bench.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class MergeSettings(MethodSettings):
    name: str = "merge"
    rule: MergeRule = MergeRule.linear
    alpha: float = 0.5  # the stage's weight (1 - alpha: the model it started from)
    density: float = 0.5  # ties / dare: the share of each task vector kept
    task_vectors_from: TaskVectorsFrom = TaskVectorsFrom.previous
    evaluate_unmerged: bool = False  # also evaluate the stage's own model before the merge

    def validate(self, at: str = "cl") -> None:
        require(0 <= self.alpha <= 1, f"{at}.alpha", self.alpha, "in [0, 1]")
        require(0 < self.density <= 1, f"{at}.density", self.density, "in (0, 1]")


def merged_tensor(prev: torch.Tensor, stage: torch.Tensor, base: torch.Tensor | None,
                  cfg: MergeSettings) -> torch.Tensor:
    """One weight merged by `cfg` (float32 inside, returned in the stage's dtype)."""
    if not stage.is_floating_point():
        return stage
    p, s = prev.float(), stage.float()
    if cfg.rule == MergeRule.linear:  # written so that alpha 0 and 1 give either side exactly
        out = (1 - cfg.alpha) * p + cfg.alpha * s
    else:
        from peft.utils import merge_utils

        rule = getattr(merge_utils, str(cfg.rule))
        extra = {} if cfg.rule == MergeRule.task_arithmetic else {"density": cfg.density}
        if cfg.task_vectors_from == TaskVectorsFrom.previous:
            out = p + rule([s - p], torch.tensor([cfg.alpha]), **extra)
        else:
            b = base.float()
            out = b + rule([p - b, s - b], torch.tensor([1 - cfg.alpha, cfg.alpha]), **extra)
    return out.to(stage.dtype)


def checkpoint_tensors(folder: Path) -> dict[str, Path]:
    """Each weight of a Hugging Face checkpoint folder -> the safetensors file that holds it."""
    from safetensors import safe_open

    where = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            where |= {key: path for key in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    if not where:
        raise FileNotFoundError(f"no safetensors weights in {folder}")
    return where


class _Reader:
    """Tensors of a checkpoint folder by name, one open file at a time."""

    def __init__(self, folder: Path):
        self.where, self.path, self.file = checkpoint_tensors(folder), None, None

    def __getitem__(self, key: str) -> torch.Tensor:
        from safetensors import safe_open

        if key not in self.where:
            raise KeyError(f"{key} is in the stage's checkpoint but not in {next(iter(self.where.values())).parent}")
        if self.where[key] != self.path:
            self.path = self.where[key]
            self.file = safe_open(str(self.path), "pt")
        return self.file.get_tensor(key)


def local_folder(path: str) -> Path:
    """A model folder on disk: `path` itself, or a hub id's local snapshot (never downloaded)."""
    if Path(path).expanduser().is_dir():
        return Path(path).expanduser()
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(path, local_files_only=True))


def merge_checkpoints(previous: str, stage: Path, out: Path, cfg: MergeSettings, *, base: str | None = None,
                      seed: int = 0) -> None:
    """Write into `out` the checkpoint `stage` with every weight merged with `previous`'s (and
    `base`'s, for task vectors from the base); every other file of `stage` copied as is."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(stage, out, ignore=shutil.ignore_patterns("*.safetensors"))
    prev = _Reader(local_folder(previous))
    origin = _Reader(local_folder(base)) if cfg.task_vectors_from == TaskVectorsFrom.base and \
        cfg.rule != MergeRule.linear else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # DARE's random drop
        for path in Progress.over(sorted(stage.glob("*.safetensors")), "merging", "shard"):
            with safe_open(str(path), "pt") as f:
                metadata = f.metadata()
                merged = {key: merged_tensor(prev[key], f.get_tensor(key), origin[key] if origin else None, cfg)
                          for key in f.keys()}  # noqa: SIM118
            save_file(merged, str(out / path.name), metadata=metadata)


class Merge(Method):
    name = "merge"

    def __init__(self, cfg: MergeSettings):
        self.cfg = cfg

    def finish_stage(self, spec, steps) -> ContinualStats:
        """[evaluate the stage's own model,] merge it with its start, hold the merged model."""
        cfg, unmerged, eval_seconds = self.cfg, None, None
        if cfg.evaluate_unmerged:
            evaluation = steps.evaluate(spec.dir / "eval_unmerged")
            unmerged, eval_seconds = evaluation.accuracy, round(evaluation.seconds, 3)
        start = time.time()
        merging, old = spec.dir / "model.merging", spec.dir / "model.unmerged"
        merge_checkpoints(spec.start_path, spec.model_dir, merging, cfg, base=spec.base_path, seed=spec.seed)
        shutil.rmtree(old, ignore_errors=True)
        spec.model_dir.rename(old)  # killed from here on: no stage.json, so the stage is trained again
        merging.rename(spec.model_dir)
        shutil.rmtree(old)
        seconds = time.time() - start
        log.info("stage %d: merged (%s, alpha %g) with the model it started from in %.1f s", spec.stage, cfg.rule,
                 cfg.alpha, seconds)
        steps.load(spec.model_dir)
        settings = {"rule": str(cfg.rule), "alpha": cfg.alpha, "task_vectors_from": str(cfg.task_vectors_from)}
        if cfg.rule not in (MergeRule.linear, MergeRule.task_arithmetic):
            settings["density"] = cfg.density
        return ContinualStats(method="merge", seconds=round(seconds, 3), settings=settings,
                              unmerged_accuracy=unmerged, unmerged_eval_seconds=eval_seconds)


METHOD = MethodSpec("merge", MergeSettings, Merge)
