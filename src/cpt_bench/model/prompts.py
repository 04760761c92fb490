"""How a task item becomes model input and a supervised target, with or without CoT.

One `PromptStyle` is shared by pre-training, SFT, RFT, instance filtering and evaluation,
and `format_prompt` renders it the same way for all of them (through the model's chat
template where it has one), so every paradigm trains on exactly the text it is tested on.
"""

from __future__ import annotations

from dataclasses import dataclass

from cpt_bench.errors import ModelLoadError
from cpt_bench.model.processing import is_processor, text_tokenizer
from cpt_bench.tasks.base import Example
from cpt_bench.tasks.grading import cot_target, extract_answer


@dataclass(frozen=True)
class PromptStyle:
    cot: bool
    cot_instruction: str  # appended to the question with CoT
    direct_instruction: str = ""  # appended without CoT
    separator: str = " "  # between the question and the instruction

    def user_text(self, ex: Example) -> str:
        if self.cot:
            instruction = self.cot_instruction
        else:
            instruction = self.direct_instruction if ex.direct_instruction is None else ex.direct_instruction
        return f"{ex.prompt}{self.separator}{instruction}" if instruction else ex.prompt

    def target(self, ex: Example) -> str:
        answer = ex.answer if ex.target is None else ex.target
        return cot_target(ex.rationale, answer) if self.cot else answer

    def prompt(self, processing_class, ex: Example) -> str:
        """The exact string the model is conditioned on for `ex` (`format_prompt`)."""
        return format_prompt(processing_class, self.user_text(ex), len(ex.images), ex.system)

    def messages(self, ex: Example) -> list[dict]:
        """`ex` as a conversation for TRL, which adds the images' placeholders to the user turn
        itself (`prepare_multimodal_messages`): its system line, then the user's text."""
        return [*system_messages(ex.system), user_message(self.user_text(ex))]

    def extract(self, response: str) -> str | None:
        return extract_answer(response, self.cot)

    @classmethod
    def for_benchmark(cls, benchmark, cot: bool) -> PromptStyle:
        """The style of a benchmark's instructions, with or without CoT."""
        return cls(cot, benchmark.cot_instruction, benchmark.direct_instruction, benchmark.separator)


def user_message(text: str, num_images: int = 0) -> dict:
    """The user turn: plain text, or the images' placeholders followed by the text.

    Images go before the text, one `{"type": "image"}` block each, which is where TRL's
    `prepare_multimodal_messages` puts them; so the prompt evaluation renders and the one
    GRPO renders from a conversational prompt are the same string.
    """
    if not num_images:
        return {"role": "user", "content": text}
    images = [{"type": "image"} for _ in range(num_images)]
    return {"role": "user", "content": [*images, {"type": "text", "text": text}]}


def system_messages(system: str | None) -> list[dict]:
    return [{"role": "system", "content": system}] if system else []


def format_prompt(processing_class, text: str, num_images: int = 0, system: str | None = None) -> str:
    """The exact string a model is conditioned on, shared by every paradigm and evaluation.

    Models with a chat template get the user turn plus the generation prompt; an item with
    images gets one placeholder per image in the user turn, in the form the chat template
    expects (the processor expands each into the image's tokens); a system line goes first. The
    built-in model has no chat template and sees the raw task prompt, after the system line if any.
    """
    if getattr(processing_class, "chat_template", None):
        return processing_class.apply_chat_template(
            [*system_messages(system), user_message(text, num_images)], tokenize=False, add_generation_prompt=True
        )
    if num_images:
        raise ModelLoadError(
            f"{type(processing_class).__name__} has no chat template, so there is no place for an item's images in the "
            "prompt; use a vision-language model with a chat template (e.g. model=qwen2_5_vl_7b)"
        )
    return f"{system}\n{text}" if system else text


def completion_text(processing_class, answer: str) -> str:
    """The target continuation for SFT: the answer, ended by the EOS token."""
    eos = text_tokenizer(processing_class).eos_token
    if getattr(processing_class, "chat_template", None):
        return answer + eos
    return " " + answer + eos


def encode_prompts(processing_class, prompts: list[str], images: list[list] | None = None, device=None):
    """A left-padded batch for `generate`: through the processor when there are images.

    `images[i]` holds prompt i's PIL images (one per placeholder in it). Left padding: with
    right padding, batched generation of a causal LM silently goes wrong.
    """
    if images is not None and any(images):
        if not is_processor(processing_class):
            raise ModelLoadError(
                f"items with images need a vision-language processor, not a {type(processing_class).__name__}")
        encode, extra = processing_class, {"images": [imgs for imgs in images if imgs]}
    else:
        encode, extra = text_tokenizer(processing_class), {}
    enc = encode(text=prompts, padding=True, padding_side="left", return_tensors="pt", add_special_tokens=False,
                 **extra)
    return enc.to(device) if device is not None else enc
