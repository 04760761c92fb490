"""The report's confidence intervals on data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from test_report import config, metrics, write_run

from cpt_bench import report
from cpt_bench.report.stats import (
    Interval,
    RunPoint,
    diff_ci,
    gain_rule,
    matched_gain_across_bases,
    matched_gain_ci,
    mean_ci,
    variant_means,
)


def test_mean_ci_covers_the_known_mean_at_its_nominal_rate():
    # 200 samples of 20 from N(0.3, 0.1): a 95 % interval must cover 0.3 about 95 % of the time
    # (the percentile bootstrap runs a little short with n = 20: ~92-93 %)
    rng = np.random.default_rng(1)
    covered = [mean_ci(rng.normal(0.3, 0.1, 20), n_resamples=2000).covers(0.3) for _ in range(200)]
    assert 0.88 <= np.mean(covered) <= 0.99


def test_mean_ci_is_pinned_and_sized_like_the_standard_error():
    xs = [0.52, 0.47, 0.61, 0.55, 0.44, 0.58, 0.50, 0.49]
    ci = mean_ci(xs)
    se = np.std(xs, ddof=1) / np.sqrt(len(xs))
    assert ci.n == 8 and ci.covers(np.mean(xs))
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * se, rel=0.25)
    assert mean_ci(xs) == ci  # seeded: the same runs give the same report


def test_mean_ci_edge_cases():
    assert mean_ci([0.4]) is None and mean_ci([None, 0.4]) is None  # one run: no interval
    assert mean_ci([0.2, 0.2, 0.2]) == Interval(0.2, 0.2, 3)  # no spread: scipy would give nan


def _line(paradigm_offset: float, seeds: int = 3, bases=(0,), noise=0.005, base_shift=None) -> list[RunPoint]:
    """forgetting = 0.5 * gain + offset (+ noise) on four learning rates whose gains span 0.02-0.10."""
    rng = np.random.default_rng(abs(hash((paradigm_offset, seeds, bases))) % 2**32)
    out = []
    for base in bases:
        shift = 0.0 if base_shift is None else base_shift[base]
        for lr, gain in zip(("1e-5", "3e-5", "1e-4", "3e-4"), (0.02, 0.045, 0.07, 0.10)):
            for _ in range(seeds):
                g = gain + rng.normal(0, noise)
                out.append(RunPoint(f"lr={lr}", base, g, 0.5 * g + paradigm_offset + shift + rng.normal(0, noise)))
    return out


def test_matched_gain_difference_recovers_a_known_gap():
    cmp = matched_gain_ci(_line(0.05), _line(0.0))
    assert cmp.mean_diff == pytest.approx(0.05, abs=0.01)
    assert cmp.mean_ci.covers(0.05) and not cmp.mean_ci.covers(0.0)
    assert cmp.runs == (12, 12) and cmp.variants == (4, 4) and cmp.clusters == 1
    assert all(r.ci.covers(0.05) for r in cmp.rows)


def test_matched_gain_without_a_gap_is_not_distinguishable():
    cmp = matched_gain_ci(_line(0.0), _line(0.0, seeds=4))
    assert cmp.mean_ci.covers(0.0)
    assert abs(cmp.mean_diff) < 0.01


def test_across_bases_compares_within_each_base_and_resamples_base_models():
    # within a base model the gap is exact, but it is +0.08, 0.0 or -0.08 depending on the base:
    # seeds alone would give a narrow interval around 0; resampling base models must widen it
    shift = {0: 0.08, 1: 0.0, 2: -0.08}
    a = _line(0.0, bases=(0, 1, 2), noise=0.0, base_shift=shift)
    b = _line(0.0, bases=(0, 1, 2), noise=0.0)
    res = matched_gain_across_bases(a, b)
    assert [round(res.per_base[k].mean_diff, 9) for k in (0, 1, 2)] == [0.08, 0.0, -0.08]
    assert res.per_base[0].mean_ci == Interval(pytest.approx(0.08), pytest.approx(0.08), 24)  # exact within a base
    assert res.mean_diff == pytest.approx(0.0, abs=1e-9) and res.runs == (36, 36)
    assert res.mean_ci.covers(0.0) and res.mean_ci.high - res.mean_ci.low > 0.08
    # a shift common to both paradigms cancels: the interval stays at the true gap
    same = matched_gain_across_bases(_line(0.03, bases=(0, 1, 2), noise=0.0, base_shift=shift),
                                     _line(0.0, bases=(0, 1, 2), noise=0.0, base_shift=shift))
    assert same.mean_ci.low == pytest.approx(0.03, abs=1e-6) and same.mean_ci.high == pytest.approx(0.03, abs=1e-6)


def test_across_bases_never_pools_frontiers_of_different_bases():
    # base 1's learning rates reach twice base 0's gains; within each base a forgets 0.02 more.
    # Averaging the variants over bases would put a's and b's means on mismatched curves.
    pts = {"a": [], "b": []}
    for base, scale in ((0, 1.0), (1, 2.0)):
        for lr, gain in (("lo", 0.02), ("mid", 0.05), ("hi", 0.08)):
            for side, extra, g in (("a", 0.02, gain * scale), ("b", 0.0, gain * scale * 1.1)):
                pts[side].append(RunPoint(lr, base, g, g ** 2 * 5 + extra))
    res = matched_gain_across_bases(pts["a"], pts["b"])
    assert all(0.01 < c.mean_diff < 0.03 for c in res.per_base.values())
    assert 0.01 < res.mean_diff < 0.03


def test_matched_gain_is_none_without_overlap():
    low = [RunPoint("x", 0, 0.01, 0.0), RunPoint("x", 0, 0.02, 0.0)]
    high = [RunPoint("y", 0, 0.5, 0.1), RunPoint("y", 0, 0.6, 0.1)]
    assert matched_gain_ci(low, high) is None
    assert variant_means(low) == [(pytest.approx(0.015), 0.0)]


def test_report_prints_intervals_run_counts_and_verdicts(tmp_path):
    # sft forgets 20 points more at every gain, rft and sft overlap in gain: the report must say so
    k = 0
    for paradigm, offset in (("sft", 0.2), ("rft", 0.0)):
        for lr, gain in ((1e-5, 0.05), (1e-4, 0.10), (1e-3, 0.15)):
            for seed, jitter in enumerate((-0.01, 0.0, 0.01)):
                g = gain + jitter
                write_run(tmp_path / str(k), config(paradigm, lr, seed),
                          metrics=metrics(0.5, g + offset + jitter / 2, g, -g - offset))
                k += 1
    runs = report.load_runs([tmp_path])
    text = report.matched_gain_section(runs)
    assert "sft: 9 runs in 3 variants; rft: 9 runs in 3 variants; 1 base model." in text
    forgetting = text.split("### forgetting: sft vs rft")[1].split("###")[0]
    assert forgetting.count("| sft forgets more |") == 4 + 1  # every matched gain and the mean
    general = text.split("### general change: sft vs rft")[1]
    assert general.count("| sft loses more general ability |") == 5
    rule = report.render.gain_rule_section(runs)
    # the best mean gain is 15 at lr 1e-3 for both; 90 % of it (13.5) is reached only there
    assert "| sft | 0.001 | 3 | +15.0 [+14.0, +16.0] | +35.0 [+33.5, +36.5] |" in rule
    assert "| rft | 0.001 | 3 | +15.0 [+14.0, +16.0] | +15.0 [+13.5, +16.5] |" in rule
    assert "| gain | +0.0 |" in rule and "| not distinguishable |" in rule
    assert "| forgetting | +20.0 |" in rule and "| sft forgets more |" in rule
    table = report.variant_table(report.summarize(runs))
    # sft at lr 1e-5 forgot 0.235, 0.25, 0.265: with 3 runs, a resample of 3 equal values has
    # probability 1/27 > 2.5 %, so the percentile interval is exactly the range of the runs
    row = next(line for line in table.splitlines() if "paradigm=sft" in line and "1e-05" in line)
    assert "| 3 |" in row and "| +25.0 ± 1.5 [+23.5, +26.5] |" in row


def test_report_compares_each_base_model_then_their_mean(tmp_path):
    for base, gap in ((0, 0.05), (1, 0.03), (2, 0.04)):
        for paradigm, offset in (("sft", gap), ("rft", 0.0)):
            for lr, gain in ((1e-5, 0.05), (1e-4, 0.10)):
                for seed, jitter in enumerate((-0.005, 0.005)):
                    cfg = config(paradigm, lr, seed)
                    cfg["model"]["recipe"] = {"seed": base}
                    g = gain + jitter
                    write_run(tmp_path / f"{paradigm}-{base}-{lr}-{seed}", cfg,
                              metrics=metrics(0.5, g / 2 + offset, g, -g))
    text = report.matched_gain_section(report.load_runs([tmp_path]))
    forgetting = text.split("### forgetting: sft vs rft")[1].split("###")[0]
    assert "Each base model (`model.recipe.seed`) on its own frontiers" in forgetting
    assert "| 0 | 4 + 4 | +5.0 to +10.0 | +8.8 / +3.8 | +5.0 | [+5.0, +5.0] | sft forgets more |" in forgetting
    assert "| mean over base models | 12 + 12 |  |  | +4.0 | [+3.0, +5.0] | sft forgets more |" in forgetting


def test_runs_from_several_base_models_pool_into_one_variant(tmp_path):
    for base in (0, 1, 2):
        for seed in (0, 1):
            cfg = config("sft", 1e-4, seed)
            cfg["model"]["recipe"] = {"seed": base}
            write_run(tmp_path / f"{base}-{seed}", cfg, metrics=metrics(0.5, 0.1 * base, 0.2, -0.1))
    summaries = report.summarize(report.load_runs([tmp_path]))
    assert len(summaries) == 1 and len(summaries[0].runs) == 6
    assert summaries[0].stats["forgetting"][0] == pytest.approx(0.1)


def test_gain_rule_and_difference_interval():
    assert gain_rule({1e-5: 0.02, 1e-4: 0.095, 1e-3: 0.10}) == 1e-4  # 0.095 >= 0.9 * 0.10
    assert gain_rule({1e-5: 0.02, 1e-4: 0.08, 1e-3: 0.10}) == 1e-3
    rng = np.random.default_rng(0)
    ci = diff_ci(rng.normal(0.5, 0.05, 30), rng.normal(0.3, 0.05, 30))
    assert ci.covers(0.2) and not ci.covers(0.0) and ci.n == 60
    assert diff_ci([0.1], [0.2, 0.3]) is None
