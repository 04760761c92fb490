"""A tiny, randomly initialised Qwen2.5-VL in the real checkpoint layout, for tests only.

Qwen2 tokenizer class trained here, the real chat template, an image processor and a
processor config: it loads through `cpt_bench.model.loading.load_checkpoint` like the real model, so
every vision-language path of cpt-bench can be exercised offline on a CPU in seconds (as TRL
keeps its tiny-model builders outside its package).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cpt_bench.model.processing import register_image_only_processors

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
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
              for m in json.loads(tok.to_str())["model"]["merges"]]
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
    through `load_checkpoint` like the real model, so every vision-language path of
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


def write_mixed_mllm_data(data: Path, items: int = 8) -> dict[str, Path]:
    """Local MLLM-CL files in the authors' ShareGPT format: ScienceQA items, each with a red or
    blue square and the colour as option A or B, and MMLU-Pro-style text-only items. Returns the
    overrides' paths: the data dir (ScienceQA_{train,test}.json) and MMLU-Pro's two files."""
    from PIL import Image

    from cpt_bench.tasks.mllm import OPTION_LETTER

    question = f"What colour is the square?\nA. red\nB. blue\n{OPTION_LETTER}"
    for split in ("train", "test"):
        image_items, text_items = [], []
        for i in range(items):
            answer = "AB"[i % 2]
            rel = f"ScienceQA/{split}_images/{i}.png"
            (data / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (56, 56), (220, 30, 30) if answer == "A" else (30, 30, 220)).save(data / rel)
            image_items.append({"messages": [{"role": "user", "content": "<image>\n" + question},
                                             {"role": "assistant", "content": answer}], "images": [rel]})
            text_items.append({"messages": [{"role": "user", "content": f"Is {i} even?\nA. yes\nB. no\n"
                                                                        f"{OPTION_LETTER}"},
                                            {"role": "assistant", "content": "AB"[i % 2]}]})
        (data / f"ScienceQA_{split}.json").write_text(json.dumps(image_items))
        (data / f"mmlu_{split}.json").write_text(json.dumps(text_items))
    return {"data_dir": data, "mmlu_train": data / "mmlu_train.json", "mmlu_test": data / "mmlu_test.json"}


def mixed_mllm_overrides(paths: dict[str, Path], base: Path) -> list[str]:
    """cpt-bench overrides that run benchmark=mllm_cl7 on `write_mixed_mllm_data`'s files with
    ScienceQA (images) and MMLU-Pro (text only) as the CPT tasks, on the tiny VLM at `base`."""
    return ["benchmark=mllm_cl7", f"benchmark.data_dir={paths['data_dir']}", "benchmark.tasks=[scienceqa,mmlu_pro]",
            "benchmark.general=[]", f"benchmark.sources.mmlu_pro.train.path={paths['mmlu_train']}",
            f"benchmark.sources.mmlu_pro.test.path={paths['mmlu_test']}", f"model.path={base}", "model.builtin=null"]
