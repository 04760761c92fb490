"""Where this process stands in a distributed launch (torchrun, accelerate launch, SLURM).

DeepSpeed always needs a torch.distributed process group. Under a launcher the environment
describes it; a plain `cpt-bench deepspeed=...` gets a one-process group on this machine
(the set-up Hugging Face documents for DeepSpeed in a notebook) instead of DeepSpeed's
fallback, which looks for MPI and fails mid-run.

A launched rank starts through `start_rank`: its device first (before any CUDA call), then,
when it trains with DeepSpeed, DeepSpeed's own communication layer over the job's process
group. Accelerate starts that layer only on GPUs (`PartialState` skips it with `cpu=True`),
and DeepSpeed's config reads its world size from it: without it, the `zero.Init` that builds
TRL's KL reference model under ZeRO-3 sees a world of one and fails its batch check.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, MutableMapping

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


def skip_inference_kernel() -> None:
    """Keep DeepSpeed from compiling its CPU shared-memory all-reduce kernel when its
    communication layer starts: g++ for about a minute on 2 cores on a fresh machine, and again
    whenever another torch build last used the extension cache, for a kernel that only its
    inference engine's tensor parallelism calls, never training. Call before DeepSpeed starts."""
    import deepspeed.ops

    compatible = dict(deepspeed.ops.__compatible_ops__)  # the only reader is the kernel's builder
    compatible["deepspeed_shm_comm"] = False
    deepspeed.ops.__compatible_ops__ = compatible


def zero_stage(cfg) -> int | None:
    """The ZeRO stage of a run's DeepSpeed config (None without DeepSpeed)."""
    config = cfg.deepspeed.config
    return ((config or {}).get("zero_optimization") or {}).get("stage") if config else None


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity: a SLURM job's or a cgroup's share),
    not the node's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def own_device_env(env: Mapping[str, str], local_rank: int) -> dict[str, str]:
    """The variables that give this rank's engine one GPU of its own: `CUDA_VISIBLE_DEVICES`
    narrowed to the rank's entry of the node's list (all GPUs when unset). An engine that
    sees every GPU (vLLM with tensor parallel size 1) takes the first one on every rank."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    entries = [e for e in visible.split(",") if e.strip()] if visible else None
    if entries is not None and local_rank >= len(entries):
        raise RuntimeError(f"local rank {local_rank} has no GPU: CUDA_VISIBLE_DEVICES={visible}")
    return {"CUDA_VISIBLE_DEVICES": entries[local_rank].strip() if entries else str(local_rank)}


def rank_device(local_rank: int, cuda: bool) -> str:
    return f"cuda:{local_rank}" if cuda else "cpu"


def comm_backend(device: str) -> str:
    return "nccl" if device.startswith("cuda") else "gloo"


def start_rank(env: MutableMapping[str, str] = os.environ, *, own_device: bool = False,
               deepspeed: bool = False) -> str:
    """Set a launched rank up and return its device.

    `own_device`: the rank sees only its own GPU (its device is then `cuda:0`); for steps whose
    engine picks a GPU itself. `deepspeed`: start DeepSpeed's communication layer over the
    job's process group (see the module doc)."""
    import torch

    local_rank = int(env.get("LOCAL_RANK", 0))
    if own_device:
        env.update(own_device_env(env, local_rank))  # before any CUDA call reads it
        local_rank = 0
    device = rank_device(local_rank, torch.cuda.is_available())
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    if deepspeed and launched(env):
        import deepspeed as ds

        skip_inference_kernel()
        ds.init_distributed(dist_backend=comm_backend(device), auto_mpi_discovery=False)
    return device
