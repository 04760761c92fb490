"""Where to probe next, and which learning rate reaches each target gain (pure).

A family's gain rises with its learning rate until training breaks down, and one probe (one
seed) measures it with about 1.5 points of noise: bisecting on single probes chases that noise.
So every decision here is read off one monotone fit through all probes so far: the isotonic
(non-decreasing) least-squares fit of gain against log learning rate, linearly interpolated
between the probed rates. A target's rate is the lowest rate at which the fit reaches it (where
gain falls again at high rates, the lowest rate that reaches the target is the one kept).

The search per family, one probe at a time:
  1. the two ends of the family's prior range;
  2. bracketing: while the fit stays below the highest target (by more than the tolerance), a
     rate `step` times the highest probed; while it stays above the lowest, `step` times lower;
     upward stops at the limit or when the highest rate gained no more than the best below it
     (gain has stopped rising: a higher target is out of reach);
  3. placing: the target whose fitted rate lies farthest from any probe is probed there, until
     every target's rate has a probe within a factor `near` of it or the budget is spent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def round_lr(lr: float) -> float:
    """Two significant digits: probe folders and sweep values are named by them, so a search
    resumed or extended lands on the same folders."""
    return float(f"{lr:.2g}")


@dataclass(frozen=True)
class Probe:
    lr: float
    gain: float  # the run's mean gain on its trained tasks (fraction)


@dataclass(frozen=True)
class Fit:
    """The isotonic fit of gain against log learning rate at the probed rates (ascending)."""

    lrs: tuple[float, ...]
    gains: tuple[float, ...]  # non-decreasing

    @property
    def low(self) -> float:
        return self.gains[0]

    @property
    def high(self) -> float:
        return self.gains[-1]

    def at(self, lr: float) -> float:
        """The fit at `lr`: linear in log lr between probed rates, its end value outside them."""
        return float(np.interp(math.log(lr), [math.log(x) for x in self.lrs], self.gains))

    def crossing(self, target: float) -> float:
        """The lowest rate at which the fit reaches `target`, clamped to the probed range: the
        lowest probed rate when every probe is above it, the rate of the highest value when none
        reaches it."""
        logs = [math.log(x) for x in self.lrs]
        if target <= self.gains[0]:
            return self.lrs[0]
        for (x0, g0), (x1, g1) in zip(zip(logs, self.gains), zip(logs[1:], self.gains[1:])):
            if g1 >= target:
                return math.exp(x1 if g1 == g0 else x0 + (x1 - x0) * (target - g0) / (g1 - g0))
        return self.lrs[self.gains.index(self.high)]


def monotone_fit(probes: Sequence[Probe]) -> Fit:
    """Probes at one rate averaged (weighted by their count), then the isotonic regression."""
    from scipy.optimize import isotonic_regression

    by_lr: dict[float, list[float]] = {}
    for p in probes:
        by_lr.setdefault(p.lr, []).append(p.gain)
    lrs = sorted(by_lr)
    means = np.array([np.mean(by_lr[x]) for x in lrs])
    weights = np.array([len(by_lr[x]) for x in lrs], dtype=float)
    fitted = isotonic_regression(means, weights=weights, increasing=True).x
    return Fit(tuple(lrs), tuple(float(g) for g in fitted))


BANDWIDTH = 0.9  # the kernel's width in natural log of the rate (a factor of 2.5): in simulated
# searches of two families with automatic targets (tests/test_calibrate.py) it put the true gain
# within 1.5 points of the target 90 % of the time, against 80 % for the isotonic fit's own
# interpolation, which rests on two probes (0.6: 88 %; 1.2: 90 %, but twice the bias where the
# curve bends, 0.9 points without noise)


def target_rate(probes: Sequence[Probe], target: float, bandwidth: float = BANDWIDTH) -> float:
    """The rate at which the family gains `target`: the isotonic fit's crossing, refined by a
    kernel-weighted straight line through the probes around it (gain is close to linear in log
    rate over a few factors, and the line pools the noise of every probe near the crossing); the
    isotonic crossing itself where that line is flat or falling, or the fit does not reach it.
    Clamped to the probed range."""
    fit = monotone_fit(probes)
    centre = math.log(fit.crossing(target))
    if not fit.low <= target <= fit.high:
        return math.exp(centre)
    x = np.array([math.log(p.lr) for p in probes]) - centre
    y = np.array([p.gain for p in probes])
    w = np.exp(-0.5 * (x / bandwidth) ** 2)
    design = np.stack([np.ones_like(x), x], axis=1)
    a, b = np.linalg.lstsq(design * np.sqrt(w)[:, None], y * np.sqrt(w), rcond=None)[0]
    if b <= 1e-6:
        return math.exp(centre)
    return math.exp(centre + float(np.clip((target - a) / b, x.min(), x.max())))


def falls(probes: Sequence[Probe], tolerance: float) -> list[tuple[Probe, Probe]]:
    """Pairs of probes where the higher rate gained less by more than twice the tolerance: gain
    is not monotone in the learning rate there (beyond what one-seed noise explains)."""
    ordered = sorted(probes, key=lambda p: p.lr)
    return [(p, q) for i, p in enumerate(ordered) for q in ordered[i + 1:]
            if q.lr > p.lr and p.gain - q.gain > 2 * tolerance]


@dataclass(frozen=True)
class Search:
    """One family's search settings (gains and the tolerance in fractions)."""

    prior: tuple[float, float]  # the first two probes: the rates thought to span the targets
    budget: int = 6  # probes in all
    tolerance: float = 0.015
    lr_limits: tuple[float, float] = (1e-7, 1e-2)
    step: float = 3.0  # the factor between bracketing probes
    near: float = 1.12  # a probe within this factor of a target's rate settles it (1.25 left a
    # third of the budget unspent for a point less of accuracy)

    def __post_init__(self):
        lo, hi = self.prior
        if not 0 < lo < hi:
            raise ValueError(f"prior {self.prior}: needs 0 < low < high")
        if self.budget < 2:
            raise ValueError(f"budget {self.budget}: needs at least the prior's two probes")


def _prior_left(probes: Sequence[Probe], s: Search) -> float | None:
    """The first end of the prior range not yet probed."""
    rates = {p.lr for p in probes}
    return next((round_lr(end) for end in s.prior if round_lr(end) not in rates), None)


def _stalled(probes: Sequence[Probe]) -> bool:
    """The highest rate probed gained no more than the best probe below it."""
    top = max(probes, key=lambda p: p.lr)
    below = [p.gain for p in probes if p.lr < top.lr]
    return bool(below) and top.gain <= max(below)


def bracket(probes: Sequence[Probe], low: float, high: float, s: Search) -> float | None:
    """The next rate that widens the fit's range toward [low, high] (gains), or None when it
    spans them within the tolerance, or can widen no further (a limit, stalled gain, the budget)."""
    if len(probes) >= s.budget:
        return None
    if (end := _prior_left(probes, s)) is not None:
        return end
    rates = {p.lr for p in probes}
    fit = monotone_fit(probes)
    up = round_lr(max(rates) * s.step)
    if fit.high < high - s.tolerance and up <= s.lr_limits[1] and not _stalled(probes):
        return up
    down = round_lr(min(rates) / s.step)
    if fit.low > low + s.tolerance and down >= s.lr_limits[0]:
        return down
    return None


def can_widen(probes: Sequence[Probe], s: Search, upward: bool) -> bool:
    """Whether a bracketing probe could still move the fit's range up (or down)."""
    if len(probes) >= s.budget:
        return False
    rates = [p.lr for p in probes]
    if upward:
        return round_lr(max(rates) * s.step) <= s.lr_limits[1] and not _stalled(probes)
    return round_lr(min(rates) / s.step) >= s.lr_limits[0]


def next_probe(probes: Sequence[Probe], targets: Sequence[float], s: Search) -> float | None:
    """The next rate to probe for these targets; None when the search is done."""
    widen = bracket(probes, min(targets), max(targets), s)
    if widen is not None or len(probes) >= s.budget:
        return widen
    fit = monotone_fit(probes)
    rates = sorted({p.lr for p in probes})
    open_targets = []
    for t in targets:
        if not fit.low - s.tolerance <= t <= fit.high + s.tolerance:
            continue  # out of reach: bracketing has said all it can
        lr = round_lr(target_rate(probes, t))
        distance = min(abs(math.log(lr / x)) for x in rates)
        if distance > math.log(s.near):
            open_targets.append((distance, lr))
    return max(open_targets)[1] if open_targets else None


@dataclass(frozen=True)
class Placement:
    """Where a target landed on a family's fit."""

    target: float
    lr: float | None  # the rate the seeds run at; None: out of reach
    fitted: float | None  # the fit's gain there
    note: str = ""  # why it is out of reach

    @property
    def placed(self) -> bool:
        return self.lr is not None


def place(probes: Sequence[Probe], targets: Sequence[float], s: Search) -> list[Placement]:
    """Each target's rate on the fit through all probes, or why it has none."""
    fit = monotone_fit(probes)
    out = []
    for t in targets:
        if t > fit.high + s.tolerance:
            top = fit.lrs[fit.gains.index(fit.high)]
            out.append(Placement(t, None, None, f"out of reach: the fit peaks at {100 * fit.high:+.1f} pts "
                                                f"(lr {top:g})"))
        elif t < fit.low - s.tolerance:
            out.append(Placement(t, None, None, f"below every probe: the lowest rate probed, {fit.lrs[0]:g}, "
                                                f"already gains {100 * fit.low:+.1f} pts"))
        else:
            lr = round_lr(target_rate(probes, t))
            out.append(Placement(t, lr, fit.at(lr)))
    return out


def common_range(fits: Sequence[Fit]) -> tuple[float, float]:
    """The gains every family's fit spans: (highest low, lowest high); empty when low > high."""
    return max(f.low for f in fits), min(f.high for f in fits)


def spread_targets(low: float, high: float, k: int) -> list[float]:
    """`k` targets evenly from `low` to `high`, both included. The outer two sit at the ends of
    what every family reaches, so the gains a matched-gain comparison is read at (between
    them) lie inside every family's variants rather than at their edges."""
    return [low + (high - low) * i / (k - 1) for i in range(k)]


@dataclass(frozen=True)
class Round:
    """What the study does next: one probe per family that needs one, and the targets once fixed."""

    probes: dict[str, float]  # family -> the rate to probe; empty: the search is over
    targets: tuple[float, ...] | None  # None while automatic targets are not yet fixed
    note: str = ""  # why automatic targets could not be fixed


MIN_TARGETS = 3  # automatic targets: fewer than this cannot place the compared gains inside the outer two


def plan_round(done: dict[str, list[Probe]], searches: dict[str, Search], targets: Sequence[float] | None,
               k: int) -> Round:
    """The next round of a study's search. With `targets` None they are placed automatically
    (`auto_targets`). A pure function of the probes so far, so a rerun that reads the same probes
    back replays the same decisions."""
    if targets is None:
        auto = auto_targets(done, searches, k)
        if auto.targets is None:
            return auto
        targets = auto.targets
    nxt = {f: lr for f, s in searches.items() if (lr := next_probe(done[f], targets, s)) is not None}
    return Round(nxt, tuple(targets))


def auto_targets(done: dict[str, list[Probe]], searches: dict[str, Search], k: int) -> Round:
    """`k` targets across the gains every family's fit spans (each end pulled in by half the
    tolerance: a fit's ends rest on its noisiest, most extreme probes; none below one tolerance,
    where a family has learned nothing to compare at), once that range is at
    least (k - 1) tolerances wide. Until then the families that bound it widen their own range
    (the one whose highest gain is lowest probes higher, the one whose lowest is highest probes
    lower); when neither can, as many targets as the range holds, if that is at least
    MIN_TARGETS, else none and a note saying which families bound it."""
    prior = {f: lr for f, s in searches.items() if (lr := _prior_left(done[f], s)) is not None}
    if prior:
        return Round(prior, None)
    fits = {f: monotone_fit(done[f]) for f in searches}
    low, high = common_range(list(fits.values()))
    tolerance = max(s.tolerance for s in searches.values())
    low, high = max(low + tolerance / 2, tolerance), high - tolerance / 2  # a target of no gain compares nothing
    if high - low >= (k - 1) * tolerance:
        return Round({}, tuple(spread_targets(low, high, k)))
    top = min(fits, key=lambda f: fits[f].high)
    bottom = max(fits, key=lambda f: fits[f].low)
    widen = {}
    if can_widen(done[top], searches[top], upward=True):
        widen[top] = round_lr(max(p.lr for p in done[top]) * searches[top].step)
    if (bottom != top or not widen) and can_widen(done[bottom], searches[bottom], upward=False):
        widen[bottom] = round_lr(min(p.lr for p in done[bottom]) / searches[bottom].step)
    if widen:
        return Round(widen, None)
    fits_in = int((high - low) / tolerance) + 1 if high > low else 0
    if fits_in >= MIN_TARGETS:
        return Round({}, tuple(spread_targets(low, high, fits_in)))
    return Round({}, None, f"no gain range that every family reaches holds {MIN_TARGETS} targets "
                           f"{100 * tolerance:.1f} pts apart: {top} gains at most {100 * fits[top].high:+.1f} pts, "
                           f"{bottom} at least {100 * fits[bottom].low:+.1f} pts")
