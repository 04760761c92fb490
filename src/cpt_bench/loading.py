"""Loading a checkpoint: the one place a model enters cpt-bench.

A local folder or a hub id, loaded through the Auto classes. What it loads is decided by the
checkpoint's own config: a vision-language model (one with a `vision_config`, e.g.
Qwen2.5-VL) comes back as an image-text model with its processor; any other model as a causal
LM with its tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cpt_bench.processing import PixelBounds, load_processor, text_tokenizer

DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    """`model.dtype` as a torch dtype; auto = bf16 on a GPU that supports it, else fp32."""
    if name == "auto":
        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    return DTYPES[name]


def is_vision_language(config) -> bool:
    """Whether a checkpoint's config is a vision-language model's (it has a vision tower)."""
    return getattr(config, "vision_config", None) is not None


def load_processing_class(path: str | Path, pixels: PixelBounds | None = None):
    """Only the checkpoint's processing class (for a step whose generation engine is not the model)."""
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(str(path))
    if is_vision_language(config):
        processing_class = load_processor(path, config, pixels)
    else:
        processing_class = AutoTokenizer.from_pretrained(str(path))
    tok = text_tokenizer(processing_class)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return processing_class


def load_checkpoint(path: str | Path, dtype: torch.dtype = torch.float32, pixels: PixelBounds | None = None):
    """The model and its processing class, chosen by the checkpoint's config.

    A vision-language checkpoint: AutoModelForImageTextToText and its processor (checked to
    be one; `pixels` bounds its image resolution). Anything else: AutoModelForCausalLM and
    AutoTokenizer. A missing pad token falls back to EOS. (Padding sides are chosen per call
    where batches are built, never here.)
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    config = AutoConfig.from_pretrained(str(path))
    if is_vision_language(config):
        processing_class = load_processor(path, config, pixels)
        model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=dtype)
    else:
        processing_class = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    tok = text_tokenizer(processing_class)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, processing_class
