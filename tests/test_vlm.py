"""Vision-language models: loading, prompts, evaluation, SFT, RFT (GRPO) and RIF with images.

Everything runs offline on a tiny randomly initialised Qwen2.5-VL (`build_tiny_vlm`: text
hidden 64, 2 layers, vision depth 2, a Qwen2-class tokenizer trained here, the real chat
template) and a synthetic image task: a solid-coloured square, the question "What colour is
the square?" (the same text for every item), the colour as the answer. Since the text never
changes, any accuracy above 25 % has to come from the image.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from cpt_bench.errors import ModelLoadError
from cpt_bench.model.drift import param_drift
from cpt_bench.model.evaluation import accuracy, evaluate_tasks
from cpt_bench.model.loading import load_checkpoint
from cpt_bench.model.processing import (
    check_processor,
    is_processor,
    load_processor,
    register_image_only_processors,
    text_tokenizer,
)
from cpt_bench.model.prompts import PromptStyle, encode_prompts, format_prompt, user_message
from cpt_bench.paradigms.base import StageContext
from cpt_bench.paradigms.filtering import keep_item
from cpt_bench.paradigms.rft import RFT, RFTParadigm
from cpt_bench.paradigms.rollouts import Rollouts, sample_rollouts
from cpt_bench.paradigms.sft import SFT, SFTParadigm
from cpt_bench.tasks.base import Example

from tiny_vlm import build_tiny_vlm, train_qwen2_tokenizer

pytestmark = pytest.mark.slow  # every test here builds a tiny Qwen2.5-VL or Qwen2 model

QUESTION = "What colour is the square?"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}
STYLE = PromptStyle(cot=False, cot_instruction="think", direct_instruction="")


@dataclass(frozen=True)
class SolidImage:
    """A lazily drawn image, like a benchmark's image reference: `.load()` gives a PIL image."""

    rgb: tuple[int, int, int]
    size: int = 56  # 56 x 56 = 4 x 4 patches of 14 = 4 image tokens after the 2 x 2 merge

    def load(self) -> Image.Image:
        return Image.new("RGB", (self.size, self.size), self.rgb)


class ColourTask:
    name = "colour"

    def __init__(self, n_train: int = 32, n_test: int = 16, seed: int = 0):
        rng = random.Random(seed)

        def item(i: int) -> Example:
            colour = list(COLOURS)[i % len(COLOURS)]
            rgb = tuple(min(255, max(0, v + rng.randint(-25, 25))) for v in COLOURS[colour])
            return Example(self.name, QUESTION, colour, images=(SolidImage(rgb),))

        self._train = [item(i) for i in range(n_train)]
        self._test = [item(i) for i in range(n_test)]

    def train(self) -> list[Example]:
        return self._train

    def test(self) -> list[Example]:
        return self._test

    def grade(self, answer: str | None, example: Example) -> float:
        return float((answer or "").strip().lower() == example.answer)


class EchoTask:
    """A text-only task, to mix into the evaluation of the vision-language model."""

    name = "echo"

    def test(self) -> list[Example]:
        return [Example(self.name, f"Say {c}", c) for c in COLOURS]

    def grade(self, answer, example) -> float:
        return float((answer or "").strip() == example.answer)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a busy small machine a tiny model runs up to 50x faster so."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base_vlm(tmp_path_factory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("vlm") / "base", texts=[f"{QUESTION} {' '.join(COLOURS)}"] * 4)


@pytest.fixture(scope="module")
def task() -> ColourTask:
    return ColourTask()


def stage_context(work_dir: Path, tasks: dict, base: Path, start: Path, logs: list, index: int = 1) -> StageContext:
    return StageContext(stage=index, task_name="colour", tasks=tasks, style=STYLE, base_path=str(base),
                        start_path=str(start), work_dir=work_dir, save_dir=work_dir / "model", seed=0,
                        use_cpu=True, bf16=False,
                        on_log=lambda step, total, row: logs.append(row))


class ForwardSpy:
    """Records what reaches the model's forward and how often the vision tower runs."""

    def __init__(self, model):
        self.calls: list[dict] = []
        self.vision_rows: list[int] = []  # image patches per vision tower call
        self.handles = [
            model.register_forward_pre_hook(self._record, with_kwargs=True),
            model.model.visual.register_forward_hook(self._vision),
        ]

    def _record(self, module, args, kwargs):
        self.calls.append({k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)})

    def _vision(self, module, args, output):
        self.vision_rows.append(args[0].shape[0])

    @property
    def vision_calls(self) -> int:
        return len(self.vision_rows)

    def remove(self):
        for h in self.handles:
            h.remove()


# --- loading -----------------------------------------------------------------------------------


def test_a_vision_language_checkpoint_loads_as_image_text_model_with_its_processor(base_vlm):
    from transformers import Qwen2_5_VLForConditionalGeneration

    model, proc = load_checkpoint(base_vlm)
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration)  # via AutoModelForImageTextToText
    assert is_processor(proc) and proc.image_processor is not None
    # image token ids come from the processor and agree with the model and the tokenizer
    assert proc.image_token_id == model.config.image_token_id == proc.tokenizer.convert_tokens_to_ids(proc.image_token)
    assert text_tokenizer(proc).pad_token == "<|endoftext|>"
    batch = encode_prompts(proc, ["red", "red green blue red green"])  # text-only: through the tokenizer
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1  # padded on the left
    assert type(proc.tokenizer).__name__ == "Qwen2Tokenizer"


def test_autoprocessor_gives_a_processor_not_a_tokenizer(base_vlm, tmp_path):
    from transformers import AutoProcessor, PreTrainedTokenizerBase, ProcessorMixin

    proc = load_processor(base_vlm)  # AutoProcessor first, the registered image-only class without torchvision
    assert isinstance(proc, ProcessorMixin) and not isinstance(proc, PreTrainedTokenizerBase)
    # saved checkpoints name the stock class, so they load with it wherever torchvision is installed
    assert json.loads((base_vlm / "processor_config.json").read_text())["processor_class"] == "Qwen2_5_VLProcessor"
    assert json.loads((base_vlm / "tokenizer_config.json").read_text())["processor_class"] == "Qwen2_5_VLProcessor"
    variants = register_image_only_processors()
    if variants:  # no torchvision here: a folder naming the image-only class loads through AutoProcessor
        copy = shutil.copytree(base_vlm, tmp_path / "named")
        _set_processor_class(copy, variants["qwen2_5_vl"].__name__)
        loaded = AutoProcessor.from_pretrained(copy)
        assert isinstance(loaded, variants["qwen2_5_vl"]) and loaded.image_token_id == proc.image_token_id


def _set_processor_class(folder: Path, name: str) -> None:
    for file in ("processor_config.json", "tokenizer_config.json"):
        data = json.loads((folder / file).read_text())
        data["processor_class"] = name
        (folder / file).write_text(json.dumps(data))


def test_a_bare_tokenizer_from_autoprocessor_is_refused(base_vlm, tmp_path):
    from transformers import AutoProcessor, PreTrainedTokenizerBase

    copy = shutil.copytree(base_vlm, tmp_path / "unknown")
    _set_processor_class(copy, "NoSuchProcessor")  # e.g. a custom class nobody registered in this process
    assert isinstance(AutoProcessor.from_pretrained(copy), PreTrainedTokenizerBase)  # transformers' silent fallback
    with pytest.raises(ModelLoadError, match="not a processor"):
        load_checkpoint(copy)
    with pytest.raises(ModelLoadError, match="not a processor"):
        check_processor(text_tokenizer(load_processor(base_vlm)), "some/model")


def test_a_text_only_checkpoint_keeps_causal_lm_tokenizer_and_prompt(tmp_path):
    from transformers import PreTrainedTokenizerBase, Qwen2Config, Qwen2ForCausalLM

    tok = train_qwen2_tokenizer(["Say red green blue"], 300)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model, loaded = load_checkpoint(tmp_path)
    assert isinstance(model, Qwen2ForCausalLM) and isinstance(loaded, PreTrainedTokenizerBase)
    batch = encode_prompts(loaded, ["Say", "Say red green blue"])
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1  # padded on the left
    # text-only prompts are exactly the chat template on the plain user turn, as before
    expected = loaded.apply_chat_template([{"role": "user", "content": "Say red"}], tokenize=False,
                                          add_generation_prompt=True)
    assert format_prompt(loaded, "Say red") == expected
    with pytest.raises(ModelLoadError, match="no chat template"):
        format_prompt(type("NoTemplate", (), {"chat_template": None})(), "Say red", num_images=1)


# --- prompts -----------------------------------------------------------------------------------


def test_image_placeholders_render_as_trl_renders_them(base_vlm):
    from trl.data_utils import apply_chat_template, prepare_multimodal_messages

    proc = load_processor(base_vlm)
    two = format_prompt(proc, QUESTION, num_images=2)
    block = "<|vision_start|><|image_pad|><|vision_end|>"
    assert f"<|im_start|>user\n{block}{block}{QUESTION}<|im_end|>\n<|im_start|>assistant\n" in two
    # GRPO renders its conversational prompts itself: the same string
    images = [SolidImage((1, 2, 3)).load()] * 2
    rendered = apply_chat_template({"prompt": prepare_multimodal_messages([user_message(QUESTION)], images)}, proc)
    assert rendered["prompt"] == two
    # without images the VLM's prompt is the plain chat-templated user turn
    assert format_prompt(proc, QUESTION) == proc.tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True)


# --- one SFT stage, evaluation, one RFT stage, RIF ------------------------------------------------


@pytest.fixture(scope="module")
def sft_stage(base_vlm, task, tmp_path_factory):
    """One SFT stage through the real paradigm, with what reached the model recorded."""
    model, proc = load_checkpoint(base_vlm)
    tasks = {"colour": task}
    before = accuracy(evaluate_tasks(model, proc, tasks, {"colour": task.train()}, STYLE, 32, 4)["colour"])
    spy = ForwardSpy(model)
    logs: list[dict] = []
    work = tmp_path_factory.mktemp("sft")
    cfg = OmegaConf.structured(SFTParadigm(learning_rate=3e-3, epochs=8, per_device_batch_size=8, logging_steps=1,
                                           max_length=256))
    result = SFT(cfg).train_stage(model, proc, task.train(), stage_context(work / "trainer", tasks, base_vlm,
                                                                          base_vlm, logs))
    spy.remove()
    saved = work / "model"  # as the stage loop saves a stage
    result.model.save_pretrained(saved)
    proc.save_pretrained(saved)
    return dict(model=result.model, proc=proc, result=result, logs=logs, spy=spy, before=before, path=saved)


def test_sft_stage_trains_on_images_with_loss_on_the_answer(sft_stage, task):
    result, logs, spy, proc = sft_stage["result"], sft_stage["logs"], sft_stage["spy"], sft_stage["proc"]
    assert result.optimizer_steps == 8 * len(task.train()) // 8
    losses = [row["loss"] for row in logs if "loss" in row]
    assert losses[-1] < 0.5 * losses[0], losses
    # every training batch carried pixel values, and the vision tower ran on them
    train_calls = [c for c in spy.calls if "labels" in c]
    assert len(train_calls) == result.optimizer_steps and spy.vision_calls >= result.optimizer_steps
    first = train_calls[0]
    assert first["pixel_values"].shape[0] == 8 * 16  # 8 images x 16 patches each
    assert first["image_grid_thw"].tolist() == [[1, 4, 4]] * 8
    image_tokens = (first["input_ids"] == proc.image_token_id).sum(dim=1)
    assert image_tokens.tolist() == [4] * 8  # each placeholder expanded into the image's 4 tokens
    # the loss is on the answer only: the labelled tokens of a row are the answer and <|im_end|>
    tok = text_tokenizer(proc)
    for labels in first["labels"]:
        text = tok.decode(labels[labels != -100])
        assert text.removesuffix("<|im_end|>") in COLOURS and text.endswith("<|im_end|>"), text


def test_sft_raises_accuracy_and_the_answer_depends_on_the_image(sft_stage, task):
    model, proc = sft_stage["model"], sft_stage["proc"]
    tasks = {"colour": task, "echo": EchoTask()}
    spy = ForwardSpy(model)
    records = evaluate_tasks(model, proc, tasks, {"colour": task.train(), "echo": EchoTask().test()}, STYLE,
                             batch_size=16, max_new_tokens=4)
    spy.remove()
    after = accuracy(records["colour"])
    assert sft_stage["before"] <= 0.25 and after >= 0.9, (sft_stage["before"], after)
    # the same question for every item, so only the image can tell the colours apart
    assert {r.response.strip() for r in records["colour"]} == set(COLOURS)
    # the vision tower encodes each batch of image items once (16 items x 16 patches); generate()
    # hands its output to the forward passes
    assert spy.vision_rows == [16 * 16] * math.ceil(len(task.train()) / 16)
    assert records["colour"][0].prompt == format_prompt(proc, QUESTION, 1)
    # text-only items of the same pass take the tokenizer path: no image placeholder
    assert len(records["echo"]) == 4 and all("<|image_pad|>" not in r.prompt for r in records["echo"])
    # shown the next colour's square, the model names that colour, not the item's answer
    shifted = [Example("colour", QUESTION, ex.answer, images=(SolidImage(COLOURS[_next(ex.answer)]),))
               for ex in task.test()]
    moved = evaluate_tasks(model, proc, {"colour": task}, {"colour": shifted}, STYLE, 16, 4)["colour"]
    assert accuracy(moved) == 0.0 and all(r.response.strip() == _next(r.answer) for r in moved)


def _next(colour: str) -> str:
    names = list(COLOURS)
    return names[(names.index(colour) + 1) % len(names)]


def test_param_drift_of_a_vision_language_model(sft_stage, base_vlm):
    # transformers renames Qwen2.5-VL's weights on load; the drift must still find every one
    drift = param_drift(sft_stage["model"], base_vlm)
    assert math.isfinite(drift) and drift > 0
    assert param_drift(sft_stage["model"], sft_stage["path"]) == pytest.approx(0.0, abs=1e-6)


def test_rft_stage_with_images_from_a_briefly_sft_trained_model(sft_stage, task, tmp_path):
    start = sft_stage["path"]
    model, proc = load_checkpoint(start)  # the processor reloads from a stage checkpoint
    spy = ForwardSpy(model)
    logs: list[dict] = []
    cfg = OmegaConf.structured(RFTParadigm(learning_rate=1e-3, num_generations=4, per_device_batch_size=16,
                                           max_completion_length=4, max_steps=4, kl_coef=0.01))
    ctx = stage_context(tmp_path / "trainer", {"colour": task}, start, start, logs, index=2)
    result = RFT(cfg).train_stage(model, proc, task.train(), ctx)
    spy.remove()
    assert result.optimizer_steps == 4 and result.generated_tokens > 0
    rewards = [row["reward"] for row in logs if "reward" in row]
    assert len(rewards) == 4 and max(rewards) > 0  # the SFT start makes the 0/1 reward informative
    assert all("kl" in row for row in logs if "reward" in row)  # with a reference model (the base)
    # rollouts and the policy's forward passes both saw the images
    assert spy.vision_calls >= 4 and any("pixel_values" in c and "image_grid_thw" in c for c in spy.calls)
    assert math.isfinite(result.metrics["train_loss"])


def test_output_drift_in_both_directions_with_images(sft_stage, base_vlm, task, tmp_path):
    """The forward KL's draw from the base, images and all, is scored by the trained model; the
    base scores the cached draw exactly as it did when drawing it."""
    from cpt_bench.config import EvalConfig
    from cpt_bench.run.drift_step import output_drift

    base, proc = load_checkpoint(base_vlm)
    settings = EvalConfig(kl_samples=8, max_new_tokens=4)
    spy = ForwardSpy(sft_stage["model"])
    forward = output_drift(sft_stage["model"], base, proc, STYLE, task.test(), settings, "forward_kl", tmp_path)
    spy.remove()
    assert spy.vision_calls == 1  # the stage's model scored one batch, with its images
    assert forward.kl > 0 and forward.se > 0 and math.isfinite(forward.per_token)
    itself = output_drift(base, base, proc, STYLE, task.test(), settings, "forward_kl", tmp_path)
    assert itself.kl == 0.0 and len(list(tmp_path.glob("*.json"))) == 1  # the same draw, read back
    reverse = output_drift(sft_stage["model"], base, proc, STYLE, task.test(), settings)
    assert math.isfinite(reverse.kl) and reverse.kl != forward.kl


def test_rif_rollouts_with_images(sft_stage, task):
    model, proc = sft_stage["model"], sft_stage["proc"]
    spy = ForwardSpy(model)
    rollouts = Rollouts(num_rollouts=4, temperature=1.0, max_new_tokens=4, prompts_per_batch=64 // 4)
    sampled, tokens = sample_rollouts(model, proc, task.train(), rollouts, tasks={"colour": task}, style=STYLE)
    scores = [s.scores for s in sampled]
    assert all(len(s.completions) == 4 for s in sampled)
    spy.remove()
    assert len(scores) == len(task.train()) and all(len(s) == 4 for s in scores)
    assert tokens > 0 and spy.vision_calls == math.ceil(len(task.train()) / (64 // 4))
    # a model that reads the squares solves most of them within 4 samples
    kept = [keep_item(s, "solvable") for s in scores]
    assert sum(kept) / len(kept) >= 0.5, scores
