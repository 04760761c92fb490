"""RIF-RFT: rollout-based instance filtering before a stage.

K sampled rollouts per training item with the model as it stands at the start of the stage;
an item is kept when it can teach GRPO something:
  solvable          at least one of K correct (the authors' code)
  nonzero_variance  some right and some wrong (a group whose rewards all agree has zero
                    advantage, so contributes no GRPO signal)
The rollouts themselves are rollouts.py's, shared with paradigms that declare a rollout step.
"""

from __future__ import annotations

from cpt_bench.config import FilterConfig
from cpt_bench.paradigms.rollouts import Rollouts

# rule name (config.KeepRule) -> does an item with `correct` of `total` rollouts right stay?
KEEP_RULES = {
    "solvable": lambda correct, total: correct >= 1,
    "nonzero_variance": lambda correct, total: 0 < correct < total,
}


def keep_item(scores: list[float], rule: str) -> bool:
    """Decide one item from its K rollout accuracies (each 0 or 1)."""
    return KEEP_RULES[rule](sum(s >= 1.0 for s in scores), len(scores))


def rif_sampling(f: FilterConfig, completion_length: int | None) -> Rollouts:
    """How RIF samples (`filter.*`, whose batch_size counts completions), at the paradigm's
    completion length (None: the run's `eval.max_new_tokens`)."""
    return Rollouts.of(f.num_rollouts, f.temperature, completion_length, f.batch_size)
