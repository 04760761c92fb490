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


def hardware() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
