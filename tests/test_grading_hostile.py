"""Every grader and extractor on random and hostile model output: a 0/1 score (or an extraction)
within a bounded time, never an exception, and no symbolic parsing in this process.

On hostile input the sympy time limit is lowered to 0.3 s (its verdict is not asserted, only that
it is 0 or 1), so a comparison that hangs costs at most that plus a fresh worker; each call is
timed against CALL_LIMIT_S (hypothesis' own deadline is off: the bound is asserted per call, not
per example). Ordinary answers keep 1 s, so that a loaded machine still reaches their verdicts.
"""

from __future__ import annotations

import logging
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpt_bench.tasks import safe_math
from cpt_bench.tasks.base import Example
from cpt_bench.tasks.grading import (
    FORMAT_RE,
    choice_letter,
    extract_answer,
    format_ok,
    grade_choice,
    grade_exact,
    grade_short_answer,
    last_boxed,
    normalize_phrase,
)
from cpt_bench.tasks.mllm import SPECS, MultimodalTask
from cpt_bench.tasks.toy import toy_tasks

CALL_LIMIT_S = 5.0  # one grader call: the sympy limit + a worker restart, with room for a loaded machine
SETTINGS = settings(max_examples=100, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

MB = 1 << 20
HOSTILE = [
    # huge numbers and exponent towers, plain and in LaTeX
    "9" * 100_000, "-" + "9" * 5000 + ".5", "1e999999", "10**10**10", "9**9**9**9", "2^{2^{2^{2^{99}}}}",
    "2^2^2^2^2^2", "((9^9)^9)^9", "99999999!", "(9!)!", "9999!!", "0.5.n(99999999)", "(1/3).n(999999999)",
    "0x9.n(999999999)", "'a'*999999999", "[0]*999999999", "(1,)*999999999", "eye(99999)",
    # code, in case anything evaluates it
    "__import__('os').system('exit 3')", "eval('1')", "exec('x=1')", "lambda: 0", "ⅼaⅿbⅾa", "ｅｖａｌ(1)",
    # nesting, unbalanced braces, LaTeX bombs
    "\\frac{" * 5000, "\\frac{" * 100 + "}{1}" * 100, "\\boxed{" * 10_000, "{" * 50_000, "}" * 50_000,
    "{}" * 20_000 + "{", "\\sqrt{" * 3000 + "2", "\\left(" * 3000, "\\begin{array}" * 2000, "\\text{" * 100_000,
    "(" * 100_000, ")" * 1000 + "(" * 1000, "\\frac{1}{2}" * 3000, "\\\\" * 10_000, "$" * 1000, "^{" * 500,
    # regex traps, 1 MB responses, control characters and odd unicode
    "<think>" * 100_000, "<think></think>" * 50_000, "answer" + " " * 100_000, ("answer:" + " " * 1000) * 100,
    "a" * MB, "1,000" * (MB // 5), "x" * 999 + "^9", "\x00" * 1000, "".join(map(chr, range(32))) * 100,
    "\u202e\u0000\ufeff\U0001f600" * 1000, "\ud800", "x\t.n(99)", "sqrt(2)" * 20, "B" * MB,
]
CHOICES = {"A": "plastic", "B": "brick", "C": "9" * 50}
TRUTHS = ["7", "1/2", "\\frac{\\sqrt{3}}{2}", "x^2+1", "dog", "yes", "(1, 2)"]
TOY = toy_tasks(train_size=1, test_size=1)
MLLM = MultimodalTask(SPECS["scienceqa"], {}, {})


def wrapped(h: str) -> str:
    return f"<think> {h[:100]} </think> \\boxed{{{h}}}"


responses = st.one_of(
    st.text(max_size=300),  # random unicode, control characters included
    st.sampled_from(HOSTILE),
    st.sampled_from(HOSTILE).map(wrapped),  # hostile inside a box: what CoT grading sees
    st.tuples(st.text(max_size=30), st.sampled_from(HOSTILE), st.text(max_size=30)).map("".join),
)


@pytest.fixture(autouse=True)
def short_sympy_limit(monkeypatch):
    monkeypatch.setattr(safe_math, "SYMPY_TIMEOUT_S", 1.0)
    safe_math._verdict.cache_clear()  # each test sees the worker, not an earlier test's verdicts


@pytest.fixture
def hostile_sympy_limit(monkeypatch):
    """Hostile input only: a hang is cut at 0.3 s, since its verdict is never asserted."""
    monkeypatch.setattr(safe_math, "SYMPY_TIMEOUT_S", 0.3)


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    assert time.perf_counter() - start < CALL_LIMIT_S, f"{fn.__name__} took too long on {args[0][:60]!r}"
    return out


def check_all(response: str) -> None:
    """Every grader and extractor of the package on one response."""
    for cot in (True, False):
        got = timed(extract_answer, response, cot)
        assert got is None or isinstance(got, str)
    assert timed(last_boxed, response) is None or response.rfind("\\boxed{") >= 0
    assert timed(format_ok, response) in (0.0, 1.0)
    assert timed(grade_exact, response, "7") in (0.0, 1.0)
    assert isinstance(timed(normalize_phrase, response), str)
    assert timed(choice_letter, response, CHOICES) in (None, *"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert timed(grade_choice, response, "B", CHOICES) in (0.0, 1.0)
    for truth in TRUTHS:
        assert timed(grade_short_answer, response, truth) in (0.0, 1.0)
    for task, ex in ((TOY["add"], Example("add", "add 3 4 =", "7")),
                     (MLLM, Example("scienceqa", "q", "B", meta={"choices": CHOICES})),
                     (MLLM, Example("scienceqa", "q", "1/2"))):
        assert timed(task.grade, extract_answer(response, True), ex) in (0.0, 1.0)
        assert timed(task.grade, response, ex) in (0.0, 1.0)


# the strings that pass the screen and hang sympy (a timeout and a fresh worker each): over a second
SLOW_HOSTILE = {"99999999!", "(9!)!"}


@pytest.mark.usefixtures("hostile_sympy_limit")
@pytest.mark.parametrize("response", [pytest.param(h, marks=pytest.mark.slow) if h in SLOW_HOSTILE else h
                                      for h in HOSTILE], ids=lambda s: repr(s[:24]))
def test_every_grader_on_each_hostile_string(response):
    check_all(response)
    check_all(wrapped(response))


@pytest.mark.slow  # over a second of CPU: the fast tier stays the one-minute loop
@pytest.mark.usefixtures("hostile_sympy_limit")
@SETTINGS
@given(responses)
def test_every_grader_on_random_and_hostile_text(response):
    check_all(response)


def test_no_symbolic_parsing_in_this_process(monkeypatch):
    """parse_expr evaluates its input as Python: it may run only in the worker."""
    import sympy
    from sympy.parsing import sympy_parser

    def refuse(*a, **k):
        raise AssertionError("sympy ran in the grading process")

    for mod, name in ((sympy_parser, "parse_expr"), (sympy, "simplify"), (sympy, "sympify")):
        monkeypatch.setattr(mod, name, refuse)
    assert grade_short_answer("2\\sqrt{2}", "\\sqrt{8}") == 1.0  # a sympy-only match, made in the worker
    assert grade_short_answer("x^2+1", "1+x^2") == 1.0
    assert grade_short_answer("10**10**10", "1/2") == 0.0


@pytest.mark.parametrize("expr", ["10**10**10", "x**12", "(1/3).n(99)", "1.5.n(9)", "0x9.real", "1..real", "'a'*9",
                                  "[0]*9", "(1,)*9", "a_b", "x=1", "x\t+1", "9" * 201, "abc", "1e99999"])
def test_screen_keeps_hostile_expressions_from_sympy(expr):
    code = f"(1/2)-({expr})"
    assert not (safe_math.sympy_screen(expr) and safe_math.safe_tokens(code))


@pytest.mark.parametrize("expr", ["sqrt(3)/2", "x^2+1", "2.5", "1.x", "3!", "2sqrt(2)", "α+1", "pi/2"])
def test_screen_passes_real_answers(expr):
    assert safe_math.sympy_screen(expr) and safe_math.safe_tokens(f"(1)-({expr})")


@pytest.mark.slow  # over a second of CPU: the fast tier stays the one-minute loop
def test_timeout_scores_zero_warns_once_and_the_worker_recovers(caplog):
    before = safe_math.WORKER.timeouts
    with caplog.at_level(logging.DEBUG, logger="cpt_bench.tasks.safe_math"):
        assert not safe_math.sympy_equal("1/3", "99999999!", timeout=0.3)  # passes the screen, then hangs
        assert not safe_math.sympy_equal("1/3", "(99999999)!", timeout=0.3)
    assert safe_math.WORKER.timeouts == before + 2
    warnings = [r for r in caplog.records if r.name == "cpt_bench.tasks.safe_math" and r.levelno == logging.WARNING]
    assert len(warnings) == (1 if before == 0 else 0)  # the first timeout of the process only
    assert safe_math.sympy_equal("2*sqrt(2)", "sqrt(8)")  # a fresh worker answers


def test_time_limit_off_the_main_thread():
    """Evaluation may grade in joblib threads, where signal.alarm cannot work."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [("1/3", "99999999!", False), ("2*sqrt(2)", "sqrt(8)", True), ("x+1", "1+x", True), ("x", "x+1", False)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda j: safe_math.sympy_equal(j[0], j[1], timeout=0.5), jobs))
    assert got == [ok for _, _, ok in jobs]


def test_a_dead_worker_scores_zero_and_is_replaced():
    assert safe_math.sympy_equal("x+1", "1+x")  # the worker is up
    proc = safe_math.WORKER._proc
    assert proc is not None
    proc.kill()
    proc.wait()
    assert not safe_math.sympy_equal("x+2", "2+x")  # it died under this comparison
    assert safe_math.sympy_equal("x+3", "3+x")


# --- identical results on ordinary input -------------------------------------------------------

TYPICAL = [("\\frac{1}{2}", "1/2"), ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}"), ("2\\sqrt{2}", "\\sqrt{8}"),
           ("12 cm", "12"), ("3.0", "3"), ("x^2+1", "1+x^2"), ("\\pi/2", "\\frac{\\pi}{2}"), ("(1,2)", "(1, 2)"),
           ("0.25", "\\frac{1}{4}"), ("2x+3", "3+2x"), ("\\sqrt{2}/2", "1/\\sqrt{2}"), ("45^\\circ", "45"),
           ("1.5", "\\frac{3}{2}"), ("a+b", "b+a"), ("2\\pi", "6.28"), ("x^2", "x^3"), ("[1,2)", "(1,2)"),
           ("\\alpha+1", "1+\\alpha"), ("10\\%", "10"), ("\\$5", "5"), ("4 \\frac{4}{11}", "48/11"),
           ("Dog", "dog"), ("two", "2"), ("1,000", "1000"), ("x = 3", "3"), ("\\text{B}", "B"), ("5!", "120")]


@pytest.mark.parametrize("given_,truth", TYPICAL)
def test_same_verdict_as_mathruler(given_, truth):
    from mathruler.grader import grade_answer

    assert safe_math.grade_answer(given_, truth) == grade_answer(given_, truth)


_TOKENS = ["<think>", "</think>", "\\boxed{", "}", "{", "x", " ", "\n", "<think", "boxed{"]


@SETTINGS
@given(st.lists(st.sampled_from(_TOKENS), max_size=12).map("".join))
def test_format_ok_is_the_format_regex(text):
    assert format_ok(text) == float(bool(FORMAT_RE.search(text)))


_OLD_SAID = re.compile(r"(?i:answer(?:\s+is)?)\s*:?\s*\(?([A-Z])\)?(?![A-Za-z])")
_WORDS = ["answer", "Answer", " is", " ", "  ", ":", "(", ")", "B", "a", "\\text{", "}", ".", "A", "brick", "\n"]


@SETTINGS
@given(st.lists(st.sampled_from(_WORDS), max_size=10).map("".join))
def test_choice_letter_regexes_match_the_old_ones(text):
    from cpt_bench.tasks.grading import _LETTER_SAID, _TEXT_MACRO

    end = text.rfind("}") + 1
    assert _TEXT_MACRO.sub(r"\1", text[:end]) + text[end:] == re.sub(r"\\text\{([^}]*)\}", r"\1", text)
    assert _LETTER_SAID.findall(text) == _OLD_SAID.findall(text)
