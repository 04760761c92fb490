"""A model's shape without its weights: the architecture's config.json, built on the meta device.

The named models' configs ship with the package (architectures/*.json: their config.json's
architecture keys), so the preflight needs no download; any other model is read from the
`config.json` of a local `model.path`. The meta device gives every parameter's shape and no
storage, so counting a 7B model takes seconds and no memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cpt_bench.config import ModelConfig
from cpt_bench.errors import ConfigError

ARCHITECTURES = Path(__file__).with_name("architectures")
# built-in models -> the architecture file that describes them (tiny: the shipped build's own)
BUILTIN_ARCHITECTURES = {"smollm2_135m": "smollm2_135m", "smollm2_135m_aligned": "smollm2_135m"}


@dataclass(frozen=True)
class Tower:
    """What the activation formula needs of a stack of transformer layers."""

    layers: int
    hidden: int
    intermediate: int
    kv_dim: int  # key (= value) width per token: kv heads x head dim


@dataclass(frozen=True)
class ModelShape:
    name: str
    source: str  # where the architecture came from
    total_params: int
    largest_layer_params: int  # the largest module's own parameters (ZeRO-3 gathers one at a time)
    text: Tower
    vocab: int
    vision: Tower | None = None  # a vision-language model's vision tower
    pixels_per_token: int = 0  # image pixels per visual token after merging (Qwen-VL: 14 x 14 x 2 x 2)


def architecture(model: ModelConfig) -> tuple[dict, str]:
    """The architecture dict of `model` and where it was read; ConfigError if none is known."""
    shipped = ARCHITECTURES / f"{BUILTIN_ARCHITECTURES.get(model.builtin or '', model.name)}.json"
    if model.builtin == "tiny":
        shipped = Path(__file__).parents[1] / "builtin" / "tiny_base" / "config.json"
    local = Path(model.path).expanduser() / "config.json" if model.path else None
    if local is not None and local.is_file():
        return json.loads(local.read_text()), str(local)
    if shipped.is_file():
        return json.loads(shipped.read_text()), f"shipped {shipped.name} ({model.name})"
    known = sorted(p.stem for p in ARCHITECTURES.glob("*.json"))
    raise ConfigError(f"preflight: no architecture for model={model.name}: give model.path a local folder with its "
                      f"config.json, or use one of {', '.join(known)}")


def tower(cfg) -> Tower:
    heads = getattr(cfg, "num_attention_heads", None) or cfg.num_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    layers = getattr(cfg, "num_hidden_layers", None) or cfg.depth
    return Tower(layers, cfg.hidden_size, cfg.intermediate_size, kv_heads * head_dim)


def model_shape(model: ModelConfig) -> ModelShape:
    """Build `model`'s shape on the meta device (no weights) and count its parameters."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    data, source = architecture(model)
    data = {k: v for k, v in data.items() if not k.startswith("_")}
    config = AutoConfig.for_model(**data)
    vision_cfg = getattr(config, "vision_config", None)
    auto = AutoModelForImageTextToText if vision_cfg is not None else AutoModelForCausalLM
    with torch.device("meta"):
        net = auto.from_config(config)
    # model.parameters() counts a tied weight once (DeepSpeed's model_to_params dedupes by data
    # pointer, which every meta tensor shares)
    total = sum(p.numel() for p in net.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in net.modules())
    text_cfg = getattr(config, "text_config", None) or config
    vision = tower(vision_cfg) if vision_cfg is not None else None
    per_token = vision_cfg.patch_size ** 2 * vision_cfg.spatial_merge_size ** 2 if vision_cfg is not None else 0
    return ModelShape(model.name, source, total, largest, tower(text_cfg), text_cfg.vocab_size, vision, per_token)
