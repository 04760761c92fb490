"""Per-GPU memory of a training step, estimated from the model's shape and the run's settings.

Pure arithmetic over typed records (no torch, no model); DeepSpeed's own estimator gives the
model states under ZeRO, so the figure is the one its documentation tells users to plan with.

The activation formula (bytes of one micro-batch, e = the run dtype's bytes, T tokens, a
decoder layer of width h, MLP width i and key/value width kv):

    a layer's saved tensors, no checkpointing   T x (8h + 3kv + 4i) x e
    a checkpointed layer (its input and what     T x 2h x e
      the checkpoint keeps beside it)
    logits of the tokens that get a loss        t x V x (4 + e)   (fp32 log-softmax, and the
                                                                   16-bit logits in a 16-bit run)
    the backward of the loss (fp32, transient)  t x V x 8

peak = layers + logits + max(loss backward, one layer recomputed when checkpointed); a vision
tower adds its layers over its patches the same way. The coefficients count the tensors HF's
Llama/Qwen2 layers save (norms, q/k/v and rotary copies, attention output, SwiGLU's four
i-wide tensors); tests/test_preflight.py checks the formula against the measured peak of a
small model on the CPU (within 15 %).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from cpt_bench.preflight.shapes import ModelShape, Tower

GIB = 2**30
RUNTIME_GIB = 1.0  # CUDA context, NCCL buffers, allocator fragmentation: a stated allowance
VLLM_RESERVE_GIB = 1.0  # vLLM's own activations and CUDA graphs inside its share (allowance)
FITS, TIGHT, NO_FIT = "fits", "tight", "does not fit"


@dataclass(frozen=True)
class Step:
    """What one rank holds during a training step, as the run is configured."""

    world: int  # ranks in all (launcher.nproc_per_node x nnodes)
    ranks_per_node: int
    zero_stage: int  # 0 = no DeepSpeed (plain data parallel), 2 or 3
    offload_optimizer: bool
    offload_params: bool
    dtype_bytes: int  # the run's weights and activations: 2 (bf16/fp16) or 4 (fp32)
    micro_batch: int  # sequences per rank per micro-step
    seq_len: int  # tokens per sequence (image tokens included)
    loss_tokens: int  # tokens per sequence whose logits are computed
    image_patches: int  # vision-tower patches per sequence (0: none)
    checkpointing: bool
    reference: bool  # GRPO's KL reference model beside the policy
    generation_kv: bool  # rollouts by HF generate on the training GPU (its KV cache)
    vllm_share: float  # colocated vLLM's fraction of the GPU (0: none)
    vllm_max_model_len: int
    vllm_tp: int
    gpu_gib: float
    # the continual-learning method's own copies on each rank (MethodSettings.held_per_weight)
    cl_name: str = "none"
    cl_bytes_per_weight: float = 0.0


@dataclass
class Item:
    name: str
    gib: float
    note: str = ""


@dataclass
class Fix:
    setting: str  # the overrides that would make it fit
    total_gib: float
    verdict: str


@dataclass
class Estimate:
    items: list[Item]
    total_gib: float
    gpu_gib: float
    verdict: str
    cpu_gib: float = 0.0  # DeepSpeed's estimate of the node's CPU memory for the model states
    vllm_kv_tokens: int | None = None  # tokens vLLM's share leaves for its KV cache
    vllm_verdict: str | None = None
    fixes: list[Fix] = field(default_factory=list)


def verdict(need_gib: float, have_gib: float) -> str:
    """fits below 90 % of the memory, tight up to 100 %, else does not fit."""
    return FITS if need_gib <= 0.9 * have_gib else TIGHT if need_gib <= have_gib else NO_FIT


def model_states(shape: ModelShape, step: Step) -> tuple[float, float, str]:
    """(GPU bytes, CPU bytes, how) of weights, gradients and AdamW's states per rank."""
    nodes = max(step.world // step.ranks_per_node, 1)
    if step.zero_stage == 3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            shape.total_params, shape.largest_layer_params, step.ranks_per_node, nodes,
            cpu_offload=step.offload_optimizer, cpu_offload_params=step.offload_params)
        return gpu, cpu, "DeepSpeed's ZeRO-3 estimate"
    if step.zero_stage in (1, 2):
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

        cpu, gpu = estimate_zero2_model_states_mem_needs(shape.total_params, step.ranks_per_node, nodes,
                                                         cpu_offload=step.offload_optimizer)
        return gpu, cpu, "DeepSpeed's ZeRO-2 estimate"
    # no sharding: weights, gradients and AdamW's two states, all in the weights' dtype (torch)
    return 4 * step.dtype_bytes * shape.total_params, 0.0, "unsharded: weights + gradients + 2 AdamW states"


def layer_bytes(tower: Tower, tokens: int, e: int, checkpointed: bool) -> int:
    width = 2 * tower.hidden if checkpointed else 8 * tower.hidden + 3 * tower.kv_dim + 4 * tower.intermediate
    return tokens * width * e


def activation_bytes(shape: ModelShape, step: Step) -> int:
    """The activation formula above, for one micro-batch."""
    e, ckpt = step.dtype_bytes, step.checkpointing
    stacks = [(shape.text, step.micro_batch * step.seq_len)]
    if shape.vision is not None and step.image_patches:
        stacks.append((shape.vision, step.micro_batch * step.image_patches))
    layers = sum(t.layers * layer_bytes(t, n, e, ckpt) for t, n in stacks)
    logit_tokens = step.micro_batch * step.loss_tokens
    logits = logit_tokens * shape.vocab * (4 + (e if e != 4 else 0))
    recompute = max(layer_bytes(t, n, e, False) for t, n in stacks) if ckpt else 0
    return layers + logits + max(logit_tokens * shape.vocab * 8, recompute)


def vllm_kv_tokens(shape: ModelShape, step: Step) -> int:
    """Tokens of KV cache vLLM's share leaves after its weights (its gpu_memory_utilization x
    the GPU, minus the 16-bit weights over its tensor-parallel ranks and its own reserve)."""
    free = step.vllm_share * step.gpu_gib * GIB - 2 * shape.total_params / step.vllm_tp - VLLM_RESERVE_GIB * GIB
    per_token = shape.text.layers * 2 * shape.text.kv_dim * 2 / step.vllm_tp
    return max(int(free // per_token), 0)


def estimate(shape: ModelShape, step: Step, with_fixes: bool = True) -> Estimate:
    gpu, cpu, how = model_states(shape, step)
    items = [Item("model states", gpu / GIB, how + (" (optimizer offloaded)" if step.offload_optimizer else "")
                  + (" (parameters offloaded)" if step.offload_params else ""))]
    if step.reference:
        share = (step.dtype_bytes * shape.largest_layer_params if step.offload_params
                 else step.dtype_bytes * shape.total_params / (step.world if step.zero_stage == 3 else 1))
        items.append(Item("KL reference model", share / GIB,
                          "partitioned like the policy" if step.zero_stage == 3 else "a whole copy on each rank"))
    if step.cl_bytes_per_weight:
        items.append(Item(f"cl={step.cl_name}", step.cl_bytes_per_weight * shape.total_params / GIB,
                          f"{step.cl_bytes_per_weight:g} bytes per weight on each rank (docs/cluster.md)"))
    items.append(Item("activations", activation_bytes(shape, step) / GIB,
                      f"{step.micro_batch} x {step.seq_len} tokens, gradient checkpointing "
                      f"{'on' if step.checkpointing else 'off'}"))
    if step.generation_kv:
        kv = step.micro_batch * step.seq_len * shape.text.layers * 2 * shape.text.kv_dim * step.dtype_bytes
        items.append(Item("rollout KV cache (HF generate)", kv / GIB, f"{step.micro_batch} sequences"))
    kv_tokens = vllm_verdict = None
    if step.vllm_share:
        kv_tokens = vllm_kv_tokens(shape, step)
        vllm_verdict = (NO_FIT if kv_tokens < step.vllm_max_model_len else
                        TIGHT if kv_tokens < 2 * step.vllm_max_model_len else FITS)
        items.append(Item("vLLM share", step.vllm_share * step.gpu_gib,
                          f"{kv_tokens} KV-cache tokens = {kv_tokens / step.vllm_max_model_len:.1f} sequences of "
                          f"max_model_len {step.vllm_max_model_len}"))
    items.append(Item("runtime allowance", RUNTIME_GIB, "CUDA context, NCCL, fragmentation"))
    total = sum(i.gib for i in items)
    out = Estimate(items, total, step.gpu_gib, verdict(total, step.gpu_gib), cpu / GIB, kv_tokens, vllm_verdict)
    if with_fixes and out.verdict != FITS:
        out.fixes = fixes(shape, step)
    return out


def fixes(shape: ModelShape, step: Step) -> list[Fix]:
    """Each single change that would bring the step to `fits` (or closer), with its total."""
    options: list[tuple[str, Step]] = []
    if not step.checkpointing:
        options.append(("paradigm.gradient_checkpointing=true", replace(step, checkpointing=True)))
    if step.micro_batch > 1:
        half = step.micro_batch // 2
        options.append((f"paradigm.per_device_batch_size={half} (and twice the gradient_accumulation_steps)",
                        replace(step, micro_batch=half)))
    if not step.offload_params:
        options.append(("deepspeed=zero3_offload", replace(step, zero_stage=3, offload_optimizer=True,
                                                           offload_params=True)))
    if step.zero_stage != 3:
        options.append(("deepspeed=zero3", replace(step, zero_stage=3)))
    for nodes in (2, 4, 8):
        world = step.ranks_per_node * nodes
        if world > step.world and step.zero_stage:
            options.append((f"launcher.nnodes={nodes} ({world} ranks)", replace(step, world=world)))
    if step.vllm_share > 0.2:
        options.append(("paradigm.vllm_gpu_memory_utilization=0.2", replace(step, vllm_share=0.2)))
    current = estimate(shape, step, with_fixes=False).total_gib
    out = []
    for setting, changed in options:
        got = estimate(shape, changed, with_fixes=False)
        if got.total_gib < current:
            out.append(Fix(setting, got.total_gib, got.verdict))
    return sorted(out, key=lambda f: (f.verdict != FITS, f.total_gib))
