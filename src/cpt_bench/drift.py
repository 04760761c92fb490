"""Parameter drift: how far a stage has moved the weights from the base model."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)


@torch.no_grad()
def param_drift(model, base_path: str | Path) -> float:
    """||theta - theta_0||_2 over every parameter saved in the base checkpoint.

    Reads the base weights tensor by tensor from its safetensors files, so it never holds a
    second copy of the model in memory. A hub id is read from the local hub cache (where
    loading the model put it). Parameter names are matched both as the model names them and
    in the checkpoint's own layout (transformers renames e.g. Qwen2.5-VL's weights on load and
    back on save).
    """
    from safetensors import safe_open

    folder = Path(base_path)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(str(base_path), allow_patterns=["*.safetensors"]))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {base_path}")
    current = dict(model.named_parameters())
    by_saved_name = {**_saved_names(model, current), **current}
    total, matched = 0.0, 0
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - a safetensors file, not a dict
                if name in by_saved_name:
                    p = by_saved_name[name].detach()
                    diff = p.float() - f.get_tensor(name).to(p.device).float()
                    total += float(diff.pow(2).sum())
                    matched += 1
    if not matched:
        log.warning("param_drift: no parameter of %s matched a tensor in %s", type(model).__name__, base_path)
        return float("nan")
    return total ** 0.5


def _saved_names(model, params: dict) -> dict:
    """The model's parameters under the names save_pretrained would write them with."""
    try:
        from transformers.core_model_loading import revert_weight_conversion

        saved = revert_weight_conversion(model, {name: p.detach() for name, p in params.items()})
    except Exception:  # noqa: BLE001 - a private transformers API: fall back to the plain names
        return {}
    return {name: t for name, t in dict(saved).items() if isinstance(t, torch.Tensor)}
