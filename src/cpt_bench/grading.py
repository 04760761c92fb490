"""Answer extraction and 0/1 grading.

The toy benchmark's answers are short symbol strings, so its grader is exact match after
whitespace and case normalisation. Graders take the raw model response and return a float
in [0, 1] so rewards and accuracies share one code path.
"""

from __future__ import annotations


def normalize(text: str) -> str:
    """Lower-case and collapse runs of whitespace; the toy tasks' answers are case-free."""
    return " ".join(text.lower().split())


def grade_exact(response: str, answer: str) -> float:
    """1.0 when the response, normalised, equals the answer, normalised, else 0.0."""
    return float(normalize(response) == normalize(answer))
