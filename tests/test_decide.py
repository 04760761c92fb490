"""What would decide an open comparison (report/decide.py): the seeds a variant a planned
half-width needs, tested by the half-widths simulated studies reach with them (as the coverage
tests test the intervals), and a line for every open comparison of a rendered report."""

from __future__ import annotations

import math

import numpy as np
from test_explain import study
from test_report import config, metrics, write_run
from test_stats import _line

from cpt_bench import report
from cpt_bench.report.decide import gains_line, seeds_line, seeds_needed
from cpt_bench.report.explain import explain_section
from cpt_bench.report.stats import Interval, RunPoint, diff_ci, matched_gain_ci, t_quantile

H = 0.02  # the planned half-width: 2 points


def _half(ci: Interval) -> float:
    return (ci.high - ci.low) / 2


def test_with_the_true_spread_the_seeds_named_are_the_fewest_that_reach_the_half_width():
    """An interval as wide as the true spread makes it at 3 seeds a side (Welch, equal spreads of
    3 points): at the seeds it names, simulated studies' root-mean-square half-width is at most
    the planned one (E[s^2] is the true variance), and at one seed fewer above it."""
    sigma, rng = 0.03, np.random.default_rng(0)
    pilot = Interval(-(h := t_quantile(0.95, 4) * sigma * math.sqrt(2 / 3)), h, 6, dof=4, per_variant=3)
    n = seeds_needed(pilot, H)
    assert n is not None and n > 3

    def rms_half(seeds: int) -> float:
        halves = [_half(diff_ci(rng.normal(0, sigma, seeds), rng.normal(0, sigma, seeds))) for _ in range(2000)]
        return float(np.sqrt(np.mean(np.square(halves))))

    at_n, one_fewer = rms_half(n), rms_half(n - 1)
    assert at_n <= H * 1.02 and one_fewer > H * 0.98, (n, at_n, one_fewer)


def test_a_three_seed_pilot_plans_studies_whose_intervals_come_out_near_the_planned_width():
    """400 pilots of 3 seeds a side, each planning its study's seeds for ±2 points; each planned
    study run once: the median half-width reached is within 20 % of the plan (a 3-seed pilot's
    spread is itself noisy, so single studies scatter around it)."""
    sigma, rng, ratios = 0.03, np.random.default_rng(1), []
    for _ in range(400):
        pilot = diff_ci(rng.normal(0, sigma, 3), rng.normal(0.01, sigma, 3))
        n = seeds_needed(pilot, H)
        if n is None:
            continue
        ratios.append(_half(diff_ci(rng.normal(0, sigma, n), rng.normal(0.01, sigma, n))) / H)
    assert len(ratios) >= 390
    assert 0.8 <= np.median(ratios) <= 1.2, np.median(ratios)


def test_the_matched_gain_interval_s_seeds_are_planned_the_same_way():
    """Simulated sweeps like the studies' (4 learning rates a side, 1.5 points of seed noise):
    a 3-seed pilot's matched-gain interval names the seeds a variant; the sweep at that many
    seeds gives a half-width within 25 % of the plan, in the median over 40 pilots."""
    gains, ratios = (0.02, 0.06, 0.10, 0.14), []
    for study_seed in range(40):
        pilot = matched_gain_ci(_line(0.01, seeds=3, noise=0.015, seed=[study_seed, 0], gains=gains),
                                _line(0.0, seeds=3, noise=0.015, seed=[study_seed, 1], gains=gains),
                                n_resamples=500, seed=study_seed)
        if pilot is None or pilot.mean_ci is None:
            continue
        n = seeds_needed(pilot.mean_ci, 0.01)
        assert n is not None
        planned = matched_gain_ci(_line(0.01, seeds=n, noise=0.015, seed=[study_seed, 2], gains=gains),
                                  _line(0.0, seeds=n, noise=0.015, seed=[study_seed, 3], gains=gains),
                                  n_resamples=500, seed=study_seed)
        ratios.append(_half(planned.mean_ci) / 0.01)
    assert len(ratios) >= 30
    assert 0.75 <= np.median(ratios) <= 1.25, np.median(ratios)


def test_a_line_says_why_and_what_would_decide():
    assert seeds_line(None).startswith("why: no interval")
    line = seeds_line(Interval(-0.04, 0.05, 6, dof=4, per_variant=3))
    assert line.startswith("why: ±4.5 pts at 3 seeds a variant covers 0; to decide: ") and "for ±2.0 pts" in line
    assert "already give" in seeds_line(Interval(-0.01, 0.012, 6, dof=4, per_variant=3))
    assert "base models" in seeds_line(Interval(-0.04, 0.05, 3, "base models", dof=2, per_variant=3))


def test_a_frontier_inside_the_other_names_its_own_two_ends():
    """RIF-SFT's gains span SFT's and more: the overlap is SFT's whole range, so both variants
    that would decide it are SFT's (one line naming SFT twice as two sides read as a slip)."""
    def side(name, gains):
        return [RunPoint(f"{name} {g}", "base", g + d, g) for g in gains for d in (-0.002, 0.0, 0.002)]

    line = gains_line(side("rif", (0.01, 0.04, 0.07)), side("sft", (0.02, 0.04, 0.06)), "RIF-SFT", "SFT",
                      True, 0.95)
    assert "the overlap, +2.0 to +6.0 pts, is all of SFT's range" in line
    assert "to decide: variants of SFT gaining +6.5 pts or more and +1.5 or less" in line
    assert "RIF-SFT" not in line


def test_every_open_comparison_of_a_report_carries_its_decide_line(tmp_path):
    """A study with comparisons of every kind: decided, not distinguishable, not estimable (one
    paradigm's frontier ends where the other's begins): every table row and direct comparison
    that is open says why and what would decide it, and no decided one does."""
    k = 0
    for paradigm, offset, gains in (("sft", 0.01, (0.02, 0.05, 0.08)), ("rft", 0.0, (0.05, 0.08, 0.11)),
                                    ("self_sft", 0.2, (0.02, 0.05, 0.08))):
        for lr, gain in zip((1e-5, 1e-4, 1e-3), gains):
            for seed, jitter in enumerate((-0.01, 0.0, 0.01)):
                g = gain + jitter
                write_run(tmp_path / str(k), config(paradigm, lr, seed),
                          metrics=metrics(0.5, g + offset + jitter, g, -g - offset))
                k += 1
    runs = report.load_runs([tmp_path])
    text = report.matched_gain_section(runs) + "\n" + report.render.gain_rule_section(runs)
    rows = [line for line in text.splitlines() if line.startswith("|") or line.startswith("Directly")]
    open_rows = [r for r in rows if "not distinguishable" in r or "not estimable" in r]
    assert len(open_rows) >= 4 and any("not estimable" in r for r in open_rows)
    assert all("why: " in r and "to decide: " in r for r in open_rows), [r for r in open_rows if "why" not in r]
    decided = [r for r in rows if "forgets more" in r]
    assert decided and not any("why: " in r for r in decided)


def test_an_open_verdict_says_what_would_decide_it():
    text = explain_section(study(sft=1.0, grpo_kl=0.97, self_sft=1.0))
    assert "What would decide the open verdicts" in text
    line = next(x for x in text.splitlines() if x.startswith("- on-policy data"))
    assert "why: " in line and "to decide: " in line


def test_an_open_classic_method_comparison_says_what_would_decide_it():
    from pathlib import Path

    from cpt_bench.report.continual import cl_section
    from cpt_bench.report.runs import RunRecord

    rng, runs = np.random.default_rng(0), []
    for method, paradigm, slope in (("none", "sft", 1.0), ("ewc", "sft", 1.0), ("none", "rft", 0.3)):
        for k, gain in enumerate((0.02, 0.04, 0.06, 0.08)):
            for seed in range(3):
                cfg = {"paradigm": {"name": paradigm, "learning_rate": 10.0 ** -k}, "cl": {"name": method},
                       "filter": {"name": "none"}, "model": {"name": "tiny"}, "seed": seed}
                g = gain + rng.normal(0, 0.002)
                runs.append(RunRecord(Path(f"/r/{paradigm}{method}{k}{seed}"), "finished", cfg, seed,
                                      {"gain": g, "forgetting": slope * g + rng.normal(0, 0.004),
                                       "general_delta": -g + rng.normal(0, 0.004)}, [], [], [], None,
                                      variant=f"{paradigm} {method} lr={k}"))
    forgetting = cl_section(runs).split("### general change")[0].splitlines()
    line = next(x for x in forgetting if x.startswith("- SFT ewc − SFT none"))  # EWC changes nothing here
    assert "why: " in line and "to decide: " in line
    assert not any(x.startswith("- GRPO none − SFT none") for x in forgetting)  # decided: GRPO forgets less


def test_the_runs_that_would_part_two_r2_intervals_follow_one_over_root_runs():
    from cpt_bench.report.decide import separating_runs

    # centres 0.3 and 0.5 (gap 0.2), half-widths 0.2 and 0.2: they part at (0.4 / 0.2)^2 = 4x the runs
    assert separating_runs((0.1, 0.5), (0.3, 0.7), runs=10) == 40
    assert separating_runs((0.1, 0.2), (0.6, 0.7), runs=10) == 11  # apart already: one more run, at least
    assert separating_runs((0.1, 0.5), (0.2, 0.4), runs=10) is None  # the same centre: no number parts them
