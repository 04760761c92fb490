"""cl=l2: EWC's penalty with F = 1 everywhere, a plain L2 pull towards the previous stage's
weights (ewc.py): from stage 2 on the loss adds  strength/2 * ||theta - theta*||^2.  No state
beyond the previous stage's checkpoint, which the run keeps for resume anyway."""

from __future__ import annotations

from dataclasses import dataclass

from cpt_bench.continual.base import Method, MethodSpec
from cpt_bench.continual.ewc import Anchor, PenaltySettings
from cpt_bench.paradigms.loss_terms import LossTerm


@dataclass
class L2Settings(PenaltySettings):
    name: str = "l2"
    strength: float = 1.0  # lambda


class L2(Method):
    name = "l2"

    def __init__(self, cfg: L2Settings):
        self.cfg = cfg

    def loss_terms(self, model, spec) -> list[LossTerm]:
        return [Anchor("l2_penalty", model, self.cfg.strength)] if spec.stage >= 2 else []


METHOD = MethodSpec("l2", L2Settings, L2)
