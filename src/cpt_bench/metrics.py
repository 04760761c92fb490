"""Continual-learning metrics computed from an accuracy matrix.

Pure functions, standard library only, no I/O.

Accuracy matrix
---------------
``R`` is a list of rows; every value is an accuracy as a fraction in [0, 1].

* Row ``t`` is the evaluation after stage ``t``. Row 0 is the base model,
  before any training.
* Column ``j`` (0-based) is the j-th task of the training order; it is trained
  in stage ``j + 1``. Hence ``R[j+1][j]`` is the accuracy on task ``j`` right
  after training it and ``R[j][j]`` the accuracy just *before* training it.
* ``R`` has ``S + 1`` rows and ``T`` columns with ``1 <= S <= T``. ``S`` is the
  number of completed stages (a run that stopped early has ``S < T``).

Every metric is computed "as of" the last row ``R[S]`` over the ``S`` tasks
trained so far (columns ``0 .. S-1``); columns ``S .. T-1`` are ignored.
``mean`` below is the arithmetic mean over the stated index set.

Formulas and sign conventions
-----------------------------
final_avg_acc
    ``mean_{j < S} R[S][j]``. Higher is better.
avg_acc_per_stage
    List of length ``S``; element ``t-1`` (``t = 1..S``) is
    ``mean_{j < t} R[t][j]``, the average over tasks seen so far after stage
    ``t``. Its last element equals ``final_avg_acc``.
plasticity
    ``mean_{j < S} R[j+1][j]``: accuracy right after learning each task.
gain
    ``mean_{j < S} (R[j+1][j] - R[j][j])``: what each stage learned on its own
    task. Positive = the stage improved its task.
bwt (backward transfer, Lopez-Paz & Ranzato 2017, GEM)
    ``mean_{j < S-1} (R[S][j] - R[j+1][j])``. Negative = forgetting (the
    paper's convention); positive = later stages helped earlier tasks.
    ``None`` if ``S < 2``. The last trained task (``j = S-1``) is excluded
    because its term would be identically 0.
forgetting (forgetting measure, Chaudhry et al. 2018, RWalk)
    ``mean_{j < S-1} f_j`` with
    ``f_j = max_{t in [j+1, S-1]} R[t][j] - R[S][j]``. Positive = accuracy
    lost since the task's best post-training evaluation; it is negative only
    if the final row beats every earlier post-training row. Rows before the
    task was trained (``t <= j``) are not part of the max. ``None`` if
    ``S < 2``. Since the max includes ``t = j+1``, ``f_j >= -(R[S][j] -
    R[j+1][j])``, i.e. ``forgetting >= -bwt``; they differ when a task keeps
    rising after its own stage and then drops.
per_task_forgetting
    List of length ``S-1``: ``[f_0, ..., f_{S-2}]`` (same sign as
    ``forgetting``); empty when ``S == 1``.
fwt (forward transfer against the base model)
    ``mean_{1 <= j < S} (R[j][j] - R[0][j])``: accuracy on task ``j`` just
    before training it, relative to the base model. This is GEM's FWT with
    the base model as the reference accuracy. Positive = earlier stages
    helped not-yet-trained tasks. ``j = 0`` is excluded (its term is
    identically 0). ``None`` if ``S < 2``.
general_delta
    ``general`` maps each held-out (never trained) task ``g`` to its
    accuracies ``[after stage 0, ..., after stage S]`` (length ``S + 1``).
    ``general_delta_per_task[g] = general[g][S] - general[g][0]`` and
    ``general_delta = mean_g general_delta_per_task[g]``. Positive = general
    ability improved over the base; negative = regression. ``general_delta``
    is ``None`` (and the per-task dict empty) when there are no general tasks.

Validation
----------
Every public function validates its input and raises ``ValueError`` with a
one-line message on: an empty matrix, no completed stage (a single row),
ragged rows, ``S > T``, zero columns, non-numeric or boolean values, values
outside [0, 1] (including NaN), and general series of the wrong length or
with out-of-range values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Real

Matrix = Sequence[Sequence[float]]
General = Mapping[str, Sequence[float]] | None

SIGN_CONVENTIONS: dict[str, str] = {
    "final_avg_acc": "higher = better; mean final accuracy over trained tasks",
    "avg_acc_per_stage": "higher = better; mean accuracy over tasks seen so far, per stage",
    "plasticity": "higher = better; accuracy right after learning each task",
    "gain": "positive = each stage improved its own task",
    "bwt": "negative = forgetting (paper's convention); positive = later stages helped",
    "forgetting": "positive = accuracy lost since the task's best",
    "fwt": "positive = earlier stages helped tasks before they were trained",
    "general_delta": "negative = held-out general ability regressed vs. base",
    "general_delta_per_task": "negative = that held-out task regressed vs. base",
    "per_task_forgetting": "positive = that task lost accuracy since its best",
}

# The run-level metrics every summary shows, in this order (terminal, W&B, report).
HEADLINE_METRICS = ["final_avg_acc", "plasticity", "gain", "bwt", "forgetting", "fwt", "general_delta"]
SIGN_NOTE = ("Signs: forgetting positive = accuracy lost; BWT negative = forgetting; gain positive = learned; "
             "general change (held-out suite vs the base) negative = harm.")


def _check_value(x: object, where: str) -> float:
    # bool is a Real subclass, but a True/False in an accuracy matrix is a bug.
    if isinstance(x, bool) or not isinstance(x, Real):
        raise ValueError(f"{where} is not a number: {x!r}")
    v = float(x)
    if not 0.0 <= v <= 1.0:  # also rejects NaN
        raise ValueError(f"{where} = {v!r} is outside [0, 1] (accuracies must be fractions)")
    return v


def _validate(R: Matrix) -> list[list[float]]:
    """Return ``R`` as a list of float lists, or raise ValueError."""
    if len(R) == 0:
        raise ValueError("accuracy matrix R is empty (expected S+1 rows, row 0 = base model)")
    if len(R) < 2:
        raise ValueError("accuracy matrix R has only the base row; no stage has been completed")
    T = len(R[0])
    if T == 0:
        raise ValueError("accuracy matrix R has no task columns")
    for t, row in enumerate(R):
        if len(row) != T:
            raise ValueError(f"ragged accuracy matrix: row {t} has {len(row)} columns, row 0 has {T}")
    S = len(R) - 1
    if S > T:
        raise ValueError(f"accuracy matrix R has {S} stages but only {T} tasks (need S <= T)")
    return [[_check_value(x, f"R[{t}][{j}]") for j, x in enumerate(row)] for t, row in enumerate(R)]


def _mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs)


def final_avg_acc(R: Matrix) -> float:
    """``mean_{j<S} R[S][j]``."""
    M = _validate(R)
    S = len(M) - 1
    return _mean(M[S][:S])


def avg_acc_per_stage(R: Matrix) -> list[float]:
    """``[mean_{j<t} R[t][j] for t in 1..S]``."""
    M = _validate(R)
    S = len(M) - 1
    return [_mean(M[t][:t]) for t in range(1, S + 1)]


def plasticity(R: Matrix) -> float:
    """``mean_{j<S} R[j+1][j]``."""
    M = _validate(R)
    S = len(M) - 1
    return _mean([M[j + 1][j] for j in range(S)])


def gain(R: Matrix) -> float:
    """``mean_{j<S} (R[j+1][j] - R[j][j])``."""
    M = _validate(R)
    S = len(M) - 1
    return _mean([M[j + 1][j] - M[j][j] for j in range(S)])


def bwt(R: Matrix) -> float | None:
    """``mean_{j<S-1} (R[S][j] - R[j+1][j])``; negative = forgetting; None if S < 2."""
    M = _validate(R)
    S = len(M) - 1
    if S < 2:
        return None
    return _mean([M[S][j] - M[j + 1][j] for j in range(S - 1)])


def per_task_forgetting(R: Matrix) -> list[float]:
    """``[max_{t in [j+1, S-1]} R[t][j] - R[S][j] for j < S-1]``; empty if S == 1."""
    M = _validate(R)
    S = len(M) - 1
    return [max(M[t][j] for t in range(j + 1, S)) - M[S][j] for j in range(S - 1)]


def forgetting(R: Matrix) -> float | None:
    """Mean of :func:`per_task_forgetting`; positive = accuracy lost; None if S < 2."""
    f = per_task_forgetting(R)
    return _mean(f) if f else None


def fwt(R: Matrix) -> float | None:
    """``mean_{1<=j<S} (R[j][j] - R[0][j])``; None if S < 2."""
    M = _validate(R)
    S = len(M) - 1
    if S < 2:
        return None
    return _mean([M[j][j] - M[0][j] for j in range(1, S)])


def general_delta_per_task(R: Matrix, general: General) -> dict[str, float]:
    """``{g: general[g][S] - general[g][0]}``; empty if ``general`` is None/empty."""
    S = len(_validate(R)) - 1
    out: dict[str, float] = {}
    for g, series in (general or {}).items():
        if len(series) != S + 1:
            raise ValueError(
                f"general[{g!r}] has {len(series)} values, expected S+1 = {S + 1} (stage 0..{S})"
            )
        vals = [_check_value(x, f"general[{g!r}][{t}]") for t, x in enumerate(series)]
        out[str(g)] = vals[S] - vals[0]
    return out


def general_delta(R: Matrix, general: General) -> float | None:
    """Mean of :func:`general_delta_per_task`; None if there are no general tasks."""
    d = general_delta_per_task(R, general)
    return _mean(list(d.values())) if d else None


def compute_metrics(R: Matrix, general: General = None) -> dict:
    """All metrics as a JSON-serialisable dict (see module docstring for formulas)."""
    M = _validate(R)
    per_task = general_delta_per_task(M, general)
    return {
        "final_avg_acc": final_avg_acc(M),
        "avg_acc_per_stage": avg_acc_per_stage(M),
        "plasticity": plasticity(M),
        "gain": gain(M),
        "bwt": bwt(M),
        "forgetting": forgetting(M),
        "fwt": fwt(M),
        "general_delta": _mean(list(per_task.values())) if per_task else None,
        "general_delta_per_task": per_task,
        "per_task_forgetting": per_task_forgetting(M),
        "stages_completed": len(M) - 1,
        "num_tasks": len(M[0]),
    }


def compute_joint_metrics(base: Sequence[float], final: Sequence[float], general: General = None) -> dict:
    """Metrics of the joint (multi-task) baseline: one stage trains every task at once.

    `base` and `final` are the accuracies of the T tasks before and after that stage. There
    is no sequence, so nothing can be forgotten between stages: bwt, forgetting and fwt are
    None. final_avg_acc = plasticity = mean(final); gain = mean(final - base);
    general_delta as for sequential runs.
    """
    M = _validate([list(base), list(final)])
    per_task = general_delta_per_task(M, general)
    avg = _mean(M[1])
    return {
        "final_avg_acc": avg,
        "avg_acc_per_stage": [avg],
        "plasticity": avg,
        "gain": _mean([f - b for b, f in zip(M[0], M[1])]),
        "bwt": None,
        "forgetting": None,
        "fwt": None,
        "general_delta": _mean(list(per_task.values())) if per_task else None,
        "general_delta_per_task": per_task,
        "per_task_forgetting": [],
        "stages_completed": 1,
        "num_tasks": len(M[0]),
    }
