"""The three GPU checks that retire the largest risks of the paper's setting on one GPU
(benchmarks/gpu_check.sh runs them), on a random-weight model of Qwen2.5-VL-7B's shape built
directly on the GPU in bf16, with this process's memory capped to an 80 GB card's share:

    kl        output drift (drift.output_kl) between two 7B models, 1024 new tokens, real-size
              images at the paper's pixel cap: peak memory, seconds per batch and per stage
    eval      HF evaluation (evaluation.generate) at batch 64 x 1024 new tokens on large photos,
              with and without the pixel cap: peak memory, tokens/s, hours per matrix row
    grpo      one GRPO step (paradigms.rft, TRL's trainer) with the KL reference model while the
              colocated vLLM's share (paradigm.vllm_gpu_memory_utilization) is held back

    python benchmarks/gpu_risks.py {kl,eval,grpo} OUT.json [--smoke]

`--smoke` shrinks the model to two layers on the CPU, to check the script itself here. An
out-of-memory error is a result, recorded as such. The weights know nothing: only memory and
speed are measured, and random weights rarely stop before the token limit (the worst case).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the Qwen2 tokenizer builder and the mixed MLLM files

CARD_GB = 80  # the memory a paper run's GPU has (A100/H100 80 GB)
PAPER_PIXELS = (200704, 1003520)  # the authors' EasyR1 min/max pixels
# one matrix row: the paper's seven test sets (docs/paper.md; GQA's testdev-balanced 12,578)
# and the general suite (MMMU validation 900, MMLU-Pro test 12,032, POPE 9,000): dataset sizes
ROW_ITEMS = 2017 + 5000 + 4319 + 12578 + 601 + 6719 + 642 + 900 + 12032 + 9000


def qwen25_vl_7b(vocab: int, ids, smoke: bool):
    from transformers import Qwen2_5_VLConfig

    layers, depth = (2, 2) if smoke else (28, 32)
    hidden, heads = (256, 4) if smoke else (3584, 28)
    return Qwen2_5_VLConfig(
        text_config=dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=18944 if not smoke else 512,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=4 if not smoke else 2,
                         max_position_embeddings=128000, eos_token_id=ids("<|im_end|>"),
                         pad_token_id=ids("<|endoftext|>"), bos_token_id=None, tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                          "mrope_section": [16, 24, 24] if not smoke else [8, 12, 12]}),
        vision_config=dict(depth=depth, hidden_size=1280 if not smoke else 64, intermediate_size=3420 if not smoke
                           else 128, num_heads=16 if not smoke else 2, out_hidden_size=hidden,
                           fullatt_block_indexes=[7, 15, 23, 31] if not smoke else [1], window_size=112,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False)


def build(folder: Path, device: str, smoke: bool, *, models: int = 1, save: bool = False):
    """A processor and `models` random models of Qwen2.5-VL-7B's shape, created on `device` in
    bf16 (never a float32 copy); `save` writes the first with its processor into `folder`."""
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from cpt_bench.model.processing import register_image_only_processors

    from tiny_vlm import QWEN_VL_CHAT_TEMPLATE, train_qwen2_tokenizer

    tokenizer = train_qwen2_tokenizer(["system You are a helpful assistant. user assistant " * 4,
                                       "What is shown in the photo? Answer with a word. think boxed"], 1000)
    config = qwen25_vl_7b(152064 if not smoke else len(tokenizer), tokenizer.convert_tokens_to_ids, smoke)
    image_processor = Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=12845056)  # Qwen2.5-VL's own bounds
    image_only = register_image_only_processors().get("qwen2_5_vl")  # where torchvision is missing
    if image_only is None:
        from transformers import Qwen2_5_VLProcessor, Qwen2VLVideoProcessor

        processor = Qwen2_5_VLProcessor(image_processor, tokenizer, Qwen2VLVideoProcessor(),
                                        chat_template=QWEN_VL_CHAT_TEMPLATE)
    else:
        processor = image_only(image_processor, tokenizer, chat_template=QWEN_VL_CHAT_TEMPLATE)
    out = []
    torch.set_default_dtype(torch.bfloat16)
    try:
        for seed in range(models):
            torch.manual_seed(seed)
            with torch.device(device):
                model = Qwen2_5_VLForConditionalGeneration(config)
            model.generation_config.eos_token_id = config.text_config.eos_token_id
            model.generation_config.pad_token_id = config.text_config.pad_token_id
            out.append(model.eval())
    finally:
        torch.set_default_dtype(torch.float32)
    if save:
        out[0].save_pretrained(folder)
        processor.save_pretrained(folder)
    return processor, out


def photos(n: int, size: tuple[int, int]):
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    return [[Image.fromarray(torch.randint(0, 255, (size[1], size[0], 3), generator=gen, dtype=torch.uint8).numpy())]
            for _ in range(n)]


def peak_gb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def check_kl(args, device: str) -> dict:
    from cpt_bench.model.drift import output_kl
    from cpt_bench.model.processing import PixelBounds
    from cpt_bench.model.prompts import format_prompt

    processor, (model, base) = build(Path(tempfile.mkdtemp()), device, args.smoke, models=2)
    PixelBounds(*PAPER_PIXELS).apply(processor)
    batch, new = (2, 8) if args.smoke else (32, 1024)
    prompts = [format_prompt(processor, "What is shown in the photo? Answer with a word.", 1)] * batch
    start = time.time()
    est = output_kl(model, base, processor, prompts, photos(batch, (1024, 768)), samples=batch, max_new_tokens=new,
                    seed=0, batch_size=batch)
    seconds = time.time() - start
    samples_per_stage = 2 * 64  # eval.kl_samples prompts of the trained task and of the general suite
    return {"check": "output_kl", "batch": batch, "max_new_tokens": new, "image": "1024x768 at max_pixels 1003520",
            "seconds_per_batch": round(seconds, 1), "peak_gb": peak_gb(), "kl_finite": math.isfinite(est.kl),
            "projected_seconds_per_stage": round(seconds * samples_per_stage / batch, 1)}


def check_eval(args, device: str, save=lambda record: None) -> dict:
    from cpt_bench.model.evaluation import generate
    from cpt_bench.model.processing import PixelBounds
    from cpt_bench.model.prompts import format_prompt

    processor, (model,) = build(Path(tempfile.mkdtemp()), device, args.smoke)
    batch, new = (2, 8) if args.smoke else (64, 1024)
    prompts = [format_prompt(processor, "What is shown in the photo? Answer with a word.", 1)] * batch
    images = photos(batch, (2048, 1536))  # a VizWiz/TextVQA-size photo
    out = {"check": "hf_evaluation", "batch": batch, "max_new_tokens": new, "image": "2048x1536"}
    for name, pixels in (("capped", PixelBounds(*PAPER_PIXELS)), ("uncapped", PixelBounds(3136, 12845056))):
        pixels.apply(processor)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        start = time.time()
        try:
            texts = generate(model, processor, prompts, batch, new, images=images)
            seconds = time.time() - start
            tokens = sum(len(processor.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
            out[name] = {"seconds": round(seconds, 1), "generated_tokens_per_second": round(tokens / seconds, 1),
                         "peak_gb": peak_gb(),
                         "projected_hours_per_matrix_row": round(ROW_ITEMS / batch * seconds / 3600, 1)}
        except torch.OutOfMemoryError as exc:
            out[name] = {"out_of_memory": str(exc).splitlines()[0]}
        save(out)  # the capped figures survive a time limit that stops the uncapped run
    return out


def check_grpo(args, device: str) -> dict:
    """One GRPO step through cpt-bench's own paradigm and TRL, with the vLLM share held back."""
    from cpt_bench.model.loading import load_checkpoint
    from cpt_bench.model.prompts import PromptStyle
    from cpt_bench.paradigms.base import StageContext
    from cpt_bench.paradigms.rft import RFT, RFTParadigm
    from cpt_bench.tasks.base import Example

    folder = Path(tempfile.mkdtemp())
    build(folder / "base", "cpu" if args.smoke else device, args.smoke, save=True)
    model, processor = load_checkpoint(folder / "base", dtype=torch.bfloat16 if not args.smoke else torch.float32)
    model.to(device)
    held = None
    if torch.cuda.is_available():  # what colocated vLLM would take of the card (paper preset: 0.3)
        held = torch.empty(int(0.3 * CARD_GB * 2**30), dtype=torch.uint8, device=device)
    (image,) = photos(1, (1024, 768))
    items = [Example("photo", "What is shown in the photo?", "cat", images=tuple(image))]  # one group of 8

    class Task:
        name = "photo"

        @staticmethod
        def grade(answer, ex):
            return float(answer == ex.answer)

    cfg = RFTParadigm(learning_rate=1e-6, num_generations=8, per_device_batch_size=8, max_steps=1,
                      max_completion_length=8 if args.smoke else 1024, kl_coef=0.01, gradient_checkpointing=True)
    ctx = StageContext(stage=1, task_name="photo", tasks={"photo": Task()}, style=PromptStyle(True, "think"),
                       base_path=str(folder / "base"), start_path=str(folder / "base"), work_dir=folder / "work",
                       save_dir=folder / "stage", seed=0, use_cpu=not torch.cuda.is_available(),
                       bf16=torch.cuda.is_available())
    start = time.time()
    try:
        result = RFT(cfg).train_stage(model, processor, items, ctx)
        out = {"seconds": round(time.time() - start, 1), "optimizer_steps": result.optimizer_steps,
               "generated_tokens": result.generated_tokens, "kl": result.metrics.get("kl")}
    except torch.OutOfMemoryError as exc:
        out = {"out_of_memory": str(exc).splitlines()[0]}
    del held
    return {"check": "grpo_step", "completions": 8, "reference_model": True, "vllm_share_held_gb": 0.3 * CARD_GB,
            "peak_gb": peak_gb(), **out}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("check", choices=["kl", "eval", "grpo"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--smoke", action="store_true", help="a two-layer model on the CPU: checks the script")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if device == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, CARD_GB * 2**30 / total))
        torch.cuda.reset_peak_memory_stats()
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu (smoke)"

    def save(record: dict) -> None:
        args.out.write_text(json.dumps({"device": name, **record}, indent=2) + "\n")

    check = {"kl": check_kl, "eval": partial(check_eval, save=save), "grpo": check_grpo}[args.check]
    result = {"device": name, **check(args, device)}
    save(result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
