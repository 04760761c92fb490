"""`cpt-bench-report`: one report across many runs (a sweep, or several sweeps side by side).

Reads each run directory's run.json, metrics.json, matrix.csv and flips.csv, labels every run with the
config keys that set it apart from the others (its *variant*), averages each variant over
seeds, and writes report.md, report.csv and three figures. The paradigms are also compared
at matched gain, because at equal learning rate GRPO often learns less and so forgets less:
comparing forgetting alone would reward learning little.

Layout: loading (I/O) -> pure logic (labels, aggregation, frontier, matched gain, rendering)
-> writing files and figures (I/O). The pure part takes plain values and is what the tests
pin down with hand-computed numbers.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from cpt_bench.errors import ReportError
from cpt_bench.metrics import HEADLINE_METRICS
from cpt_bench.report.curves import within_stage_variants
from cpt_bench.report.decide import HALF_WIDTH
from cpt_bench.report.drift import stage_points
from cpt_bench.report.figures import (
    plot_compute,
    plot_curves,
    plot_drift,
    plot_heatmaps,
    plot_pareto,
    plot_within_stage,
)
from cpt_bench.report.frontier import matched_gain, pareto_frontier
from cpt_bench.report.matched import matched_gain_section
from cpt_bench.report.paper import paper_section
from cpt_bench.report.render import NOTE, csv_rows, drift_section, render_markdown, variant_table
from cpt_bench.report.runs import (
    COMPUTE,
    RunRecord,
    Study,
    Unread,
    find_runs,
    load_report_csv,
    load_run,
    load_runs,
    read_study,
    variant_labels,
)
from cpt_bench.report.summary import analysed_runs, mean_std, stage_curve, summarize

log = logging.getLogger(__name__)

__all__ = ["ReportCallback", "ReportError", "RunRecord", "Study", "Unread", "analysed_runs", "find_runs",
           "load_report_csv", "load_run", "load_runs", "main", "matched_gain", "matched_gain_section", "mean_std",
           "pareto_frontier", "read_study", "stage_curve", "summarize", "variant_labels", "write_report"]

PROG = "cpt-bench-report"
CSV_COLUMNS = ["run_dir", "variant", "paradigm", "seed", "base_model", "status", "lr", "schedule",
               "stages_completed", "num_tasks", *HEADLINE_METRICS, *COMPUTE]
FILES = {"md": "report.md", "csv": "report.csv", "heatmaps": "report_heatmaps.png",
         "curves": "report_curves.png", "pareto": "report_pareto.png", "compute": "report_compute.png",
         "drift": "report_drift.png", "within_stage": "report_within_stage.png"}


# --- writing the report (I/O) -----------------------------------------------------------------


def write_report(runs: Sequence[RunRecord], out: Path, half_width: float = HALF_WIDTH,
                 skipped: Sequence[Unread] = ()) -> dict[str, Path]:
    """report.md, report.csv and the three figures into `out`; returns their paths. `half_width`:
    the interval half-width the decide-lines plan seeds for (decide.py); `skipped`: the runs the
    study could not read (`Study.skipped`), named in the report with each run's own unread files."""
    out.mkdir(parents=True, exist_ok=True)
    base = out.resolve()
    summaries = summarize(runs)
    paths = {k: out / name for k, name in FILES.items()}
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(runs, base))
    figures = []
    if any(r.matrix for r in runs):  # runs read back from a report.csv have none
        plot_heatmaps([r for r in runs if r.matrix], paths["heatmaps"])
        plot_curves(summaries, paths["curves"])
        figures += [FILES["heatmaps"], FILES["curves"]]
    else:
        del paths["heatmaps"], paths["curves"]
    analysed = [r for s in summaries for r in s.runs]  # analysed_runs(runs), summarised once
    plot_pareto(analysed, paths["pareto"])
    plot_compute(analysed, paths["compute"])
    figures += [FILES["pareto"], FILES["compute"]]
    points = [p for run in analysed for p in stage_points(run)]
    if points:
        plot_drift(points, paths["drift"])
        figures.append(FILES["drift"])
    else:
        del paths["drift"]
    if within := within_stage_variants(analysed):  # runs with eval.inner_points
        plot_within_stage(within, paths["within_stage"])
        figures.append(FILES["within_stage"])
    else:
        del paths["within_stage"]
    paper = paper_section([(s.label, s.runs) for s in summaries])  # a paper preset's runs: the paper's figures
    paths["md"].write_text(render_markdown(runs, summaries, base, figures, drift_section(points), paper, half_width,
                                             Study(list(runs), list(skipped)).unread))
    return paths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Cross-run report of cpt-bench runs: per-variant means over seeds, "
        "Pareto frontiers and a matched-gain comparison of the paradigms.")
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR",
                        help="a run directory, or a directory holding runs (e.g. a multirun sweep); or one "
                        "report.csv, to re-analyse a study whose run directories are gone (with --out)")
    parser.add_argument("--out", type=Path, help="where to write the report (default: the single DIR)")
    parser.add_argument("--half-width", type=float, default=100 * HALF_WIDTH, metavar="POINTS",
                        help="the 95 %% interval half-width, in points, that each open comparison's line plans "
                        "seeds for (default %(default)g); choose it before the seeds run")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is None and len(args.dirs) > 1:
        parser.error("--out is required with several DIRs")
    if not logging.getLogger().handlers:
        logging.basicConfig(format=f"{PROG}: %(levelname)s: %(message)s", stream=sys.stderr)
    from_csv = [p for p in args.dirs if p.suffix == ".csv"]
    if from_csv and (len(args.dirs) > 1 or args.out is None):
        parser.error("a report.csv is read alone and needs --out (its own folder would be overwritten)")
    try:
        study = Study(load_report_csv(from_csv[0])) if from_csv else read_study(args.dirs)
    except ReportError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.dirs[0]
    if not args.half_width > 0:
        parser.error("--half-width must be above 0 points")
    paths = write_report(study.runs, out, args.half_width / 100, study.skipped)
    print(variant_table(summarize(study.runs)))
    print(f"\n{NOTE}\nReport: {paths['md']} (+ report.csv, report_*.png)")
    return 0


class ReportCallback(Callback):
    """Writes the report into the sweep directory when a multirun ends.

    On by default (`hydra.callbacks.report` in conf/config.yaml). A report failure is logged and swallowed: the runs
    themselves are done and must not be marked failed because a figure could not be drawn.
    """

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        try:
            sweep = Path(config.hydra.sweep.dir)
            study = read_study([sweep])
            paths = write_report(study.runs, sweep, skipped=study.skipped)
            # the sweep's answer on the terminal, as cpt-bench-report prints it, not only where it is
            print(f"\n{variant_table(summarize(study.runs))}\n\nReport: {paths['md']} (+ report.csv, report_*.png)",
                  flush=True)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.warning("cross-run report not written: %s", exc, exc_info=not isinstance(exc, ReportError))


if __name__ == "__main__":
    sys.exit(main())
