"""Answer extraction, 0/1 grading and rewards.

With chain-of-thought the model reasons inside `<think> </think>` and puts its final answer
in `\\boxed{}`; only the boxed content is graded. Without it the whole response is graded.
The RFT reward is `w_acc * accuracy + w_fmt * format` with CoT (the paper: 0.9 / 0.1) and
accuracy alone without; evaluation reports the accuracy part only.
"""

from __future__ import annotations

import re

FORMAT_RE = re.compile(r"<think>.*</think>.*\\boxed\{.*\}", re.DOTALL)


def normalize(text: str) -> str:
    """Lower-case and collapse runs of whitespace; the toy tasks' answers are case-free."""
    return " ".join(text.lower().split())


def grade_exact(response: str, answer: str) -> float:
    """1.0 when the response, normalised, equals the answer, normalised, else 0.0."""
    return float(normalize(response) == normalize(answer))


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}`, braces balanced; None when there is none."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def extract_answer(response: str, cot: bool) -> str | None:
    """What gets graded: the boxed answer with CoT (None if missing), else the whole response."""
    return last_boxed(response) if cot else response.strip()


def format_ok(response: str) -> float:
    """1.0 when the response follows `<think>...</think> ... \\boxed{...}`."""
    return float(bool(FORMAT_RE.search(response)))


def cot_target(rationale: str, answer: str) -> str:
    """The supervised completion in CoT mode (also what the base model is pre-trained on)."""
    return f"<think> {rationale} </think> \\boxed{{{answer}}}"
