"""peft=olora: O-LoRA (Wang et al. 2023, "Orthogonal Subspace Learning for Language Model
Continual Learning") as a LoRA variant.

Each stage trains a fresh LoRA adapter as `peft=lora` does, merged into full weights when the
stage ends, and from stage 2 on the loss adds  orthogonality * sum_modules ||A_prev A_t^T||_F^2,
A_t the new adapter's down-projection (peft's `lora_A`, r x in) and A_prev the earlier stages'
stacked: O-LoRA's penalty on the overlap between the new update's input subspace and the old
ones', zero when they are orthogonal. The earlier A matrices are kept in the run directory
(`stages/<kk>-<task>/olora/lora_A.safetensors`, written once the stage's adapter is saved), so a
resumed run continues with the same penalty, and `checkpoint.keep` never removes them. Each
stage's measured overlap with the earlier subspaces is recorded as `cl/olora_overlap`.
"""

from __future__ import annotations

import re

import torch

from cpt_bench.continual.base import Method, previous_stage_dir
from cpt_bench.paradigms.loss_terms import LossTerm

A_FILE = "olora/lora_A.safetensors"
_A = re.compile(r"^(?:base_model\.model\.)?(.+)\.lora_A(?:\.[^.]+)?\.weight$")


def module_key(name: str) -> str | None:
    """`...q_proj` for peft's `base_model.model....q_proj.lora_A[.default].weight`; else None."""
    match = _A.match(name)
    return match.group(1) if match else None


def overlap(previous: dict[str, torch.Tensor], current: dict[str, torch.Tensor]) -> torch.Tensor:
    """sum over modules of ||A_prev A_t^T||_F^2 (modules in both)."""
    if not previous or not current:  # no earlier subspace (a stage trained nothing): no overlap
        return torch.zeros(())
    terms = [(previous[k].to(a.device, torch.float32) @ a.float().T).pow(2).sum()
             for k, a in current.items() if k in previous]
    if not terms:
        raise ValueError("no LoRA module of this stage matches the earlier stages' (peft.target_modules changed?)")
    return torch.stack(terms).sum()


class Orthogonality(LossTerm):
    name = "olora_penalty"

    def __init__(self, previous: dict[str, torch.Tensor], strength: float):
        super().__init__()
        self.previous, self.strength = previous, strength

    def value(self, model, inputs: dict) -> torch.Tensor:
        current = {key: p for n, p in model.named_parameters() if p.requires_grad and (key := module_key(n))}
        return self.strength * overlap(self.previous, current)


def earlier_subspaces(spec) -> dict[str, torch.Tensor]:
    """The earlier stages' A matrices, stacked per module (stage 1's rows first)."""
    from safetensors.torch import load_file

    stacks: dict[str, list[torch.Tensor]] = {}
    for back in range(spec.stage - 1, 0, -1):
        path = previous_stage_dir(spec, back) / A_FILE
        if not path.is_file():
            raise FileNotFoundError(f"peft=olora: {path} is missing (that stage was trained without peft=olora); "
                                    "start the run again with overwrite=true")
        for key, a in load_file(str(path)).items():
            stacks.setdefault(key, []).append(a.float())
    return {key: torch.cat(parts) for key, parts in stacks.items()}


class OLoRA(Method):
    name = "olora"

    def __init__(self, strength: float):
        self.strength = strength

    def loss_terms(self, model, spec) -> list[LossTerm]:
        return [Orthogonality(earlier_subspaces(spec), self.strength)] if spec.stage >= 2 else []

    def after_training(self, spec, ctx, items, processing_class) -> dict[str, float]:
        """Keep the stage's A matrices (from its saved adapter) and measure their overlap."""
        from safetensors.torch import load_file, save_file

        path = spec.model_dir / "adapter" / "adapter_model.safetensors"
        adapter = load_file(str(path)) if path.is_file() else {}  # none: the stage trained nothing
        mine = {key: a.float().contiguous() for n, a in adapter.items() if (key := module_key(n))}
        out = spec.dir / A_FILE
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file(mine, str(out))
        return {"olora_overlap": float(overlap(earlier_subspaces(spec), mine))} if spec.stage >= 2 else {}
