"""The rollout step of a stage: K graded samples per item with the stage's starting model,
for RIF's filter or for a paradigm that declares a rollout step (`Paradigm.rollouts`), in one
process or on each rank; and the record of a paradigm's rollouts (`rollouts.jsonl`, which a
launched training step reads back, and `stage.json`'s `rollouts`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cpt_bench.model.loading import run_precision
from cpt_bench.model.prompts import PromptStyle
from cpt_bench.outputs.records import RolloutStats
from cpt_bench.outputs.rundir import read_jsonl, write_jsonl
from cpt_bench.paradigms.base import TrainRow
from cpt_bench.paradigms.rollouts import Rollouts, Sampled, sample_rollouts
from cpt_bench.tasks import Benchmark
from cpt_bench.tasks.base import Example

log = logging.getLogger("cpt_bench")

ROLLOUTS_JSONL = "rollouts.jsonl"  # a paradigm's rollout step, in the stage folder


def sample(cfg, model, processing_class, items: list[Example], rollouts: Rollouts, *, benchmark: Benchmark,
           style: PromptStyle, engine=None) -> tuple[list[Sampled], int]:
    """K graded rollouts per item (RIF's or a paradigm's), in the run's precision, up to their
    own completion length or else `eval.max_new_tokens`: one `Sampled` per item and the tokens
    generated. The same call in one process and on each rank."""
    with run_precision(cfg).inference():
        return sample_rollouts(model, processing_class, items, rollouts.length(cfg.eval.max_new_tokens),
                               tasks=benchmark.tasks, style=style, engine=engine)


@dataclass
class Sampling:
    """A paradigm's rollout step: one `Sampled` per item it was handed, and what it cost."""

    sampled: list[Sampled]
    tokens: int
    seconds: float


def off_reference(rows: list[TrainRow], style: PromptStyle) -> float | None:
    """The share of the rows trained on sampled text whose text differs from SFT's target for
    the same item, whitespace aside; None when no row trains on sampled text."""
    own = [row for row in rows if row.completion is not None]
    if not own:
        return None
    differs = sum(" ".join(row.completion.split()) != " ".join(style.target(row.example).split()) for row in own)
    return differs / len(own)


def record_rollouts(spec, rollouts: Rollouts, items: list[Example], sampling: Sampling,
                    rows: list[TrainRow], style: PromptStyle) -> RolloutStats:
    """A paradigm's rollout step, however it was rolled out: rollouts.jsonl (every item, its
    completions and grades; what a launched training step reads back) and the stats of what
    the samples left to train on (`rows`, the paradigm's; how many differ from SFT's targets);
    logged in one line. `rollouts` with the completion length they ran at (`Rollouts.length`)."""
    write_jsonl(spec.dir / ROLLOUTS_JSONL, [{"prompt": ex.prompt, "answer": ex.answer, "completions": s.completions,
                                            "scores": s.scores} for ex, s in zip(items, sampling.sampled)])
    kept = len({id(row.example) for row in rows})
    stats = RolloutStats(purpose=rollouts.purpose, num_rollouts=rollouts.num_rollouts,
                         temperature=rollouts.temperature, max_new_tokens=rollouts.max_new_tokens,
                         items=len(items), kept=kept,
                         kept_fraction=kept / len(items) if items else 0.0, rows=len(rows),
                         mean_success=sum(s.success_rate for s in sampling.sampled) / len(items) if items else 0.0,
                         rollout_seconds=round(sampling.seconds, 3), rollout_tokens=sampling.tokens,
                         off_reference=off_reference(rows, style))
    own = "" if stats.off_reference is None else f", {100 * stats.off_reference:.0f} % of them not the reference text"
    log.info("stage %d: %s rollouts (K=%d): mean success %.2f, %d/%d items train (%d dropped), %d rows%s, %.1f s",
             spec.stage, rollouts.purpose, rollouts.num_rollouts, stats.mean_success, kept, len(items),
             len(items) - kept, len(rows), own, sampling.seconds)
    return stats


def read_rollouts(path: Path) -> list[Sampled]:
    """rollouts.jsonl back as one `Sampled` per item, in item order."""
    return [Sampled(row["completions"], row["scores"]) for row in read_jsonl(path)]
