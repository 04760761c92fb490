"""What was run, where a report opens: model, benchmark and tasks, sizes, what the runs vary,
seeds, machine and versions, read from the runs' own records (pure)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from cpt_bench.report.runs import RunRecord, flatten_config, natural_key, varying_keys

VERSIONS = ("cpt-bench", "torch", "transformers", "trl", "deepspeed")  # the ones a reader asks for first
SIZES = ("train_size", "test_size", "max_train", "max_test")


def _values(values: Iterable, with_counts: bool = False) -> str:
    """"a, b" or, when they differ across runs, "a (3 runs), b (2 runs)"; in natural order."""
    counts = Counter(str(v) for v in values)
    ordered = sorted(counts, key=_number_first)
    if with_counts and len(counts) > 1:
        return ", ".join(f"{v} ({counts[v]} run{'s' if counts[v] > 1 else ''})" for v in ordered)
    return ", ".join(ordered)


def _number_first(value: str) -> tuple:
    """Numbers by value (2.5e-05 before 0.0001), then the rest in natural order."""
    try:
        return (0, float(value), [])
    except ValueError:
        return (1, 0.0, natural_key(value))


def _model(run: RunRecord) -> str:
    builtin, path, name = (run.setting(k) for k in ("model.builtin", "model.path", "model.name"))
    if builtin:
        seed = run.setting("model.recipe.seed")
        return f"{name} (built in{'' if seed is None or builtin != 'tiny' else f', recipe seed {seed}'})"
    return f"{name} ({path})" if path else str(name)


def _sizes(run: RunRecord) -> str:
    sizes = [(k, run.setting(f"benchmark.{k}")) for k in SIZES]
    return ", ".join(f"{k} {'all' if v is None and k.startswith('max') else v}"
                     for k, v in sizes if v is not None or k.startswith("max") and run.setting("benchmark.name")
                     in ("mllm_cl7", "custom"))


def _machine(run: RunRecord) -> str:
    hw = run.hardware or {}
    if not hw:
        return "not recorded"
    gpus = hw.get("gpus") or hw.get("gpu")
    device = f", {gpus}" if gpus else (", no GPU" if hw.get("cuda") is False else "")
    return f"{hw.get('cpu', '?')}, {hw.get('cpu_count', '?')} cores{device}"


def setup_section(runs: Sequence[RunRecord]) -> str:
    """The setup the runs share, and what they vary (a value that differs across runs is listed
    with its count of runs)."""
    if not runs:
        return ""
    varying = varying_keys([r.config for r in runs])
    flats = [flatten_config(r.config) for r in runs]
    seeds = Counter(r.seed for r in runs)
    lines = [
        f"- **Model**: {_values((_model(r) for r in runs), True)}",
        f"- **Benchmark**: {_values((r.setting('benchmark.name') for r in runs), True)}; "
        f"tasks in the order trained: {_values((' → '.join(r.order) for r in runs), True)}; "
        f"general suite: {_values((', '.join(r.general) or 'none' for r in runs), True)}",
        f"- **Items per task**: {_values((_sizes(r) for r in runs), True)}",
        f"- **Chain-of-thought**: {_values(('on' if r.setting('cot') else 'off' for r in runs), True)}; "
        f"**schedule**: {_values((r.schedule for r in runs), True)}",
        "- **What the runs vary** (seed aside): " + ("; ".join(
            f"`{k}` {_values(f.get(k, 'unset') for f in flats)}" for k in varying) or "nothing"),
        f"- **Seeds**: {_values(seeds)} ({len(runs)} runs)",
        f"- **Machine**: {_values((_machine(r) for r in runs), True)}",
        "- **Versions**: " + "; ".join(f"{name} {_values(v, True)}" for name in VERSIONS
                                       if (v := [r.versions[name] for r in runs if name in (r.versions or {})])),
    ]
    return "\n".join(["## Setup", "", *lines])
