"""Loading models and their processing classes, and building the embedded base models.

`load_model_and_tokenizer` is the one place a model enters cpt-bench: a local folder or a
hub id, loaded through the Auto classes. What it loads is decided by the checkpoint's own
config: a vision-language model (one with a `vision_config`, e.g. Qwen2.5-VL) comes back as
an image-text model with its processor (tokenizer + image processor); any other model as a
causal LM with its tokenizer. The rest of cpt-bench calls that second object the
"tokenizer" and reaches the text tokenizer inside a processor through `text_tokenizer`.

`build_tiny_base` makes the embedded default: a small Llama-architecture LM with a tokenizer
trained here and pre-trained here on a mixture of the toy tasks, so no download is ever
needed. It is built once into a cache folder keyed by its recipe and reused afterwards.
`build_tiny_vlm` makes a tiny, randomly initialised Qwen2.5-VL in the real checkpoint layout
(Qwen2 tokenizer class, the real chat template, an image processor), for trying the
vision-language paths offline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from cpt_bench.tasks.base import ConfigError

log = logging.getLogger(__name__)

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
RECIPE_VERSION = 2  # bump when the recipe below changes in a way the cache key cannot see


@dataclass
class TinyRecipe:
    """Everything that determines the embedded base model (and so its cache key)."""

    seed: int = 0
    vocab_size: int = 160
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    intermediate_size: int = 384
    max_position_embeddings: int = 64
    items_per_task: int = 3000
    cot_share: float = 0.5  # share of items in CoT format (<think> ... </think> \boxed{})
    easy_share_cpt: float = 1.0  # share of easy items in the CPT tasks' pre-training mixture
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3

    def key(self, corpus: list[str]) -> str:
        """Hash of the recipe and of the corpus itself, so edited task code rebuilds."""
        h = hashlib.sha256(json.dumps({**asdict(self), "v": RECIPE_VERSION}, sort_keys=True).encode())
        for text in corpus:
            h.update(text.encode() + b"\n")
        return h.hexdigest()[:12]


def default_cache_dir() -> Path:
    return Path(os.environ.get("CPT_BENCH_CACHE", Path.home() / ".cache" / "cpt-bench"))


def cache_root(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir) if cache_dir else default_cache_dir()


def publish_build(target: Path, model, tokenizer, build: dict) -> Path:
    """Save a built model into `target` as one step: written to a temporary folder with its
    `build.json` (the completion mark), then renamed, so an interrupted build is simply
    redone and a process that finished the same build first wins."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "build.json").write_text(json.dumps(build, indent=2))
    if (target / "build.json").exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return target
    shutil.rmtree(target, ignore_errors=True)  # a leftover without build.json is incomplete
    try:
        tmp.rename(target)
    except OSError:
        if not (target / "build.json").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return target


class ModelLoadError(ConfigError):
    """A checkpoint that cpt-bench cannot use as it stands (reported in one line)."""


def text_tokenizer(tokenizer):
    """The text tokenizer: the object itself, or the one inside a multimodal processor."""
    return tokenizer.tokenizer if is_processor(tokenizer) else tokenizer


def is_processor(tokenizer) -> bool:
    """True for a multimodal processor (tokenizer + image processor), False for a tokenizer."""
    from transformers import ProcessorMixin

    return isinstance(tokenizer, ProcessorMixin)


def load_images(refs) -> list:
    """An item's images as PIL images: lazy references (`.load()`) are loaded, PIL images pass."""
    from PIL import Image

    return [ref if isinstance(ref, Image.Image) else ref.load() for ref in refs]


def user_message(text: str, num_images: int = 0) -> dict:
    """The user turn: plain text, or the images' placeholders followed by the text.

    Images go before the text, one `{"type": "image"}` block each, which is where TRL's
    `prepare_multimodal_messages` puts them; so the prompt evaluation renders and the one
    GRPO renders from a conversational prompt are the same string.
    """
    if not num_images:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [*({"type": "image"} for _ in range(num_images)), {"type": "text", "text": text}]}


def format_prompt(tokenizer, text: str, num_images: int = 0) -> str:
    """The exact string a model is conditioned on, shared by every paradigm and evaluation.

    Models with a chat template get the user turn plus the generation prompt; an item with
    images gets one placeholder per image in the user turn, in the form the chat template
    expects (the processor expands each into the image's tokens). The built-in model has no
    chat template and sees the raw task prompt.
    """
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [user_message(text, num_images)], tokenize=False, add_generation_prompt=True
        )
    if num_images:
        raise ModelLoadError(
            f"{type(tokenizer).__name__} has no chat template, so there is no place for an item's images in the "
            "prompt; use a vision-language model with a chat template (e.g. model=qwen2_5_vl_7b)"
        )
    return text


def completion_text(tokenizer, answer: str) -> str:
    """The target continuation for SFT: the answer, ended by the EOS token."""
    eos = text_tokenizer(tokenizer).eos_token
    if getattr(tokenizer, "chat_template", None):
        return answer + eos
    return " " + answer + eos


def encode_prompts(tokenizer, prompts: list[str], images: list[list] | None = None, device=None):
    """A left-padded batch for `generate`: through the processor when there are images.

    `images[i]` holds prompt i's PIL images (one per placeholder in it). Left padding: with
    right padding, batched generation of a causal LM silently goes wrong.
    """
    if images is not None and any(images):
        if not is_processor(tokenizer):
            raise ModelLoadError(f"items with images need a vision-language processor, not a {type(tokenizer).__name__}")
        encode, extra = tokenizer, {"images": [imgs for imgs in images if imgs]}
    else:
        encode, extra = text_tokenizer(tokenizer), {}
    enc = encode(text=prompts, padding=True, padding_side="left", return_tensors="pt", add_special_tokens=False,
                 **extra)
    return enc.to(device) if device is not None else enc


def is_vision_language(config) -> bool:
    """Whether a checkpoint's config is a vision-language model's (it has a vision tower)."""
    return getattr(config, "vision_config", None) is not None


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


def load_processor(path: str | Path, config=None):
    """AutoProcessor for a vision-language checkpoint, working without torchvision."""
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
    return processor


def load_model_and_tokenizer(path: str | Path, dtype: torch.dtype = torch.float32):
    """The model and its processing class, chosen by the checkpoint's config.

    A vision-language checkpoint: AutoModelForImageTextToText and its processor (checked to
    be one). Anything else: AutoModelForCausalLM and AutoTokenizer. Either way padding is on
    the left (batched generation) and a missing pad token falls back to EOS.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    config = AutoConfig.from_pretrained(str(path))
    if is_vision_language(config):
        tokenizer = load_processor(path, config)
        model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=dtype)
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    tok = text_tokenizer(tokenizer)
    tok.padding_side = "left"  # batched generation must pad on the left
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tokenizer


# --- the embedded base model -------------------------------------------------------------


def _pretraining_corpus(recipe: TinyRecipe) -> list[str]:
    from cpt_bench.prompts import PromptStyle
    from cpt_bench.tasks.toy import COT_INSTRUCTION, DIRECT_INSTRUCTION, GENERAL_SUITE, toy_tasks

    # both answer formats, so that the chain-of-thought ablation compares two known formats
    styles = [PromptStyle(cot, COT_INSTRUCTION, DIRECT_INSTRUCTION) for cot in (False, True)]
    rng = random.Random(recipe.seed)
    texts = []
    for name, task in toy_tasks(seed=recipe.seed).items():
        hard_share = 0.5 if name in GENERAL_SUITE else 1.0 - recipe.easy_share_cpt
        for ex in task.pretrain(recipe.items_per_task, hard_fraction=hard_share):
            style = styles[rng.random() < recipe.cot_share]
            texts.append(f"{style.user_text(ex)} {style.target(ex)}")
    rng.shuffle(texts)
    return texts


def train_tokenizer(texts: list[str], vocab_size: int):
    """A BPE tokenizer trained on the corpus: whole words for verbs, single digits and letters."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS, UNK])
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK, padding_side="left"
    )


def _pretrain(model, tokenizer, texts: list[str], recipe: TinyRecipe) -> list[float]:
    """Plain next-token pre-training on the mixture (one process, fixed seed)."""
    ids = tokenizer([t + EOS for t in texts], add_special_tokens=False)["input_ids"]
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=recipe.lr, total_steps=recipe.steps, pct_start=0.05
    )
    gen = torch.Generator().manual_seed(recipe.seed)
    pad = tokenizer.pad_token_id
    losses = []
    model.train()
    for step in range(recipe.steps):
        batch = [ids[i] for i in torch.randint(len(ids), (recipe.batch_size,), generator=gen)]
        width = max(map(len, batch))
        x = torch.full((len(batch), width), pad)
        for row, seq in enumerate(batch):
            x[row, : len(seq)] = torch.tensor(seq)
        labels = x.masked_fill(x == pad, -100)
        loss = model(input_ids=x, attention_mask=(x != pad).long(), labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 250 == 0 or step == recipe.steps - 1:
            log.info("pre-training the tiny base model: step %d/%d loss %.3f", step + 1, recipe.steps, loss.item())
    model.eval()
    return losses


def build_tiny_base(recipe: TinyRecipe, cache_dir: str | Path | None = None) -> Path:
    """Return the folder of the embedded base model, building it on first use.

    The folder name is the recipe's hash, so a changed recipe never reuses a stale model;
    a build writes to a temporary folder and renames it, so an interrupted build is redone.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    texts = _pretraining_corpus(recipe)
    key = recipe.key(texts)
    target = cache_root(cache_dir) / f"tiny-{key}"
    if (target / "build.json").exists():
        return target
    log.info("building the embedded base model into %s (once)", target)
    start = time.time()
    torch.manual_seed(recipe.seed)
    tokenizer = train_tokenizer(texts, recipe.vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_heads,
        max_position_embeddings=recipe.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    with torch.random.fork_rng():
        losses = _pretrain(model, tokenizer, texts, recipe)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    publish_build(target, model, tokenizer, {
        "recipe": asdict(recipe),
        "parameters": sum(p.numel() for p in model.parameters()),
        "pretraining_items": len(texts),
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "build_seconds": round(time.time() - start, 1),
    })
    log.info("built the embedded base model in %.0f s", time.time() - start)
    return target


# --- a tiny vision-language model ---------------------------------------------------------

# Qwen2-VL / Qwen2.5-VL's chat template (default system turn, one <|vision_start|><|image_pad|>
# <|vision_end|> per image block, `add_vision_id` numbering), as shipped with their checkpoints.
QWEN_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>"]


def train_qwen2_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer in transformers' Qwen2 tokenizer class, trained on `texts`.

    Same pre-tokenisation and special tokens as Qwen2/Qwen2.5(-VL); any text still encodes
    (the 256 byte symbols are always in the vocabulary).
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=QWEN_SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in json.loads(tok.to_str())["model"]["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=tok.get_vocab(), merges=merges, unk_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS[1:]})
    tokenizer.chat_template = QWEN_VL_CHAT_TEMPLATE
    return tokenizer


def build_tiny_vlm(out_dir: str | Path, texts: list[str] = (), seed: int = 0, vocab_size: int = 400,
                   hidden_size: int = 64, num_layers: int = 2, vision_depth: int = 2,
                   min_pixels: int = 56 * 56, max_pixels: int = 112 * 112) -> Path:
    """Save a tiny randomly initialised Qwen2.5-VL with the real checkpoint layout to `out_dir`.

    Config with a `vision_config` (text: `hidden_size`, `num_layers`; vision tower:
    `vision_depth` blocks), a Qwen2-class tokenizer trained on `texts` (plus the chat
    template's own words), the Qwen-VL chat template, a Qwen2-VL image processor limited to
    `min_pixels`..`max_pixels` (56x56 = 4 image tokens) and a processor config. It loads
    through `load_model_and_tokenizer` like the real model, so every vision-language path of
    cpt-bench can be exercised offline on a CPU in seconds. It knows nothing until trained.
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    out = Path(out_dir)
    tokenizer = train_qwen2_tokenizer(["system You are a helpful assistant. user assistant", *texts], vocab_size)
    ids = tokenizer.convert_tokens_to_ids
    heads = max(1, hidden_size // 16)
    half = hidden_size // heads // 2  # multimodal rotary sections (time, height, width) split a head's half
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
            max_position_embeddings=1024, bos_token_id=None, eos_token_id=ids("<|im_end|>"),
            pad_token_id=ids("<|endoftext|>"), tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "mrope_section": [half - 2 * (half // 3), half // 3, half // 3]},
        ),
        vision_config=dict(
            depth=vision_depth, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden_size,
            fullatt_block_indexes=[vision_depth - 1], window_size=112, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids("<|im_end|>")
    model.generation_config.pad_token_id = ids("<|endoftext|>")
    model.generation_config.bos_token_id = None
    image_processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
    processor_cls = register_image_only_processors().get("qwen2_5_vl")
    if processor_cls is None:
        from transformers import Qwen2_5_VLProcessor, Qwen2VLVideoProcessor

        processor = Qwen2_5_VLProcessor(image_processor, tokenizer, Qwen2VLVideoProcessor(),
                                        chat_template=QWEN_VL_CHAT_TEMPLATE)
    else:
        processor = processor_cls(image_processor, tokenizer, chat_template=QWEN_VL_CHAT_TEMPLATE)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@torch.no_grad()
def param_drift(model, base_path: str | Path) -> float:
    """||theta - theta_0||_2 over every parameter saved in the base checkpoint.

    Reads the base weights tensor by tensor from its safetensors files, so it never holds a
    second copy of the model in memory. A hub id is read from the local hub cache (where
    loading the model put it). Parameter names are matched both as the model names them and
    in the checkpoint's own layout (transformers renames e.g. Qwen2.5-VL's weights on load and
    back on save).
    """
    from safetensors import safe_open

    folder = Path(base_path)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(str(base_path), allow_patterns=["*.safetensors"]))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {base_path}")
    current = dict(model.named_parameters())
    by_saved_name = {**_saved_names(model, current), **current}
    total, matched = 0.0, 0
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                if name in by_saved_name:
                    p = by_saved_name[name].detach()
                    diff = p.float() - f.get_tensor(name).to(p.device).float()
                    total += float(diff.pow(2).sum())
                    matched += 1
    if not matched:
        log.warning("param_drift: no parameter of %s matched a tensor in %s", type(model).__name__, base_path)
        return float("nan")
    return total ** 0.5


def _saved_names(model, params: dict) -> dict:
    """The model's parameters under the names save_pretrained would write them with."""
    try:
        from transformers.core_model_loading import revert_weight_conversion

        saved = revert_weight_conversion(model, {name: p.detach() for name, p in params.items()})
    except Exception:  # noqa: BLE001 - a private transformers API: fall back to the plain names
        return {}
    return {name: t for name, t in dict(saved).items() if isinstance(t, torch.Tensor)}
