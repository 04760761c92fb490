"""Terms added to a paradigm's loss on every micro-batch (a continual-learning method's penalty
or distillation, continual/), and the trainer plumbing that adds them to any TRL trainer."""

from __future__ import annotations

import torch


class LossTerm:
    """A term added to a paradigm's loss on every micro-batch: `value(model, inputs)` on the
    unwrapped model and the trainer's collated batch; its values are kept for the stage's mean."""

    name = "term"

    def __init__(self) -> None:
        self.values: list[float] = []

    def value(self, model, inputs: dict) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, model, inputs: dict) -> torch.Tensor:
        out = self.value(model, inputs)
        self.values.append(float(out.detach()))
        return out

    def mean(self) -> float | None:
        return sum(self.values) / len(self.values) if self.values else None

    def diagnostics(self) -> dict[str, float]:
        """What the stage records of the term (as `cl/<key>`): its mean over the micro-batches."""
        return {self.name: mean} if (mean := self.mean()) is not None else {}


def scales_for_accumulation(trainer, num_items_in_batch) -> bool:
    """Whether `trainer.compute_loss` already divides its loss over the gradient-accumulation
    window (transformers' `Trainer.training_step` then does not divide it again): TRL's GRPO
    says so itself; SFT's token-normalised loss does when the batch's token count is given."""
    if getattr(trainer, "loss_is_scaled_for_ga", None) is not None:
        return bool(trainer.loss_is_scaled_for_ga)
    return bool((trainer.model_accepts_loss_kwargs and num_items_in_batch is not None)
                or trainer.compute_loss_func is not None)


def with_loss_terms(trainer_cls: type, terms: list[LossTerm]) -> type:
    """`trainer_cls` whose loss adds `terms` on every micro-batch, each counted once per
    optimizer step: divided over the accumulation window when the trainer's own loss already
    is (so `Trainer.training_step`'s division applies to both or to neither). Under DDP every
    rank adds the same term, and the gradients' average keeps it once."""
    if not terms:
        return trainer_cls

    class Trainer(trainer_cls):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            batch = dict(inputs)  # a paradigm's trainer may pop keys it consumes
            out = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                       num_items_in_batch=num_items_in_batch)
            loss = out[0] if return_outputs else out
            unwrapped = self.accelerator.unwrap_model(model)
            extra = sum(term(unwrapped, batch) for term in terms)
            if scales_for_accumulation(self, num_items_in_batch):
                extra = extra / self.current_gradient_accumulation_steps
            loss = loss + extra.to(loss.device)
            return (loss, out[1]) if return_outputs else loss

    Trainer.__name__ = Trainer.__qualname__ = trainer_cls.__name__
    return Trainer
