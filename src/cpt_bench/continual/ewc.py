"""cl=ewc: online elastic weight consolidation (Kirkpatrick et al. 2017; online form of Schwarz
et al. 2018), and the penalty cl=l2 shares (l2.py).

From stage 2 on, the loss adds  strength/2 * sum_i F_i (theta_i - theta*_i)^2  over every trained
weight, theta* the weights the stage starts from (the previous stage's checkpoint, which the run
keeps for resume) and F the running diagonal Fisher:  F_t = decay * F_{t-1} + Fisher of stage t.

The Fisher of a stage, one definition for every paradigm: the mean over `fisher_samples` of the
stage's training items (drawn with `fisher_seed`) of the squared gradient, at the stage's trained
weights, of the log-likelihood of the item's reference answer (the target SFT trains towards,
with CoT its reasoning too), prompt formatted as evaluation formats it: the empirical Fisher,
one item per backward pass. It is computed once the stage's checkpoint is published, from that
checkpoint on the main training process (float32, on the GPU when there is one) and saved as
`stages/<kk>-<task>/ewc/fisher.safetensors` (the running F), so a resumed run continues with the
same penalty. Memory while training: theta* and F in float32 beside the model on each rank,
8 bytes per weight (docs/cluster.md).
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cpt_bench.choices import PeftMethod, Schedule, require
from cpt_bench.continual.base import Method, MethodSettings, MethodSpec, previous_stage_dir
from cpt_bench.errors import ConfigError
from cpt_bench.paradigms.loss_terms import LossTerm
from cpt_bench.progress import Progress

log = logging.getLogger(__name__)

FISHER_FILE = "ewc/fisher.safetensors"


@dataclass
class PenaltySettings(MethodSettings):
    """A quadratic pull towards the previous stage's weights (cl=ewc, cl=l2)."""

    strength: float = 1.0  # lambda

    def validate(self, at: str = "cl") -> None:
        require(self.strength >= 0, f"{at}.strength", self.strength, ">= 0")

    def held_per_weight(self, dtype_bytes: int) -> float:
        return 4.0  # theta*, float32

    def check(self, cfg) -> None:
        """The penalty is on full, unpartitioned weights, from the second stage on."""
        if cfg.deepspeed.config and "zero3" in cfg.deepspeed.name:
            raise ConfigError(f"cl={self.name} is not supported with deepspeed={cfg.deepspeed.name}: its penalty needs "
                              "every weight on each rank (ZeRO-3 partitions them); use deepspeed=zero2 or none")
        if cfg.peft.name != PeftMethod.none:
            raise ConfigError(f"cl={self.name} penalises full weights and peft={cfg.peft.name} trains a fresh adapter "
                              "each stage: use peft=none (or peft=olora, O-LoRA's own penalty, with cl=none)")
        if cfg.schedule == Schedule.joint:
            raise ConfigError(f"cl={self.name} acts from the second stage on and schedule=joint has one stage: "
                              "use schedule=sequential")


@dataclass
class EWCSettings(PenaltySettings):
    name: str = "ewc"
    strength: float = 1000.0  # lambda
    decay: float = 1.0  # gamma: the earlier stages' Fisher is kept at this weight (1 = summed, 0 = last only)
    fisher_samples: int = 64  # training items per Fisher estimate (one backward pass each)
    fisher_seed: int = 0

    def validate(self, at: str = "cl") -> None:
        super().validate(at)
        require(0 <= self.decay <= 1, f"{at}.decay", self.decay, "in [0, 1]")
        require(self.fisher_samples > 0, f"{at}.fisher_samples", self.fisher_samples, "> 0")

    def held_per_weight(self, dtype_bytes: int) -> float:
        return 8.0  # theta* and F, float32

    def check(self, cfg) -> None:
        super().check(cfg)
        if cfg.benchmark.name == "mllm_cl7":
            raise ConfigError("cl=ewc estimates its Fisher on text items; benchmark=mllm_cl7 has images "
                              "(use cl=l2, cl=lwf or cl=merge there)")


class Anchor(LossTerm):
    """strength/2 * sum F (theta - theta*)^2 over the trained weights, theta* those of the model
    it is built on (copied, float32); F = 1 everywhere when `fisher` is None (L2)."""

    def __init__(self, name: str, model, strength: float, fisher: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.name, self.strength = name, strength
        self.anchor = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}
        if fisher is not None:
            missing = sorted(set(self.anchor) - set(fisher))
            if missing:
                raise ValueError(f"the saved Fisher has no entry for {len(missing)} trained weights, e.g. {missing[0]}")
            fisher = {n: fisher[n].to(self.anchor[n].device, torch.float32) for n in self.anchor}
        self.fisher = fisher
        self.unscaled: list[float] = []  # 1/2 sum F (theta - theta*)^2 before the strength: > 0 even at strength 0

    def diagnostics(self) -> dict[str, float]:
        out = super().diagnostics()
        if self.unscaled:
            out[f"{self.name}_unscaled"] = sum(self.unscaled) / len(self.unscaled)
        return out

    def value(self, model, inputs: dict) -> torch.Tensor:
        total = None
        for name, p in model.named_parameters():
            if name not in self.anchor:
                continue
            d = p.float() - self.anchor[name].to(p.device)
            sq = d * d if self.fisher is None else self.fisher[name].to(p.device) * d * d
            total = sq.sum() if total is None else total + sq.sum()
        if total is None:
            raise ValueError("none of the model's weights is anchored: the penalty would be 0")
        self.unscaled.append(0.5 * float(total.detach()))
        return 0.5 * self.strength * total


def answer_ids(processing_class, style, ex) -> tuple[torch.Tensor, int]:
    """An item's prompt and reference answer as one sequence of token ids, and where the answer
    starts: prompt and prompt + answer tokenized as TRL's SFTTrainer tokenizes them."""
    from cpt_bench.model.processing import text_tokenizer
    from cpt_bench.model.prompts import completion_text

    if ex.images:
        raise ValueError(f"the Fisher is estimated on text items; {ex.task!r} has images")
    tok = text_tokenizer(processing_class)
    prompt = style.prompt(processing_class, ex)
    prompt_ids = tok(prompt)["input_ids"]
    ids = tok(prompt + completion_text(processing_class, style.target(ex)))["input_ids"]
    return torch.tensor(ids), len(prompt_ids)


def fisher_diagonal(model, processing_class, style, items, samples: int, seed: int) -> dict[str, torch.Tensor]:
    """The empirical diagonal Fisher of `model` (module docstring): float32 on the CPU, by weight name."""
    chosen = random.Random(seed).sample(items, min(samples, len(items)))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    device = named[0][1].device
    fisher = {n: torch.zeros(p.shape, dtype=torch.float32, device=device) for n, p in named}
    was_training = model.training
    model.eval()  # no dropout: the Fisher of the weights as they are
    try:
        for ex in Progress.over(chosen, "Fisher", "item"):
            ids, start = answer_ids(processing_class, style, ex)
            ids = ids.to(device)
            logits = model(input_ids=ids[None]).logits[0, start - 1:-1].float()
            loglik = torch.log_softmax(logits, -1).gather(1, ids[start:, None]).sum()
            grads = torch.autograd.grad(loglik, [p for _, p in named], allow_unused=True)
            for (n, _), g in zip(named, grads):
                if g is not None:
                    fisher[n] += g.float() ** 2
    finally:
        model.train(was_training)
    return {n: (f / max(len(chosen), 1)).cpu() for n, f in fisher.items()}


def read_fisher(stage_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = stage_dir / FISHER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"cl=ewc: {path} is missing (the stage was trained without cl=ewc, or its "
                                "Fisher was deleted); start the run again with overwrite=true")
    return load_file(str(path))


class EWC(Method):
    name = "ewc"

    def __init__(self, cfg: EWCSettings):
        self.cfg = cfg

    def loss_terms(self, model, spec) -> list[LossTerm]:
        if spec.stage < 2:
            return []
        fisher = read_fisher(previous_stage_dir(spec))
        return [Anchor("ewc_penalty", model, self.cfg.strength, fisher)]

    def after_training(self, spec, ctx, items, processing_class) -> dict[str, float]:
        """The stage's Fisher at its published weights, added to the decayed running one."""
        from safetensors.torch import save_file

        from cpt_bench.model.loading import load_checkpoint

        start = time.time()
        model, _ = load_checkpoint(spec.model_dir, dtype=torch.float32)
        model.to("cuda" if torch.cuda.is_available() else "cpu")
        fisher = fisher_diagonal(model, processing_class, ctx.style, items, self.cfg.fisher_samples,
                                 self.cfg.fisher_seed + spec.stage)
        del model
        if spec.stage > 1 and self.cfg.decay:
            earlier = read_fisher(previous_stage_dir(spec))
            fisher = {n: f + self.cfg.decay * earlier[n] for n, f in fisher.items()}
        out = spec.dir / FISHER_FILE
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file({n: f.contiguous() for n, f in fisher.items()}, str(out))
        total = sum(float(f.sum()) for f in fisher.values())
        count = sum(f.numel() for f in fisher.values())
        seconds = time.time() - start
        (out.parent / "fisher.json").write_text(json.dumps(
            {"samples": min(self.cfg.fisher_samples, len(items)), "decay": self.cfg.decay, "mean": total / count,
             "seconds": round(seconds, 3)}) + "\n")
        log.info("stage %d: EWC Fisher from %d items in %.1f s (mean %.3g)", spec.stage,
                 min(self.cfg.fisher_samples, len(items)), seconds, total / count)
        return {"fisher_mean": total / count, "fisher_seconds": round(seconds, 3)}


METHOD = MethodSpec("ewc", EWCSettings, EWC)
