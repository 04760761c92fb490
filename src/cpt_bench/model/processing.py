"""Processing classes: the tokenizer or multimodal processor that goes with a checkpoint.

cpt-bench calls either object the model's `processing_class` (TRL's word): a tokenizer for a
text model, a processor (tokenizer + image processor) for a vision-language model.
`text_tokenizer` reaches the text tokenizer inside either. The rest of this module is the
image-only processor workaround described below.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cpt_bench.errors import ModelLoadError


def text_tokenizer(processing_class):
    """The text tokenizer: the object itself, or the one inside a multimodal processor."""
    return processing_class.tokenizer if is_processor(processing_class) else processing_class


def is_processor(processing_class) -> bool:
    """True for a multimodal processor (tokenizer + image processor), False for a tokenizer."""
    from transformers import ProcessorMixin

    return isinstance(processing_class, ProcessorMixin)


# --- vision-language processors ------------------------------------------------------------
#
# transformers' stock Qwen2-VL / Qwen2.5-VL processors carry a video processor that needs
# torchvision, which is not always installable (not next to a CPU-only torch, e.g.). Image and
# text data need no video processor, so where torchvision is missing these image-only variants
# are registered with AutoProcessor and used instead. They save themselves under the stock
# class's name, so a checkpoint written here loads with the stock processor wherever
# torchvision is installed (vLLM, another machine), and never names a class that only exists
# in this process (AutoProcessor silently returns a bare tokenizer for an unknown class name).

_IMAGE_ONLY: dict[str, type] = {}  # model_type -> image-only processor class


def _image_only_variant(base: type) -> type:
    class ImageOnly(base):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            # the base's __init__ reads the image/video token ids from the tokenizer; its video
            # processor slot is not among this class's attributes, so None there is dropped
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template)

        def to_dict(self):
            out = super().to_dict()
            out["processor_class"] = base.__name__
            return out

        def save_pretrained(self, save_directory, *args, **kwargs):
            out = super().save_pretrained(save_directory, *args, **kwargs)
            # the legacy preprocessor_config.json, as the released checkpoints have it: the stock
            # class builds its video processor from it when processor_config.json names none
            self.image_processor.save_pretrained(save_directory)
            config = Path(save_directory) / "tokenizer_config.json"  # the tokenizer records its processor too
            if config.exists():
                data = json.loads(config.read_text())
                if data.get("processor_class") == type(self).__name__:
                    data["processor_class"] = base.__name__
                    config.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
            return out

    ImageOnly.__name__ = ImageOnly.__qualname__ = f"ImageOnly{base.__name__}"
    ImageOnly.__doc__ = f"{base.__name__} without the video processor (image and text inputs only)."
    return ImageOnly


def register_image_only_processors() -> dict[str, type]:
    """Register the image-only processors with AutoProcessor where torchvision is missing.

    Idempotent; returns model_type -> class (empty where the stock processors load).
    """
    from transformers.utils import is_torchvision_available

    if _IMAGE_ONLY or is_torchvision_available():
        return _IMAGE_ONLY
    from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLProcessor, Qwen2VLConfig, Qwen2VLProcessor

    for model_type, config_cls, base in [("qwen2_5_vl", Qwen2_5_VLConfig, Qwen2_5_VLProcessor),
                                         ("qwen2_vl", Qwen2VLConfig, Qwen2VLProcessor)]:
        cls = _image_only_variant(base)
        globals()[cls.__name__] = cls  # importable by name, like any processor class
        AutoProcessor.register(config_cls, cls, exist_ok=True)
        _IMAGE_ONLY[model_type] = cls
    return _IMAGE_ONLY


def check_processor(processor, path, config=None):
    """Fail loudly unless `processor` can put images into a vision-language model.

    AutoProcessor falls back to a bare tokenizer when the processor class a checkpoint names
    cannot be found; training and evaluation would then silently drop every image.
    """
    if not is_processor(processor) or getattr(processor, "image_processor", None) is None:
        raise ModelLoadError(
            f"{path} is a vision-language model but AutoProcessor gave a {type(processor).__name__}, not a processor "
            "with an image processor, so images could not reach the model; check that the processor class named in "
            "its processor_config.json (or tokenizer_config.json) exists in this transformers version"
        )
    # the processor's image token (read from its tokenizer) must be the one the model replaces
    token_id = getattr(processor, "image_token_id", None)
    expected = getattr(config, "image_token_id", None)
    if token_id is not None and expected is not None and token_id != expected:
        raise ModelLoadError(
            f"{path}: the processor's image token id ({token_id}) does not match the model's ({expected}); "
            "the tokenizer does not belong to this model"
        )
    return processor


def load_processor(path: str | Path, config=None, pixels: PixelBounds | None = None):
    """AutoProcessor for a vision-language checkpoint, working without torchvision; with
    `pixels`, its images are resized into those bounds."""
    from transformers import AutoConfig, AutoProcessor
    from transformers.utils import is_torchvision_available

    variants = register_image_only_processors()
    config = config if config is not None else AutoConfig.from_pretrained(str(path))
    try:
        processor = AutoProcessor.from_pretrained(str(path))
    except (ImportError, OSError):  # the stock class's video processor needs torchvision (or has no config)
        if is_torchvision_available() or config.model_type not in variants:
            raise
        processor = variants[config.model_type].from_pretrained(str(path))
    check_processor(processor, path, config)
    if pixels is not None:
        pixels.apply(processor)
    return processor



# --- image resolution ----------------------------------------------------------------------


@dataclass(frozen=True)
class PixelBounds:
    """`model.min_pixels` / `model.max_pixels`: the resolution every image is resized into
    (Qwen2-VL-style processors keep the aspect ratio and scale the pixel count into the range).

    One setting for every path an image takes: applied to the processor each checkpoint loads
    with (training, evaluation, RIF, output drift) and saved with every stage's checkpoint,
    and passed to vLLM's own processor (`mm_processor_kwargs`). Unset = the checkpoint's own
    processor config (Qwen2.5-VL's allows about 16k visual tokens per image)."""

    min_pixels: int | None = None
    max_pixels: int | None = None

    @classmethod
    def of(cls, model_cfg) -> PixelBounds:
        return cls(getattr(model_cfg, "min_pixels", None), getattr(model_cfg, "max_pixels", None))

    def kwargs(self) -> dict[str, int]:
        return {k: v for k, v in (("min_pixels", self.min_pixels), ("max_pixels", self.max_pixels)) if v is not None}

    def apply(self, processor) -> None:
        """Set the bounds on a processor's image processor (its `size` holds them in transformers 5)."""
        image_processor = getattr(processor, "image_processor", None)
        if image_processor is None or not self.kwargs():
            return
        size = dict(getattr(image_processor, "size", None) or {})
        if self.min_pixels is not None:
            size["shortest_edge"] = self.min_pixels
        if self.max_pixels is not None:
            size["longest_edge"] = self.max_pixels
        image_processor.size = size
        for key, value in self.kwargs().items():  # the attribute older versions read
            if hasattr(image_processor, key):
                setattr(image_processor, key, value)


def image_tokens(processing_class, size: tuple[int, int]) -> int:
    """The tokens one image of `size` (width, height) becomes in the prompt, under the
    processor's resolution bounds; 0 for a processor that cannot say."""
    image_processor = getattr(processing_class, "image_processor", None)
    count = getattr(image_processor, "get_number_of_image_patches", None)
    if count is None:
        return 0
    merge = getattr(image_processor, "merge_size", 1) or 1
    return count(size[1], size[0], {}) // (merge * merge)
