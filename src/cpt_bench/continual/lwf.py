"""cl=lwf: learning without forgetting (Li & Hoiem 2016) as distillation to the previous
stage's model.

From stage 2 on, the loss adds  strength * T^2 * mean_t KL(p_prev(.|y_<t) || p(.|y_<t))  with both
distributions softened by `temperature` T, over the full vocabulary, at every completion token
of the sequences the paradigm trains on: SFT's prompt + reference answer, GRPO's prompt + its own
sampled completion. On the training sequences, not on completions sampled for the purpose:
it costs no generation, it is what LwF does (the old model's outputs on the new task's inputs),
and it is one rule for both paradigms (GRPO's training sequences are sampled completions). The
previous model (the stage's starting checkpoint) is loaded frozen beside the policy on each
rank; each micro-batch costs one more forward of the policy and one of the previous model.

GRPO's own KL penalty with `kl_reference=previous` is nearly this term again (a sampled
estimate of KL(pi || pi_prev) on the same completions): that combination is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cpt_bench.choices import KLReference, PeftMethod, Schedule, require
from cpt_bench.continual.base import Method, MethodSettings, MethodSpec
from cpt_bench.errors import ConfigError
from cpt_bench.paradigms.loss_terms import LossTerm

# the keys of a collated batch a model's forward takes, beside the token ids and the mask
FORWARD_EXTRAS = ("pixel_values", "image_grid_thw", "token_type_ids", "mm_token_type_ids")


@dataclass
class LwFSettings(MethodSettings):
    name: str = "lwf"
    strength: float = 1.0  # lambda
    temperature: float = 1.0  # T: both distributions softened by it, the term scaled by T^2

    def validate(self, at: str = "cl") -> None:
        require(self.strength >= 0, f"{at}.strength", self.strength, ">= 0")
        require(self.temperature > 0, f"{at}.temperature", self.temperature, "> 0")

    def held_per_weight(self, dtype_bytes: int) -> float:
        return float(dtype_bytes)  # the frozen previous model, whole, in the run's dtype

    def check(self, cfg) -> None:
        if cfg.deepspeed.config and "zero3" in cfg.deepspeed.name:
            raise ConfigError(f"cl=lwf is not supported with deepspeed={cfg.deepspeed.name}: its frozen previous model "
                              "is not partitioned; use deepspeed=zero2 or none")
        if cfg.schedule == Schedule.joint:
            raise ConfigError("cl=lwf acts from the second stage on and schedule=joint has one stage: "
                              "use schedule=sequential")
        p = cfg.paradigm
        if getattr(p, "kl_coef", 0) and (p.kl_reference == KLReference.previous or cfg.peft.name != PeftMethod.none):
            raise ConfigError("cl=lwf with GRPO's KL penalty towards the stage's starting model (paradigm.kl_reference="
                              "previous, or any peft) counts the same term twice: set paradigm.kl_coef=0 or "
                              "paradigm.kl_reference=base")


def training_sequences(inputs: dict) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """(forward kwargs, target ids, loss mask) of a collated batch, the mask over the positions
    whose next token is a completion token: SFT's `input_ids`/`labels` (-100 off the answer) or
    GRPO's `prompt_ids` + `completion_ids`."""
    extras = {k: inputs[k] for k in FORWARD_EXTRAS if k in inputs}
    if "completion_ids" in inputs:
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        loss_mask = torch.zeros_like(ids[:, 1:], dtype=torch.bool)
        loss_mask[:, inputs["prompt_ids"].shape[1] - 1:] = inputs["completion_mask"].bool()
        return {"input_ids": ids, "attention_mask": mask, **extras}, ids, loss_mask
    labels = inputs["labels"]
    forward = {"input_ids": inputs["input_ids"], **extras}
    if "attention_mask" in inputs:
        forward["attention_mask"] = inputs["attention_mask"]
    return forward, inputs["input_ids"], labels[:, 1:] != -100


def distillation_kl(student_logits, teacher_logits, loss_mask, temperature: float) -> torch.Tensor:
    """T^2 * mean over the masked positions of KL(softmax(teacher/T) || softmax(student/T));
    logits at position t predict token t+1 (their last position is dropped)."""
    s = torch.log_softmax(student_logits[:, :-1].float() / temperature, -1)
    t = torch.log_softmax(teacher_logits[:, :-1].float() / temperature, -1)
    kl = (t.exp() * (t - s)).sum(-1)
    return temperature ** 2 * (kl * loss_mask).sum() / loss_mask.sum().clamp(min=1)


class Distill(LossTerm):
    name = "lwf_kl"

    def __init__(self, teacher, strength: float, temperature: float):
        super().__init__()
        self.teacher, self.strength, self.temperature = teacher, strength, temperature

    def value(self, model, inputs: dict) -> torch.Tensor:
        forward, _, loss_mask = training_sequences(inputs)
        device = next(model.parameters()).device
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        with torch.no_grad():
            teacher = self.teacher(**forward).logits
        student = model(**forward).logits
        return self.strength * distillation_kl(student, teacher, loss_mask.to(student.device), self.temperature)


class LwF(Method):
    name = "lwf"

    def __init__(self, cfg: LwFSettings):
        self.cfg = cfg

    def loss_terms(self, model, spec) -> list[LossTerm]:
        if spec.stage < 2:
            return []
        from cpt_bench.model.loading import load_checkpoint

        teacher, _ = load_checkpoint(spec.start_path, dtype=next(model.parameters()).dtype)
        teacher.to(next(model.parameters()).device).eval().requires_grad_(False)
        return [Distill(teacher, self.cfg.strength, self.cfg.temperature)]


METHOD = MethodSpec("lwf", LwFSettings, LwF)
