"""Where a run came from: the command, the package versions and the hardware (run.json)."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ["cpt-bench", "torch", "transformers", "trl", "datasets", "accelerate", "deepspeed",
            "hydra-core", "omegaconf", "wandb", "tokenizers"]


def package_versions() -> dict[str, str | None]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# the vector-instruction flags that change float results of CPU kernels
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def cpu_fingerprint() -> str:
    """The CPU model and its result-changing flags: CPU training is bit-reproducible only
    between machines with the same fingerprint (pinned results name the one they came from)."""
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return f"{model} [{' '.join(f for f in CPU_FLAGS if f in flags)}]"


def hardware() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "cpu": cpu_fingerprint(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
