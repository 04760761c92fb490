"""Decisions of the GPU path, tested on the CPU: the device and environment a rank's engine is
started with, where the policy is loaded under ZeRO-3, the image resolution every path shares,
the context colocated vLLM is sized for, how output drift samples and scores, and when a
text-only batch runs the vision tower. (A GPU run of the same code is benchmarks/gpu_check.sh.)"""

from __future__ import annotations

import copy
import shutil

import pytest
import torch

from cpt_bench.distributed import own_device_env, start_rank, zero_stage
from cpt_bench.model.drift import placeholder_tokens, response_logprobs, sample_responses
from cpt_bench.model.evaluation import prompt_tokens
from cpt_bench.model.loading import load_checkpoint
from cpt_bench.model.processing import PixelBounds, image_tokens
from cpt_bench.model.prompts import PromptStyle, encode_prompts, format_prompt
from cpt_bench.model.vision_zero3 import align_vision_tower, full_forward
from cpt_bench.paradigms.rft import vllm_model_length
from cpt_bench.run.rank import policy_device
from cpt_bench.run.worker import own_engine_device
from cpt_bench.tasks.base import Example

from conftest import compose_config

# --- devices -------------------------------------------------------------------------------

@pytest.mark.parametrize(("visible", "local_rank", "expected"), [
    (None, 3, "3"),  # every GPU of the node visible: the rank's own index
    ("4,5,6,7", 2, "6"),  # the job's GPUs (SLURM sets the list): the rank's entry of it
    ("GPU-a1, GPU-b2", 1, "GPU-b2"),  # UUIDs work the same
])
def test_each_ranks_engine_sees_its_own_gpu(visible, local_rank, expected):
    env = {"CUDA_VISIBLE_DEVICES": visible} if visible else {}
    assert own_device_env(env, local_rank) == {"CUDA_VISIBLE_DEVICES": expected}


def test_a_rank_beyond_the_visible_gpus_is_an_error():
    with pytest.raises(RuntimeError, match="local rank 2 has no GPU"):
        own_device_env({"CUDA_VISIBLE_DEVICES": "0,1"}, 2)


def test_start_rank_narrows_the_devices_before_any_cuda_call():
    env = {"LOCAL_RANK": "5", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}
    device = start_rank(env, own_device=True)
    assert env["CUDA_VISIBLE_DEVICES"] == "5"
    assert device == ("cuda:0" if torch.cuda.is_available() else "cpu")  # its one GPU is cuda:0
    env = {"LOCAL_RANK": "5"}
    assert start_rank(env) == ("cuda:5" if torch.cuda.is_available() else "cpu")
    assert "CUDA_VISIBLE_DEVICES" not in env  # training ranks keep the node's view (NCCL, DeepSpeed)


def test_which_steps_pin_their_engine_to_one_gpu():
    hf, vllm = compose_config("launcher=torchrun"), compose_config("launcher=torchrun", "eval.backend=vllm")
    assert not own_engine_device("evaluate", hf) and not own_engine_device("train", hf)
    assert own_engine_device("evaluate", vllm) and own_engine_device("rollout", vllm)
    assert not own_engine_device("train", vllm)  # TRL's colocated vLLM shares the training ranks' GPUs


def test_under_zero3_the_policy_is_loaded_on_the_cpu():
    assert zero_stage(compose_config("deepspeed=zero3")) == 3
    assert zero_stage(compose_config("deepspeed=zero2")) == 2 and zero_stage(compose_config()) is None
    assert policy_device("cuda:3", 3) == "cpu"  # DeepSpeed moves this rank's partition to the GPU
    assert policy_device("cuda:3", 2) == "cuda:3" and policy_device("cuda:3", None) == "cuda:3"


# --- image resolution and lengths --------------------------------------------------------------

@pytest.mark.slow
def test_one_pixel_bound_for_every_path(tmp_path):
    from PIL import Image

    from tiny_vlm import build_tiny_vlm

    base = build_tiny_vlm(tmp_path / "vlm", max_pixels=448 * 448)
    _, processor = load_checkpoint(base)
    big = (1000, 1000)
    assert image_tokens(processor, big) == (448 // 28) ** 2  # the checkpoint's own bound: 256 tokens
    pixels = PixelBounds(min_pixels=56 * 56, max_pixels=112 * 112)
    _, capped = load_checkpoint(base, pixels=pixels)
    assert image_tokens(capped, big) == (112 // 28) ** 2  # 16 tokens
    enc = capped(text=["<|vision_start|><|image_pad|><|vision_end|>x"], images=[Image.new("RGB", big)],
                 return_tensors="pt")
    assert int((enc["input_ids"] == capped.image_token_id).sum()) == 16  # what the processor really does
    shutil.copytree(base, tmp_path / "stage")
    capped.save_pretrained(tmp_path / "stage")  # a stage checkpoint carries the bound (vLLM reads it)
    _, reloaded = load_checkpoint(tmp_path / "stage")
    assert image_tokens(reloaded, big) == 16
    # evaluation sorts image batches by tokens, image tokens included
    assert prompt_tokens(capped, ["a", "a"], [[], [Image.new("RGB", big)]]) == [1, 17]
    assert pixels.kwargs() == {"min_pixels": 3136, "max_pixels": 12544}  # vLLM's mm_processor_kwargs


def test_pixel_bounds_are_validated():
    from cpt_bench.config import validate
    from cpt_bench.errors import ConfigError

    with pytest.raises(ConfigError, match="model.min_pixels"):
        validate(compose_config("model.min_pixels=5000", "model.max_pixels=1000"))
    assert validate(compose_config("model.max_pixels=1003520")).model.max_pixels == 1003520


def test_colocated_vllm_is_sized_for_the_stages_longest_prompt(tiny_base):
    _, tok = load_checkpoint(tiny_base)
    style = PromptStyle(cot=False, cot_instruction="", direct_instruction="")
    items = [Example("max", "max 1 2 =", "2"), Example("max", "max 1 2 3 4 5 6 7 8 9 =", "9")]
    longest = max(len(tok(format_prompt(tok, ex.prompt), add_special_tokens=False)["input_ids"]) for ex in items)
    assert vllm_model_length(tok, items, style, completion_length=1024) == -(-(longest + 1024) // 256) * 256
    assert vllm_model_length(tok, items, style, completion_length=1024) < 2048  # not the model's whole context
    # never beyond the model's own context, which vLLM refuses (the tiny model holds 64 positions)
    assert vllm_model_length(tok, items, style, completion_length=24, limit=64) == 64
    from cpt_bench.config import validate
    from cpt_bench.errors import ConfigError

    with pytest.raises(ConfigError, match="paradigm.vllm_max_model_length"):
        validate(compose_config("paradigm=rft", "paradigm.vllm_max_model_length=16"))


# --- output drift --------------------------------------------------------------------------------

def test_scoring_in_chunks_equals_scoring_every_position_at_once(tiny_base, monkeypatch):
    import cpt_bench.model.drift as drift

    model, tok = load_checkpoint(tiny_base)
    enc = encode_prompts(tok, [format_prompt(tok, t) for t in ["max 3 9 1 =", "copy a b ="]])
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=True, max_new_tokens=6, pad_token_id=tok.pad_token_id)
        attention = torch.cat([enc["attention_mask"], torch.ones_like(out[:, enc["input_ids"].shape[1]:])], -1)
        prompt_len = enc["input_ids"].shape[1]
        position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
        full = torch.log_softmax(model(input_ids=out, attention_mask=attention, position_ids=position_ids)
                                 .logits[:, prompt_len - 1:-1].float(), -1)
        expected = full.gather(-1, out[:, prompt_len:, None]).squeeze(-1)
        monkeypatch.setattr(drift, "LOGIT_CHUNK", 2 * model.config.vocab_size * 2)  # 2 positions at a time
        chunked = response_logprobs(model, out, attention, {}, prompt_len, text_only=True)
    assert chunked.shape == expected.shape and torch.allclose(chunked, expected, atol=1e-5)


def test_drift_samples_from_the_policy_not_from_the_checkpoints_generation_config(tiny_base):
    model, tok = load_checkpoint(tiny_base)
    enc = encode_prompts(tok, [format_prompt(tok, "copy a a a a =")])
    torch.manual_seed(0)
    plain = sample_responses(model, enc, tok, max_new_tokens=8)
    odd = copy.deepcopy(model)
    odd.generation_config.repetition_penalty = 50.0  # e.g. a checkpoint's generation_config.json
    odd.generation_config.no_repeat_ngram_size = 1
    torch.manual_seed(0)
    assert torch.equal(sample_responses(odd, enc, tok, max_new_tokens=8), plain)
    assert odd.generation_config.repetition_penalty == 50.0  # the model's own config is left as it was


def test_placeholder_tokens_of_a_vision_language_config():
    from transformers import Qwen2_5_VLConfig

    config = Qwen2_5_VLConfig(image_token_id=7, video_token_id=8, vision_start_token_id=5, vision_end_token_id=6)
    assert placeholder_tokens(config) == [5, 6, 7, 8]
    assert placeholder_tokens(compose_config().model) == []  # a text model has none


@pytest.mark.slow
def test_drift_never_samples_an_image_placeholder(tmp_path):
    from tiny_vlm import build_tiny_vlm

    model, processor = load_checkpoint(build_tiny_vlm(tmp_path / "vlm"))
    tok = processor.tokenizer
    image_id = model.config.image_token_id
    model.lm_head.register_forward_hook(lambda m, i, out: out.index_add(
        -1, torch.tensor([image_id]), torch.full((*out.shape[:-1], 1), 100.0)))  # the image token: near certain
    enc = encode_prompts(processor, [format_prompt(processor, "hello")])
    naive = model.generate(**enc, do_sample=True, max_new_tokens=4, pad_token_id=tok.pad_token_id)
    assert (naive[:, enc["input_ids"].shape[1]:] == image_id).all()  # what plain sampling would do
    out = sample_responses(model, enc, tok, max_new_tokens=4)
    assert not (out[:, enc["input_ids"].shape[1]:] == image_id).any()


# --- the vision tower on text-only batches ----------------------------------------------------------

def test_only_full_forwards_count():
    from transformers import DynamicCache

    assert full_forward({}) and full_forward({"past_key_values": None})
    cache = DynamicCache()
    assert full_forward({"past_key_values": cache}) and full_forward({"cache": cache})  # generate's prefill
    cache.update(torch.zeros(1, 1, 3, 4), torch.zeros(1, 1, 3, 4), 0)
    assert not full_forward({"past_key_values": cache}) and not full_forward({"cache": cache})  # a decode step


@pytest.mark.slow
def test_generation_runs_the_dummy_vision_pass_once_not_per_token(tmp_path):
    from tiny_vlm import build_tiny_vlm

    model, processor = load_checkpoint(build_tiny_vlm(tmp_path / "vlm"))
    align_vision_tower(model, processor)
    calls = []
    model.model.visual.register_forward_hook(lambda *a: calls.append(1))
    model.train()  # TRL generates rollouts with the policy in training mode
    enc = encode_prompts(processor, [format_prompt(processor, "hello")])
    with torch.no_grad():
        model.generate(**enc, do_sample=False, max_new_tokens=6, min_new_tokens=6,
                       pad_token_id=processor.tokenizer.pad_token_id)
    assert len(calls) == 1  # the prefill only, not one per generated token
    calls.clear()
    model(**enc)  # a training forward pass of a text-only batch
    assert len(calls) == 1
    calls.clear()
    model.eval()
    with torch.no_grad():
        model(**enc)  # evaluation: no ZeRO-3 collectives to match, no dummy pass
    assert not calls
