"""Mixed image/text micro-batches under DeepSpeed ZeRO-3 over several ranks.

ZeRO-3 partitions every weight across the ranks and gathers a module's weights collectively
when it runs. A rank whose micro-batch has no image skips the vision tower while another rank
runs it: their collectives no longer match and the job crashes or hangs (seen here with gloo:
"Received data size doesn't match expected size"; Qwen3-VL#126, ms-swift#9639). The joint
schedule mixes tasks, so text-only items meet image items. The remedy used by ms-swift: on a
micro-batch without images, run the vision tower on a dummy image and add 0 x its output to
the loss and logits, so every rank gathers (and back-propagates through) the same modules,
and nothing changes numerically.
"""

from __future__ import annotations

import logging

from PIL import Image

log = logging.getLogger("cpt_bench")


def full_forward(kwargs: dict) -> bool:
    """A forward over whole sequences, not a decode step of `generate` (whose cache already
    holds the prompt). Only full forwards can differ between ranks in whether they run the
    vision tower: decode steps never do, on any rank."""
    cache = kwargs.get("past_key_values", kwargs.get("cache"))  # the name transformers 5 gives it varies by version
    return cache is None or not hasattr(cache, "get_seq_length") or cache.get_seq_length() == 0


def align_vision_tower(model, processing_class, *, training_only: bool = True) -> None:
    """Make a vision-language model run its vision tower on every full forward pass (in
    training mode only, with `training_only`: the policy; every one: TRL's KL reference, which
    runs in eval mode), at the point where an image batch runs it (between the token embedding
    and the language model), so the ranks' ZeRO-3 gathers, and DeepSpeed's record of the module
    order, agree. Decode steps of rollout generation skip it (see `full_forward`): the dummy
    image at every generated token would cost a vision pass per token."""
    dummy = processing_class.image_processor(images=[Image.new("RGB", (56, 56))], return_tensors="pt")
    pixel_values, grid = dummy["pixel_values"], dummy.get("image_grid_thw")
    state = {"text_only": False, "used": False}

    def note_batch(module, args, kwargs):
        state["text_only"] = ((module.training or not training_only) and kwargs.get("pixel_values") is None
                              and full_forward(kwargs))

    def add_vision(module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        if not state["text_only"] or embeds is None:
            return None
        state["text_only"] = False  # once per forward pass
        if not state["used"]:
            state["used"] = True
            log.info("a text-only batch ran the vision tower of %s on the dummy image", type(model).__name__)
        features = model.get_image_features(pixel_values.to(embeds.device),
                                            grid.to(embeds.device) if grid is not None else None)
        pooled = getattr(features, "pooler_output", features)
        parts = pooled if isinstance(pooled, (list, tuple)) else [pooled]
        kwargs["inputs_embeds"] = embeds + sum(t.mean() for t in parts).to(embeds.dtype) * 0.0
        return args, kwargs

    # ahead of any hook already there: on a model DeepSpeed has wrapped (TRL's KL reference), its
    # own pre-forward hooks must see the vision tower run before the language model, as on a
    # rank with images, or the ranks' fetch orders (and so their collectives) differ
    model.register_forward_pre_hook(note_batch, with_kwargs=True, prepend=True)
    model.model.language_model.register_forward_pre_hook(add_vision, with_kwargs=True, prepend=True)
    log.info("ZeRO-3 over several ranks with a vision-language model: text-only micro-batches run the "
             "vision tower on a dummy image (x 0) so every rank gathers the same weights")


def needs_alignment(model, deepspeed_config: dict | None, world_size: int) -> bool:
    """Whether training `model` needs the alignment: ZeRO-3 over several ranks, a vision-language model."""
    from cpt_bench.model.loading import is_vision_language

    stage = ((deepspeed_config or {}).get("zero_optimization") or {}).get("stage")
    return (world_size > 1 and stage == 3 and is_vision_language(model.config)
            and hasattr(model, "get_image_features") and hasattr(getattr(model, "model", None), "language_model"))

