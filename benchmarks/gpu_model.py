"""Build a model with Qwen2.5-0.5B-Instruct's architecture and random weights, with a Qwen2
tokenizer trained here on the toy tasks' text and Qwen's chat template, into a folder that
`model.path=` loads. For throughput and memory checks only: it knows nothing.

    python benchmarks/gpu_model.py OUT_DIR [--layers N]   (--layers 2 makes a CPU smoke test)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--layers", type=int, default=24)  # Qwen2.5-0.5B: 24
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))  # the Qwen2 tokenizer builder the tests use
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from cpt_bench.tasks.toy import toy_tasks

    from tiny_vlm import QWEN_VL_CHAT_TEMPLATE, train_qwen2_tokenizer

    texts = [f"{ex.prompt} {ex.answer}" for task in toy_tasks().values() for ex in task.train()[:200]]
    tokenizer = train_qwen2_tokenizer(texts, 2000)
    tokenizer.chat_template = QWEN_VL_CHAT_TEMPLATE  # text-only turns render as Qwen's chat format
    config = Qwen2Config(  # Qwen2.5-0.5B-Instruct's config.json
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=args.layers,
        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0,
        rms_norm_eps=1e-6, tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"{args.out}: {model.num_parameters() / 1e6:.0f}M parameters, {args.layers} layers")


if __name__ == "__main__":
    main()
