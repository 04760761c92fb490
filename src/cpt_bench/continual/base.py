"""What every continual-learning method shares: its settings node and the three points of a
stage it may act at (the trainer plumbing that adds loss terms is paradigms/loss_terms.py).

A method acts at any of three declared points of a stage, each optional (`Method`'s defaults
do nothing):
  - `loss_terms`     before the paradigm builds its trainer, in every training process: terms
                     added to the paradigm's own loss on every micro-batch (EWC, L2, LwF, O-LoRA)
  - `after_training` once the stage's checkpoint is published, in the training's main process:
                     state the next stage needs, written into the stage folder (EWC's Fisher,
                     O-LoRA's subspaces), so a resumed run reads it back
  - `finish_stage`   in the controller, before the stage is evaluated: the checkpoint that is
                     evaluated and carried on (merging)
The stage loop and the training step call these on whatever method the run names; neither has
a branch per method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import MISSING

from cpt_bench.errors import ConfigError
from cpt_bench.paradigms.loss_terms import LossTerm

if TYPE_CHECKING:
    from cpt_bench.config import Config
    from cpt_bench.outputs.records import ContinualStats
    from cpt_bench.paradigms.base import StageContext
    from cpt_bench.tasks.base import Example

# the hooks' `spec` is the stage's `run.steps.StageSpec` (stage, dir, model_dir, start_path,
# base_path, seed): named here in words, since the run layer sits above this one


@dataclass
class MethodSettings:
    """The `cl` node every method's schema extends (conf/cl/<name>.yaml)."""

    name: str = MISSING

    def validate(self, at: str = "cl") -> None:
        """Ranges of this node's own settings."""

    def held_per_weight(self, dtype_bytes: int) -> float:
        """Bytes per model weight the method holds on each training rank beside the model and
        its optimizer (the preflight's estimate; `dtype_bytes`: the run's weights)."""
        return 0.0

    def check(self, cfg: Config) -> None:
        """Refuse, in one ConfigError line, a combination with the rest of the run this method
        cannot run correctly (its own rules; `refuse` adds the ones every method shares)."""

    def refuse(self, cfg: Config) -> None:
        """Every combination this method cannot run, one ConfigError line (`Config.validate`,
        before any model): schedule=evaluate trains nothing, then the method's own `check`."""
        if self.name != "none" and str(cfg.schedule) == "evaluate":
            raise ConfigError(f"schedule=evaluate trains nothing, so cl={self.name} would do nothing: drop it")
        self.check(cfg)


@dataclass(frozen=True)
class MethodSpec:
    """What a method module registers as its `METHOD` (found by `continual.methods()`)."""

    name: str  # cl.name
    schema: type  # its config node (a MethodSettings dataclass)
    build: Callable[[Any], Method]  # its validated node -> the method


class Method:
    """A method's hooks; each does nothing unless the method overrides it (cl=none overrides none)."""

    name = "none"

    def loss_terms(self, model, spec) -> list[LossTerm]:
        """Terms for the stage that starts from `model` (every training process)."""
        return []

    def after_training(self, spec, ctx: StageContext, items: list[Example],
                       processing_class) -> dict[str, float]:
        """On the main training process once `spec.model_dir` is published; returns what it
        measured (into the stage's training diagnostics, as `cl/<key>`)."""
        return {}

    def finish_stage(self, spec, steps) -> ContinualStats | None:
        """In the controller after training, before evaluation; `steps` holds the trained model
        (LocalSteps or TorchrunSteps) and must hold the stage's final one when this returns."""
        return None


def previous_stage_dir(spec, back: int = 1) -> Path:
    """The folder of the stage `back` stages before `spec`'s (stage 0: the base's)."""
    stage = spec.stage - back
    found = sorted(spec.dir.parent.glob(f"{stage:02d}-*"))
    if len(found) != 1:
        raise FileNotFoundError(f"stage {stage}'s folder is missing under {spec.dir.parent}")
    return found[0]
