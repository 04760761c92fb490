"""How a task item becomes model input and a supervised target, with or without CoT.

One `PromptStyle` is shared by pre-training, SFT, RFT, instance filtering and evaluation,
so every paradigm trains on exactly the text it is tested on.
"""

from __future__ import annotations

from dataclasses import dataclass

from cpt_bench.grading import cot_target, extract_answer
from cpt_bench.tasks.base import Example


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
        return cot_target(ex.rationale, ex.answer) if self.cot else ex.answer

    def extract(self, response: str) -> str | None:
        return extract_answer(response, self.cot)
