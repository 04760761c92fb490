"""Answer extraction, 0/1 grading and rewards.

With chain-of-thought the model reasons inside `<think> </think>` and puts its final answer
in `\\boxed{}`; only the boxed content is graded. Without it the whole response is graded.
The RFT reward is `w_acc * accuracy + w_fmt * format` with CoT (the paper: 0.9 / 0.1) and
accuracy alone without; evaluation reports the accuracy part only.

Every function here takes raw model output, so each one is linear or capped in its input and
returns 0/1 (or None) on any string: no regex that backtracks quadratically, and the symbolic
comparison runs in a time-limited worker process (`cpt_bench.tasks.safe_math`), never on model text
in this process. tests/test_grading_hostile.py feeds them hostile strings.
"""

from __future__ import annotations

import re

# The definition of a well-formatted response; `format_ok` tests the same thing with str.find,
# since this regex backtracks quadratically on many "<think>"s without a box.
FORMAT_RE = re.compile(r"<think>.*</think>.*\\boxed\{.*\}", re.DOTALL)


def normalize(text: str) -> str:
    """Lower-case and collapse runs of whitespace; the toy tasks' answers are case-free."""
    return " ".join(text.lower().split())


def grade_exact(given: str, answer: str) -> float:
    """1.0 when the given (extracted) answer, normalised, equals the reference, else 0.0."""
    return float(normalize(given) == normalize(answer))


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
    """1.0 when the response follows `<think>...</think> ... \\boxed{...}` (FORMAT_RE matches).

    The earliest "<think>", then the earliest "</think>" after it, then the earliest box after
    that leave the most room for what must follow, so they decide the match in linear time.
    """
    i = response.find("<think>")
    j = response.find("</think>", i + len("<think>")) if i >= 0 else -1
    k = response.find("\\boxed{", j + len("</think>")) if j >= 0 else -1
    return float(k >= 0 and response.find("}", k + len("\\boxed{")) >= 0)


def cot_target(rationale: str, answer: str) -> str:
    """The supervised completion in CoT mode (also what the base model is pre-trained on)."""
    return f"<think> {rationale} </think> \\boxed{{{answer}}}"


# --- answers of the multimodal benchmark (mllm_cl7) and its general suite ------------------
# The paper grades with mathruler's `grade_answer` (MATH-style normalisation, then sympy
# equality), which already takes "12 cm" for 12, "3.0" for 3, "1/2" for \frac{1}{2} and any
# letter case. Short VQA answers also come as "Dog.", "the dog", "two" or "60°", and option
# letters as "B." or "(B) text", which it rejects: the functions below undo only those surface
# forms and leave every comparison to the library.

ARTICLES = {"a", "an", "the"}
# the VQA evaluation's number words (its `manualMap`)
NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"])}
_EDGE_PUNCT = ".,;:!?\"'`"
_OPTION_LINE = re.compile(r"^([A-Z])\.\s+(.+)$")


def _grade_answer(given: str, truth: str) -> bool:
    # mathruler's grade_answer with capped input and its sympy step in a time-limited worker
    from cpt_bench.tasks.safe_math import grade_answer  # mathruler's sympy costs 0.2 s to import

    return grade_answer(given, truth)


def normalize_phrase(text: str) -> str:
    """A short answer without case, edge punctuation, articles, degree signs or number words."""
    text = text.replace("°", " ").strip().strip(_EDGE_PUNCT).lower()
    words = [NUMBER_WORDS.get(w, w) for w in text.split() if w not in ARTICLES]
    return " ".join(words)


def grade_short_answer(response: str, answer: str) -> float:
    """1.0 when a short (VQA, math, yes/no) response matches the reference answer.

    Yes/no references count the response's first word, as POPE is scored ("Yes, there is ...").
    """
    if _grade_answer(response, answer):
        return 1.0
    given, truth = normalize_phrase(response), normalize_phrase(answer)
    if truth in ("yes", "no"):
        return float(given.split(" ", 1)[0].strip(_EDGE_PUNCT) == truth)
    return float(bool(given) and _grade_answer(given, truth))


def parse_choices(question: str) -> dict[str, str]:
    """The lettered options (`A. text` lines) of a multiple-choice question, in order."""
    options: dict[str, str] = {}
    for line in question.splitlines():
        m = _OPTION_LINE.match(line.strip())
        if m and ord(m.group(1)) - ord("A") == len(options):  # A, B, C, ... consecutively
            options[m.group(1)] = m.group(2).strip()
    return options


_LETTER_ONLY = re.compile(r"^\(?([A-Za-z])\)?[.:)]?$")  # "B", "b", "(B)", "B.", "B)"
_LETTER_LEAD = re.compile(r"^(?:\(([A-Za-z])\)|([A-Z])[.:)])\s")  # "(B) text", "B. text"
# "The answer is (B)", "Answer: B"; the letter itself must be a capital ("the answer is a dog")
# (`\s*(?::\s*)?`, not `\s*:?\s*`, whose two runs split a long run of spaces in n^2 ways)
_LETTER_SAID = re.compile(r"(?i:answer(?:\s+is)?)\s*(?::\s*)?\(?([A-Z])\)?(?![A-Za-z])")
_TEXT_MACRO = re.compile(r"\\text\{([^}]*)\}")


def choice_letter(response: str, choices: dict[str, str] | None = None) -> str | None:
    """The option a response picks: its letter in any usual form, or the option's text."""
    # `\text{...}` unwrapped only up to the last "}": past it every "\text{" would scan to the end
    end = response.rfind("}") + 1
    text = (_TEXT_MACRO.sub(r"\1", response[:end]) + response[end:]).strip()
    for pattern in (_LETTER_ONLY, _LETTER_LEAD):
        m = pattern.match(text)
        if m:
            return next(g for g in m.groups() if g).upper()
    said = _LETTER_SAID.findall(text)
    if said:
        return said[-1].upper()
    if choices:
        given = normalize_phrase(text)
        hits = [k for k, v in choices.items() if normalize_phrase(v) == given]
        if len(hits) == 1:
            return hits[0]
    return None


def grade_choice(response: str, answer: str, choices: dict[str, str] | None = None) -> float:
    """1.0 when a multiple-choice response picks the reference option (`answer` is its letter)."""
    letter = choice_letter(response, choices)
    return float(letter is not None and _grade_answer(letter, answer))


# --- graders of declared tasks (benchmark=custom) -------------------------------------------

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")  # 1,234,567 -> 1234567
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")  # 42, -0.5, 3/4: no nested repeats, linear
MAX_ANSWER_CHARS = 1000  # as safe_math's: of a longer answer only the tail is read
MAX_REGEX_SECONDS = 1.0  # a user's pattern may backtrack on model text: its match is time-limited


def last_number(text: str):
    """The last number written in `text` as an exact Fraction ("1,234", "-0.5", "3/4"), or None."""
    from fractions import Fraction

    found = _NUMBER.findall(_THOUSANDS.sub("", text[-MAX_ANSWER_CHARS:]))
    try:
        return Fraction(found[-1]) if found else None
    except (ValueError, ZeroDivisionError):  # "1/0"
        return None


def grade_numeric(given: str, answer: str) -> float:
    """1.0 when the last number of the answer equals the reference's last number (to 1e-6 relative)."""
    import math

    g, t = last_number(given), last_number(answer)
    return float(g is not None and t is not None and math.isclose(g, t, rel_tol=1e-6, abs_tol=1e-9))


def grade_regex(given: str, pattern: str) -> float:
    """1.0 when the whole answer (whitespace collapsed) matches the reference read as a regular
    expression, ignoring case; a match that runs past MAX_REGEX_SECONDS scores 0."""
    import regex

    try:
        return float(regex.fullmatch(pattern, " ".join(given.split()), regex.IGNORECASE,
                                     timeout=MAX_REGEX_SECONDS) is not None)
    except TimeoutError:
        return 0.0

