"""Self-SFT (on-policy SFT): SFT on the model's own rewarded samples.

Before each stage the model as it stands samples `num_rollouts` completions per training item
(at `rollout_temperature`, up to `max_completion_length` tokens: the paradigm's rollout step);
the stage's reward grades them, and SFT trains on up to `samples_per_prompt` distinct correct
completions per item, with SFT's trainer and optimisation settings. An item with no correct
sample is dropped (counted in the stage's `rollouts` record). With CoT the completions carry
their reasoning and are graded as GRPO grades them.

The control of "Retaining by Doing" (arXiv 2510.18874): if on-policy data, not the KL term or
the advantage estimator, is why RL forgets less, SFT on the model's own correct samples should
forget about as little as GRPO. `samples_per_prompt=1` (default) trains one row per kept item,
as SFT on reference answers does; more is rejection-sampling fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass

from cpt_bench.choices import SFTWeighting, require
from cpt_bench.paradigms.base import ParadigmSpec, TrainRow
from cpt_bench.paradigms.rollouts import Rollouts, Sampled
from cpt_bench.paradigms.sft import SFT, SFTParadigm
from cpt_bench.tasks.base import Example


@dataclass
class SelfSFTParadigm(SFTParadigm):
    """SFT on the current model's own correct samples (TRL's SFTTrainer)."""

    name: str = "self_sft"
    max_completion_length: int = 32  # the longest sampled completion
    samples_per_prompt: int = 1  # distinct correct completions trained on per item, at most

    def validate(self, at: str = "paradigm") -> None:
        super().validate(at)
        require(self.weighting == SFTWeighting.none, f"{at}.weighting", str(self.weighting),
                "none for self_sft (it trains on correct samples; weighting is paradigm=sft's)")
        require(self.max_completion_length > 0, f"{at}.max_completion_length", self.max_completion_length, "> 0")
        require(self.samples_per_prompt > 0, f"{at}.samples_per_prompt", self.samples_per_prompt, "> 0")


class SelfSFT(SFT):
    name = "self_sft"

    def __init__(self, cfg, world_size: int = 1):
        super().__init__(cfg, world_size)
        cfg = self.cfg
        self.completion_length = cfg.max_completion_length  # also RIF's rollout length
        self.rollouts = Rollouts.of(cfg.num_rollouts, cfg.rollout_temperature, cfg.max_completion_length,
                                    cfg.rollout_batch_size, purpose="self_sft")

    def rows(self, examples: list[Example], sampled: list[Sampled] | None) -> list[TrainRow]:
        """Each item's first `samples_per_prompt` distinct correct completions, in sampling order."""
        if sampled is None:
            raise ValueError("self_sft trains on its rollouts: the stage loop must run its rollout step first")
        rows = []
        for ex, s in zip(examples, sampled, strict=True):
            kept = list(dict.fromkeys(s.correct))[: self.cfg.samples_per_prompt]
            rows += [TrainRow(ex, completion) for completion in kept]
        return rows


PARADIGM = ParadigmSpec("self_sft", SelfSFTParadigm, SelfSFT)
