"""Where this process stands in a distributed launch (torchrun, accelerate launch, SLURM).

DeepSpeed always needs a torch.distributed process group. Under a launcher the environment
describes it; a plain `cpt-bench deepspeed=...` gets a one-process group on this machine
(the set-up Hugging Face documents for DeepSpeed in a notebook) instead of DeepSpeed's
fallback, which looks for MPI and fails mid-run.
"""

from __future__ import annotations

import os
import socket

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched(env=os.environ) -> bool:
    return "RANK" in env and "WORLD_SIZE" in env


def single_process_env(port: int) -> dict[str, str]:
    return {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_process_group_env(env=os.environ) -> bool:
    """Describe a one-process group in `env` unless a launcher already did; True if it did."""
    if launched(env):
        return False
    env.update(single_process_env(free_port()))
    return True
