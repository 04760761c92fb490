"""mathruler's `grade_answer` with bounded time, and model text never evaluated in this process.

mathruler first normalises both strings (regexes, pylatexenc) and compares them; only when both
are non-integer expressions does it ask sympy whether their difference simplifies to 0. That step
is the hazard: `sympy.parsing.sympy_parser.parse_expr` *evaluates* the string as Python after
its token transforms. Unknown names become `Symbol('...')`, but the rest is Python:
"10**10**10" builds a 10^10-digit integer, "99999999!" a factorial, "(1/3).n(999999999)" a
billion digits (each hangs or exhausts memory), and `simplify` has no time limit. mathruler's own guard (at most two
distinct letters besides "sqrt" and "frac" in both sides together; no "^{", "^(" or multi-digit
"^" exponents) already keeps every name that does I/O out of reach (what is left: sqrt, frac,
pi, ln, re, im, ff, rf, id, all, ... and the keywords if/in/is/or/as), but not those.

So here mathruler's string stages run in-process (linear, and cheap once the answer is capped at
MAX_ANSWER_CHARS), and the sympy stage only for two sides that pass `sympy_screen` (short;
digits, letters, `+-*/^()!` and decimal points: no quotes, brackets, commas, `_`, `=`, and its
exponent limits also on `**`) and `safe_tokens` (no "." outside a number, no 5-digit exponent), and only in
a separate worker process with a memory cap that is killed after SYMPY_TIMEOUT_S. Anything
rejected, timed out or crashed scores False. The worker is a plain subprocess (not
multiprocessing), so it never re-imports the caller's `__main__`, and the time limit works from
any thread, unlike `signal.alarm`.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
import tokenize
from pathlib import Path

log = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 1000  # longer responses never match a short reference; mathruler is not run
MAX_SYMPY_CHARS = 200  # per side of the symbolic comparison; real answers are far shorter
SYMPY_TIMEOUT_S = 5.0  # one comparison; past it the worker is killed and the answer scores 0
WORKER_START_TIMEOUT_S = 120.0  # importing sympy in a fresh process (a loaded node is slow)
WORKER_MEMORY_BYTES = 2 << 30  # address-space cap of the worker: MemoryError rather than OOM

# after `_normalize` (lower-cased, no spaces or braces): the ASCII characters of a real answer
# that sympy can equate, plus non-ASCII letters (latex2text turns \alpha into α). Quotes,
# brackets, commas, `_`, `=`, `|`, `<>` etc. either fail to parse or build Python objects
# ("'a'*999999999" is a 1 GB string) and never make two answers equal.
_ASCII_OK = frozenset("0123456789abcdefghijklmnopqrstuvwxyz+-*/^()!.")


def sympy_screen(expr: str) -> bool:
    """Whether one normalised side may reach sympy: short, tame characters, and mathruler's
    exponent limits applied to `**` too (it checks only `^`, so "10**10**10" passed)."""
    from mathruler.grader import should_allow_eval

    if len(expr) > MAX_SYMPY_CHARS:
        return False
    if not all(c in _ASCII_OK or (c > "\x7f" and c.isalpha()) for c in expr):
        return False
    return should_allow_eval(expr.replace("**", "^"))


_HUGE_EXPONENT = re.compile(r"[eE][+-]?[0-9]{5,}")  # "1e999999": a Float that takes seconds


def safe_tokens(code: str) -> bool:
    """Whether Python's tokenizer, which parse_expr uses, finds no "." outside a number literal
    (attribute access: `x.n(10**9)`, `1.5.n(...)`, `0x1.real`) and no number with a 5-digit
    exponent; False when it cannot tokenize (unbalanced brackets: parse_expr fails too)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError):
        return False
    return not any((t.type == tokenize.OP and t.string in (".", "..."))
                   or (t.type == tokenize.NUMBER and _HUGE_EXPONENT.search(t.string)) for t in tokens)


class WorkerError(RuntimeError):
    """The sympy worker could not be started: an environment problem, not a wrong answer."""


# --- the worker: one persistent process, restarted after a timeout or crash ------------------


class _Worker:
    """A subprocess running mathruler's sympy comparison, one request at a time.

    Requests are one JSON line `[truth, given]`; replies one line, "1" or "0". A lock serialises
    callers (evaluation threads). A forked child (a data-loader worker) drops the inherited one
    and starts its own if it ever grades.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self.timeouts = 0  # comparisons cut off by the time limit, in this process
        self.crashes = 0  # worker deaths (segfault, memory cap) mid-comparison

    def _after_fork(self) -> None:
        self._lock, self._proc = threading.Lock(), None  # the parent's pipes are the parent's

    @staticmethod
    def _start() -> subprocess.Popen[bytes]:
        src = str(Path(__file__).resolve().parents[2])  # so that `-m cpt_bench.tasks.safe_math` imports
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
        # -P: the current directory (a run directory) stays off sys.path, so nothing there shadows a module
        try:
            proc = subprocess.Popen([sys.executable, "-P", "-m", "cpt_bench.tasks.safe_math"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        except OSError as e:
            raise WorkerError(f"cannot start the sympy grading worker: {e}") from e
        if _Worker._read(proc, WORKER_START_TIMEOUT_S) != b"ready":
            _Worker._kill(proc)
            raise WorkerError(f"the sympy grading worker ({sys.executable} -m cpt_bench.tasks.safe_math) did not start")
        return proc

    @staticmethod
    def _read(proc: subprocess.Popen[bytes], timeout: float) -> bytes | None:
        """One reply line: b"" if the worker died, None on timeout."""
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            return None
        return os.read(proc.stdout.fileno(), 64).strip()  # replies are a few bytes, written at once

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        proc.kill()
        proc.wait()
        for f in (proc.stdin, proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):  # a request still buffered for a dead worker
                    f.close()

    def equal(self, truth: str, given: str, timeout: float) -> bool:
        with self._lock:
            if self._proc is None:
                self._proc = self._start()
            proc = self._proc
            assert proc.stdin is not None
            start = time.perf_counter()
            try:
                proc.stdin.write(json.dumps([truth, given]).encode() + b"\n")
                proc.stdin.flush()
                reply = self._read(proc, timeout)
            except OSError:  # a broken pipe: the worker had died
                reply = b""
            except BaseException:  # KeyboardInterrupt: its late reply must not answer the next request
                self._kill(proc)
                self._proc = None
                raise
            if reply in (b"1", b"0"):
                return reply == b"1"
            self._kill(proc)
            self._proc = None
            if reply is None:
                self.timeouts += 1
                level = logging.WARNING if self.timeouts == 1 else logging.DEBUG
                log.log(level, "symbolic comparison of %r with %r stopped after %.1f s and scored 0 (timeout %d "
                        "in this process; only the first is logged at WARNING)", given[:80], truth[:80],
                        time.perf_counter() - start, self.timeouts)
            else:
                self.crashes += 1
                log.warning("the sympy grading worker died comparing %r with %r; scored 0", given[:80], truth[:80])
            return False

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._kill(self._proc)
            self._proc = None


WORKER = _Worker()
atexit.register(WORKER.close)
os.register_at_fork(after_in_child=WORKER._after_fork)


def sympy_equal(truth: str, given: str, timeout: float | None = None) -> bool:
    """mathruler's `are_equal_under_sympy` for two normalised sides, screened and time-limited."""
    if not (sympy_screen(truth) and sympy_screen(given)):
        return False
    from mathruler.grader import should_allow_eval

    code = f"({truth})-({given})"  # what mathruler hands to parse_expr
    if not should_allow_eval(code) or not safe_tokens(code):  # the first: mathruler's own check
        return False
    return _verdict(truth, given, SYMPY_TIMEOUT_S if timeout is None else timeout)


@functools.lru_cache(maxsize=8192)
def _verdict(truth: str, given: str, timeout: float) -> bool:
    # the same pair comes back often (RFT samples, a short answer graded raw and as a phrase);
    # a pair that timed out stays False without costing the time limit again
    return WORKER.equal(truth, given, timeout)


# --- mathruler's grade_answer, step for step, with the sympy step above ----------------------


def grade_answer(given: str | None, truth: str) -> bool:
    """mathruler.grader.grade_answer (0.1.0) with capped input and `sympy_equal`; never raises."""
    if given is None or len(given) > MAX_ANSWER_CHARS:
        return False
    from mathruler.grader import _is_frac, _normalize, _str_is_int, split_tuple
    from mathruler.math_normalize import normalize_answer

    try:
        if normalize_answer(truth) == normalize_answer(given):  # as lenient as the MATH grader
            return True
        t, g = _normalize(truth), _normalize(given)
        if t == g:
            return True
        if not g:
            return False
        t_elems, g_elems = split_tuple(t), split_tuple(g)
        if len(t_elems) > 1 and (t[0] != g[0] or t[-1] != g[-1]):  # (a, b) is not [a, b]
            return False
        if len(t_elems) != len(g_elems):
            return False
        for te, ge in zip(t_elems, g_elems):
            if _is_frac(te) and _is_frac(ge):
                ok = te == ge  # an unreduced fraction is not the reduced one
            elif _str_is_int(te) != _str_is_int(ge):
                ok = False  # an integer reference needs a literal match, no sympy
            else:
                ok = sympy_equal(te, ge)
            if not ok:
                return False
        return True
    except WorkerError:
        raise  # no worker at all: every symbolic answer would silently score 0
    except Exception as e:  # noqa: BLE001 - a grader scores; it never crashes an evaluation
        log.debug("grade_answer(%r, %r) raised %s; scored 0", given[:80], truth[:80], type(e).__name__)
        return False


def _serve() -> None:
    """The worker's loop: a comparison per line until stdin closes (the parent exited)."""
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = WORKER_MEMORY_BYTES if hard == resource.RLIM_INFINITY else min(WORKER_MEMORY_BYTES, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ImportError, ValueError, OSError):
        pass
    from mathruler.grader import are_equal_under_sympy

    out = os.fdopen(os.dup(1), "wb")  # the replies; anything else printed goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    out.write(b"ready\n")
    out.flush()
    for line in sys.stdin.buffer:
        truth, given = json.loads(line)
        out.write(b"1\n" if are_equal_under_sympy(truth, given) else b"0\n")
        out.flush()


if __name__ == "__main__":
    _serve()
