"""A report says what was run and prints nothing impossible: it opens with the setup, cuts an
interval on a share or an accuracy to [0, 100] % and says so, prints one row for amounts that
round alike, and every legend entry of its Pareto figure is drawn where it hides no point."""

from __future__ import annotations

import json

import pytest
from matplotlib.lines import Line2D
from test_report import SFT_COMPUTE, config, metrics, write_run

from cpt_bench import report
from cpt_bench.report.figures import pareto_figure
from cpt_bench.report.render import matched_compute_section
from cpt_bench.report.stats import Interval
from cpt_bench.report.text import fmt_ci


def _sweep(tmp_path):
    """Two seeds of SFT at two rates, GRPO at one (its frontier is one point), with run.json's
    hardware and versions as a run writes them."""
    for seed in (0, 1):
        for k, lr in enumerate((1e-5, 3e-5)):
            write_run(tmp_path / f"sft{k}-{seed}", config("sft", lr=lr, seed=seed),
                      metrics=metrics(0.5, 0.05 + 0.02 * k + 0.01 * seed, 0.04 + 0.03 * k, -0.1 - 0.05 * k))
        write_run(tmp_path / f"rft-{seed}", config("rft", lr=1e-4, seed=seed),
                  metrics=metrics(0.55, 0.01 * seed, 0.06 + 0.01 * seed, 0.0))
    for info_path in tmp_path.glob("*/run.json"):
        info = json.loads(info_path.read_text())
        info |= {"hardware": {"cpu": "AMD EPYC [avx2 fma]", "cpu_count": 2, "cuda": False},
                 "versions": {"cpt-bench": "0.1.0", "torch": "2.13.0+cpu", "trl": "1.16.0"}}
        info_path.write_text(json.dumps(info))
    return report.load_runs([tmp_path])


@pytest.mark.slow  # over a second of CPU: the fast tier stays the one-minute loop
def test_a_report_opens_with_what_was_run(tmp_path):
    runs = _sweep(tmp_path)
    out = tmp_path / "out"
    report.write_report(runs, out)
    text = (out / "report.md").read_text()
    setup = text.split("## Setup", 1)[1].split("\n## ", 1)[0].split("\n| run |")[0]
    assert text.index("## Setup") < text.index("| run |") < text.index("## Results per variant")
    for line in ["- **Model**: tiny", "- **Benchmark**: toy; tasks in the order trained: a → b; general suite: g",
                 "- **Chain-of-thought**: off; **schedule**: sequential",
                 "`paradigm.name` rft, sft; `paradigm.learning_rate` 1e-05, 3e-05, 0.0001",
                 "- **Seeds**: 0, 1 (6 runs)", "- **Machine**: AMD EPYC [avx2 fma], 2 cores, no GPU",
                 "- **Versions**: cpt-bench 0.1.0; torch 2.13.0+cpu; trl 1.16.0"]:
        assert line in setup, (line, setup)


def test_an_interval_on_a_share_is_cut_to_what_is_possible_and_says_so():
    ci = Interval(-0.047, 0.38, 3)
    assert fmt_ci(ci.within(0.0, 1.0), signed=False) == "[0.0, 38.0]†"
    assert ci.within(-1.0, 1.0) is ci and fmt_ci(ci, signed=False) == "[-4.7, 38.0]"


def test_amounts_that_round_alike_are_one_row(tmp_path):
    for seed, wall in enumerate((6.01, 6.02, 6.03)):  # SFT's wall times differ below the rounding
        write_run(tmp_path / f"s{seed}", config("sft", seed=seed), metrics=metrics(0.5, 0.05, 0.04, -0.1),
                  compute={**SFT_COMPUTE, "wall_seconds": wall})
        write_run(tmp_path / f"r{seed}", config("rft", seed=seed), metrics=metrics(0.5, 0.01, 0.03, 0.0),
                  compute={**SFT_COMPUTE, "wall_seconds": 6.0 + 0.02 * seed, "optimizer_steps": 20 + seed})
    section = matched_compute_section(report.load_runs([tmp_path]))
    table = section.split("### gain at equal wall time", 1)[1].split("###")[0]
    rows = [line for line in table.splitlines() if line.startswith("| 6")]
    assert len(rows) == len({r.split("|")[1] for r in rows}) >= 1


def test_every_pareto_legend_entry_is_drawn_and_hides_no_point(tmp_path):
    fig = pareto_figure(_sweep(tmp_path))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend()
        labels = [t.get_text() for t in legend.get_texts()]
        assert "rft frontier" not in labels and "sft frontier" in labels  # GRPO's one mean is no line
        drawn = {a.get_label(): a for a in [*ax.lines, *ax.collections]}
        for label in labels:
            artist = drawn[label]
            n = len(artist.get_xdata()) if isinstance(artist, Line2D) else len(artist.get_offsets())
            assert n >= (2 if isinstance(artist, Line2D) else 1), label
        box = legend.get_window_extent(renderer)
        for artist in ax.collections:
            for x, y in ax.transData.transform(artist.get_offsets()):
                assert not box.contains(x, y), "the legend hides a point"
