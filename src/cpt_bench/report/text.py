"""The report's words and numbers: points, intervals, tables and verdicts, as text (pure)."""

from __future__ import annotations

from pathlib import Path

from cpt_bench.report.stats import Interval


def pts(value: float, signed: bool = True, digits: int = 1) -> str:
    return f"{100 * value:+.{digits}f}" if signed else f"{100 * value:.{digits}f}"


CLIPPED = "†"  # after an interval cut to what its quantity can be (`Interval.within`)
CLIPPED_NOTE = f"{CLIPPED}: an interval cut to what is possible (a share or an accuracy lies in [0, 100] %)."


def fmt_ci(ci: Interval | None, signed: bool = True) -> str:
    """[low, high], with the number of base models when they, not runs, are its unit; with more
    decimals where one would print a narrow interval as [x, x], which reads as certainty."""
    if ci is None:
        return ""
    digits = 1
    while digits < 4 and pts(ci.low, signed, digits) == pts(ci.high, signed, digits):
        digits += 1
    unit = f" n = {ci.n} {ci.unit}" if ci.unit != "runs" else ""
    return f"[{pts(ci.low, signed, digits)}, {pts(ci.high, signed, digits)}]{CLIPPED if ci.clipped else ''}{unit}"


def pct(mean: float | None, std: float | None, signed: bool, ci: Interval | None = None) -> str:
    if mean is None:
        return "n/a"
    shown = f"{pts(mean, signed)} ± {'-' if std is None else f'{100 * std:.1f}'}"
    return f"{shown} {fmt_ci(ci, signed)}" if ci is not None else shown


def count(value: float | None) -> str:
    if value is None:
        return "n/a"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def cell(text) -> str:
    return str(text).replace("|", "\\|")


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def relative(path: Path, base: Path | None) -> str:
    if base is not None:
        try:
            return path.relative_to(base.resolve()).as_posix() or "."
        except ValueError:
            pass
    return str(path)


def verdict(ci: Interval | None, pa: str, pb: str, minimize: bool | None) -> str:
    """What an interval of (a − b) says; minimize: forgetting (True), general change (False), gain (None)."""
    if ci is None:
        return "no interval"
    if ci.covers(0.0):
        return "not distinguishable"
    if minimize is None:
        return f"{pa if ci.low > 0 else pb} gains more"
    worse_a = ci.low > 0 if minimize else ci.high < 0  # a forgets more / keeps less general ability
    return f"{pa if worse_a else pb} {'forgets more' if minimize else 'loses more general ability'}"


def not_estimable(reached: float) -> str:
    return f"not estimable ({100 * reached:.0f} % of resamples reach a common gain)"
