"""The node a run will get, and what the run asks of it: the GPUs (as described or as seen), the
training step's settings (`Step`), the disk its checkpoints need, the packages it imports."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

from cpt_bench.choices import DType, HarnessBackend, KeepCheckpoints, Schedule
from cpt_bench.config import Config
from cpt_bench.preflight.memory import FITS, GIB, NO_FIT, TIGHT, Step
from cpt_bench.preflight.shapes import ModelShape
from cpt_bench.run.resume import checkpoint_space

DEFAULT_GPU_GIB = 80.0  # an A100/H100 80 GB, the paper's card, when none is described or seen
PROMPT_TEXT_TOKENS = 512  # a prompt's text beside its image, when vllm_max_model_length does not bound it
DEFAULT_IMAGE_TOKENS = 16384  # Qwen2.5-VL's own max_pixels (12,845,056) when model.max_pixels is unset


@dataclass
class Node:
    gpus: int  # per node
    gpu_gib: float
    source: str  # where the figures came from


@dataclass
class Disk:
    checkpoint_gib: float
    stages: int
    keep: str
    need_gib: float
    free_gib: float
    where: str
    verdict: str


@dataclass
class Ready:
    name: str
    ready: bool
    note: str = ""


def describe_node(config: Config) -> Node:
    """preflight.gpus / gpu_memory_gb; unset, what torch.cuda sees, else the launcher's ranks
    per node and an 80 GB card."""
    import torch

    p = config.preflight
    seen = torch.cuda.device_count()
    gpus = p.gpus or seen or config.launcher.nproc_per_node
    memory = p.gpu_memory_gb or (torch.cuda.get_device_properties(0).total_memory / GIB if seen else DEFAULT_GPU_GIB)
    source = ", ".join([
        "GPUs: preflight.gpus" if p.gpus else "GPUs: seen by torch.cuda" if seen else "GPUs: launcher.nproc_per_node",
        "memory: preflight.gpu_memory_gb" if p.gpu_memory_gb else "memory: seen by torch.cuda" if seen
        else f"memory: the default {DEFAULT_GPU_GIB:.0f} GiB"])
    return Node(gpus, float(memory), source)


def dtype_bytes(config: Config) -> int:
    # on a GPU, auto = bf16 (every card the paper's setting runs on supports it)
    return 4 if config.model.dtype == DType.fp32 else 2


def image_tokens(config: Config, shape: ModelShape) -> int:
    if shape.vision is None:
        return 0
    return config.model.max_pixels // shape.pixels_per_token if config.model.max_pixels else DEFAULT_IMAGE_TOKENS


def step_of(config: Config, shape: ModelShape, node: Node) -> Step:
    """The training step of `config` on `node`, as the memory estimate reads it."""
    p, ds = config.paradigm, config.deepspeed.config or {}
    zero = ds.get("zero_optimization", {}) if ds else {}
    images = image_tokens(config, shape)
    completion = getattr(p, "max_completion_length", None)
    if completion is not None:  # GRPO: a prompt (bounded by vLLM's context where set) and its completion
        model_len = getattr(p, "vllm_max_model_length", None)
        prompt = model_len - completion if model_len else images + PROMPT_TEXT_TOKENS
        seq, loss_tokens = prompt + completion, completion
    else:  # SFT: the whole sequence (image tokens included) gets logits
        seq = getattr(p, "max_length", None) or images + PROMPT_TEXT_TOKENS
        loss_tokens = seq
    use_vllm = bool(getattr(p, "use_vllm", False))
    return Step(world=config.launcher.world_size, ranks_per_node=config.launcher.nproc_per_node,
                zero_stage=int(zero.get("stage", 0)), offload_optimizer="offload_optimizer" in zero,
                offload_params="offload_param" in zero, dtype_bytes=dtype_bytes(config),
                micro_batch=p.per_device_batch_size, seq_len=seq, loss_tokens=loss_tokens,
                image_patches=4 * images, checkpointing=p.gradient_checkpointing,
                reference=bool(getattr(p, "kl_coef", 0)) and completion is not None,
                generation_kv=completion is not None and not use_vllm,
                vllm_share=p.vllm_gpu_memory_utilization if use_vllm else 0.0,
                vllm_max_model_len=getattr(p, "vllm_max_model_length", None) or seq,
                vllm_tp=getattr(p, "vllm_tensor_parallel_size", 1), gpu_gib=node.gpu_gib,
                cl_name=config.cl.name, cl_bytes_per_weight=config.cl.held_per_weight(dtype_bytes(config)))


def existing(path: Path) -> Path:
    """The nearest folder of `path` that exists (the run directory is made only by a run)."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def check_disk(config: Config, shape: ModelShape, run_dir: Path, stages: int) -> Disk:
    """The checkpoints the run will hold at once (resume.checkpoint_space, as the run checks
    it) against the run directory's free space."""
    size = dtype_bytes(config) * shape.total_params
    stages = 0 if config.schedule == Schedule.evaluate else stages
    need = checkpoint_space(size, stages, config.checkpoint.keep)
    where = existing(run_dir)
    free = shutil.disk_usage(where).free
    verdict = FITS if need <= 0.9 * free else TIGHT if need <= free else NO_FIT
    return Disk(size / GIB, stages, str(config.checkpoint.keep), need / GIB, free / GIB, str(where), verdict)


def readiness(config: Config) -> list[Ready]:
    """What the run imports, as items (a login node may lack vLLM or the GPU's extras)."""
    import torch

    def have(module: str) -> bool:
        return importlib.util.find_spec(module) is not None

    items = [Ready("CUDA", torch.cuda.is_available(), f"torch {torch.__version__}, "
                   f"{torch.cuda.device_count()} GPU(s) visible here")]
    if config.deepspeed.config:
        items.append(Ready("deepspeed", have("deepspeed"), f"deepspeed={config.deepspeed.name}"))
    if getattr(config.paradigm, "use_vllm", False) or config.eval.backend == "vllm":
        items.append(Ready("vllm", have("vllm"), "pip install 'cpt-bench[vllm]' on the GPU machine"))
    items.append(Ready("flash_attn", have("flash_attn"), "optional: faster attention on GPUs"))
    if config.eval.harness.backend != HarnessBackend.none:
        module = "lm_eval" if config.eval.harness.backend == HarnessBackend.lm_eval else "lmms_eval"
        items.append(Ready(module, have(module), f"eval.harness.backend={config.eval.harness.backend}"))
    if config.checkpoint.keep == KeepCheckpoints.none:
        items.append(Ready("checkpoints", True, "checkpoint.keep=none: no stage model is kept"))
    return items
