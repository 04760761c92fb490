"""Loading a checkpoint: the one place a model enters cpt-bench.

A local folder or a hub id, loaded through the Auto classes. What it loads is decided by the
checkpoint's own config: a vision-language model (one with a `vision_config`, e.g.
Qwen2.5-VL) comes back as an image-text model with its processor; any other model as a causal
LM with its tokenizer.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from cpt_bench.model.processing import PixelBounds, load_processor, text_tokenizer

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # the CPU multiplies bf16 natively (else bf16 is emulated, slower)


@dataclass(frozen=True)
class Precision:
    """How `model.dtype` is realised on this machine: the dtype checkpoints are loaded in
    (`weights`) and the one matrix products run in (`compute`).

    On a GPU both are the chosen dtype (bf16 with `auto` where the GPU supports it). On a CPU,
    bf16 is mixed precision: the weights stay float32, so an optimizer step smaller than bf16's
    resolution (lr 1e-6 on a weight of 0.05) is not rounded away, and every forward runs under
    bf16 autocast: the trainers' own switch (`bf16=True`) in training, `inference()` around
    evaluation, RIF rollouts and the KL estimate."""

    weights: torch.dtype
    compute: torch.dtype

    @property
    def autocast(self) -> bool:
        return self.compute != self.weights

    @property
    def trainer_bf16(self) -> bool:
        return self.compute == torch.bfloat16

    def inference(self):
        """The context generation and scoring run in: CPU autocast for mixed precision."""
        return torch.autocast("cpu", dtype=self.compute) if self.autocast else contextlib.nullcontext()

    def describe(self) -> str:
        names = {v: k for k, v in DTYPES.items()}
        mixed = f" (weights {names[self.weights]}, autocast)" if self.autocast else ""
        return names[self.compute] + mixed


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has native bf16 instructions (AVX512-BF16 or AMX)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = next((line.partition(":")[2].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def resolve_precision(name: str, *, cuda: bool | None = None, deepspeed: bool = False,
                      cpu_bf16: bool | None = None) -> Precision:
    """`model.dtype` on this machine. auto = bf16 on a GPU that supports it, or on a CPU with
    native bf16 (mixed precision, see `Precision`) unless DeepSpeed runs on the CPU (its bf16
    optimizer is not exercised there); fp32 elsewhere."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cuda:
        if name == "auto":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return Precision(DTYPES[name], DTYPES[name])
    if name == "auto":
        native = cpu_has_bf16() if cpu_bf16 is None else cpu_bf16
        name = "bf16" if native and not deepspeed else "fp32"
    if name == "bf16":
        return Precision(torch.float32, torch.bfloat16)
    return Precision(DTYPES[name], DTYPES[name])


def run_precision(cfg) -> Precision:
    """A run's precision, from its `model.dtype` and whether it trains under DeepSpeed."""
    return resolve_precision(str(cfg.model.dtype), deepspeed=bool(cfg.deepspeed.config))


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
