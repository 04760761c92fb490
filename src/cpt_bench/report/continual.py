"""The classic continual-learning methods beside the paradigms (`make study-cl`, docs/study.md):
each method compared with its paradigm alone, and GRPO alone with SFT plus each method, at
matched gain, in forgetting and in general change, with the intervals of the matched-gain
section (stats.py). A run's *arm* comes from its config: its paradigm (SFT or GRPO) and its
method (`cl.name`; `replay` when `replay.fraction` > 0; `olora` for `peft=olora`; combined as
`ewc+replay`). Pure functions of `RunRecord`s.
"""

from __future__ import annotations

from collections.abc import Sequence

from cpt_bench.report.decide import HALF_WIDTH, comparison_line
from cpt_bench.report.explain import Difference, difference
from cpt_bench.report.runs import RunRecord, base_model
from cpt_bench.report.stats import RunPoint

PARADIGMS = {"sft": "SFT", "rft": "GRPO"}
METHOD_NAMES = {"none": "alone", "replay": "replay", "ewc": "EWC", "l2": "L2", "lwf": "LwF", "merge": "merging",
                "olora": "O-LoRA"}
METRICS = (("forgetting", "forgetting", True), ("general_delta", "general change", False))


def arm(run: RunRecord) -> tuple[str, str] | None:
    """(paradigm, method) of a sequential SFT or GRPO run with no other control (RIF, weighting)."""
    paradigm = PARADIGMS.get(run.paradigm)
    if paradigm is None or run.joint or str(run.setting("filter.name") or "none") != "none" \
            or str(run.setting("paradigm.weighting") or "none") != "none":
        return None
    method = str(run.setting("cl.name") or "none")
    if str(run.setting("peft.name") or "none") == "olora":
        method = "olora" if method == "none" else f"{method}+olora"
    if float(run.setting("replay.fraction") or 0.0) > 0:
        method = "replay" if method == "none" else f"{method}+replay"
    return paradigm, method


def arm_points(runs: Sequence[RunRecord], key: str) -> dict[str, list[RunPoint]]:
    """Each arm's runs as (gain, `key`) points, by "<paradigm> <method>"."""
    out: dict[str, list[RunPoint]] = {}
    for run in runs:
        found, gain, y = arm(run), run.metrics.get("gain"), run.metrics.get(key)
        if found and gain is not None and y is not None:
            out.setdefault(" ".join(found), []).append(RunPoint(run.variant, base_model(run.config), gain, y))
    return out


def methods_run(runs: Sequence[RunRecord]) -> list[str]:
    """The methods other than `none` among the runs, in METHOD_NAMES' order, then any others."""
    found = {a[1] for run in runs if (a := arm(run))} - {"none"}
    return [m for m in METHOD_NAMES if m in found] + sorted(found - set(METHOD_NAMES))


def _cell(d: Difference | None, have: bool) -> str:
    if not have:
        return "not run"
    if d is None:
        return "not estimable"
    ci = f" [{100 * d.ci.low:+.1f}, {100 * d.ci.high:+.1f}]" if d.ci else " (the runs agree)"
    mark = "**" if d.ci is not None and (d.ci.low > 0 or d.ci.high < 0) else ""
    return f"{mark}{100 * d.diff:+.1f}{ci}{mark}"


def _open(d: Difference | None, have: bool) -> bool:
    return have and (d is None or d.ci is None or d.ci.covers(0.0))


def cl_section(runs: Sequence[RunRecord], half_width: float = HALF_WIDTH) -> str:
    """The report's "Classic continual-learning methods" section; "" without a method's runs."""
    methods = methods_run(runs)
    if not methods:
        return ""
    parts = ["## Classic continual-learning methods", "",
             "Each method against its paradigm alone, and GRPO alone against SFT with the method, at matched "
             "gain: the difference (points, first minus second) averaged over the gains both reach, with its 95 % "
             "interval, as in the matched-gain section. Forgetting: negative = the first forgets less. General "
             "change: positive = the first keeps more general ability. Bold: the interval excludes 0. *Not "
             "estimable*: the two reach no common gain that the resamples agree on."]
    for key, what, minimize in METRICS:
        points = arm_points(runs, key)
        rows, open_lines = [], []
        for method in ["none", *methods]:
            name = METHOD_NAMES.get(method, method)
            sft, grpo = f"SFT {method}", f"GRPO {method}"
            pairs = [] if method == "none" else [(sft, "SFT none"), (grpo, "GRPO none")]
            cells = []
            for first, second in [*pairs, ("GRPO none", sft)]:
                d, have = difference(points, first, second, minimize), first in points and second in points
                cells.append(_cell(d, have))
                if _open(d, have):
                    line = comparison_line(points[first], points[second], first, second, minimize, half_width)
                    open_lines.append(f"- {first} − {second}: {line}")
            rows.append(f"| {name} | {' | '.join(cells[:-1] or ['-', '-'])} | {cells[-1]} |")
        parts += ["", f"### {what}", "",
                  "| method | SFT + method − SFT | GRPO + method − GRPO | GRPO alone − SFT + method |",
                  "|---|---|---|---|", *rows,
                  *(["", f"What would decide the open comparisons (±{100 * half_width:.1f} points planned):", "",
                     *open_lines] if open_lines else [])]
    return "\n".join(parts)
