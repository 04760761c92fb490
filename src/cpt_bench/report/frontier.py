"""Pareto frontiers and the comparison of two paradigms' frontiers at matched gain (pure)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

MATCHED_POINTS = 4  # gains at which two frontiers are compared


def pareto_frontier(points: Sequence[tuple[float, float]], minimize_y: bool = True) -> list[int]:
    """Indices of the points not dominated in (higher x, lower y) — or (higher x, higher y)
    with minimize_y=False — sorted by x. Exact duplicates are all kept."""
    sign = 1 if minimize_y else -1
    pts = [(x, sign * y) for x, y in points]  # now always: higher x, lower y is better

    def dominated(i: int) -> bool:
        xi, yi = pts[i]
        return any(xj >= xi and yj <= yi and (xj, yj) != (xi, yi) for xj, yj in pts)

    return sorted((i for i in range(len(pts)) if not dominated(i)), key=lambda i: (pts[i][0], pts[i][1]))


def interpolate(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """Piecewise-linear y(x) for x within [xs[0], xs[-1]], xs ascending."""
    for (x0, y0), (x1, y1) in itertools.pairwise(zip(xs, ys)):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    if math.isclose(x, xs[-1]) or len(xs) == 1:
        return ys[-1]
    raise ValueError(f"{x} outside [{xs[0]}, {xs[-1]}]")


def matched_gain(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]],
                 n: int = MATCHED_POINTS, minimize_y: bool = True) -> list[tuple[float, float, float, float]]:
    """Compare two paradigms' (gain, y) run points at equal gain.

    Each side's Pareto frontier, sorted by gain, is linearly interpolated at `n` evenly
    spaced gains spanning the gain range both sides' points cover. Below a frontier's lowest
    point (where every variant that gains less is dominated by one that gains more and does
    better) it gives that point's y: the paradigm reaches the gain doing at least that well.
    (The highest-gain point is never dominated, so above, the ranges end together.) Returns
    (gain, y_a, y_b, y_a - y_b) rows; [] when the gain ranges do not overlap (or a side has no points).
    """
    curves = []
    for pts in (a, b):
        front = sorted({pts[i] for i in pareto_frontier(pts, minimize_y)})
        if not front:
            return []
        curves.append(([x for x, _ in front], [y for _, y in front]))
    lo = max(min(x for x, _ in pts) for pts in (a, b))
    hi = min(xs[-1] for xs, _ in curves)
    if lo > hi:
        return []
    gains = [lo] if math.isclose(lo, hi) or n < 2 else [lo + (hi - lo) * k / (n - 1) for k in range(n - 1)] + [hi]
    rows = []
    for g in gains:
        ya, yb = (interpolate(max(g, xs[0]), xs, ys) for xs, ys in curves)
        rows.append((g, ya, yb, ya - yb))
    return rows
