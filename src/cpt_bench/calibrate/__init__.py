"""`cpt-bench-calibrate`: a study whose learning rates are found, not typed.

For each family of a study (a paradigm with its method settings), one-seed probes find the
learning rates at which its gain reaches each of a few target gains shared by every family
(search.py); then the study's seeds run at those rates, one `cpt-bench -m` sweep per family
over Hydra's launchers (driver.py), and the cross-run report compares the families at matched
gain. Rerun it and everything finished is read back, not run again.

    cpt-bench-calibrate explain --out multirun/study/explain          # a shipped study
    cpt-bench-calibrate my_study.yaml --out D --set probes=4 -- model.recipe.seed=2

Why a driver of our own rather than a Hydra sweeper (Optuna, Ax): the search is one-
dimensional, wants a target rather than an optimum, must pool every probe in one monotone fit
rather than trust the last one, and must keep its probes out of the study's means; a sweeper
sees only the task function's return value (cpt-bench's is the final average accuracy), and
hydra-optuna-sweeper's latest release pins optuna < 3. The seeds still run through Hydra's
launchers, so a study calibrates on a laptop and runs on SLURM alike.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from cpt_bench.calibrate.driver import ProbeFailed, read_seeds, record, run_search, run_seeds
from cpt_bench.calibrate.figure import plot_calibration
from cpt_bench.calibrate.record import CalibrationRecord
from cpt_bench.calibrate.search import Probe, Round
from cpt_bench.calibrate.spec import check_composes, load_spec, shipped
from cpt_bench.errors import ConfigError, ReportError

PROG = "cpt-bench-calibrate"
log = logging.getLogger("cpt_bench.calibrate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Find each family's learning rates for shared target gains with one-seed probes, "
        "then run the study's seeds there and report.",
        epilog=f"shipped studies: {', '.join(shipped())}. Everything after -- is passed to every cpt-bench run.")
    parser.add_argument("study", help="a shipped study's name, or a study YAML file")
    parser.add_argument("--out", type=Path, required=True, help="the study folder (probes, seed sweeps, report)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override the study's fields, e.g. probes=4 seeds=[0,1] targets=[2,4,6]")
    parser.add_argument("--probe-only", action="store_true", help="stop after the search (no seeds, no report)")
    parser.add_argument("--families", type=lambda text: [f for f in text.split(",") if f], default=None,
                        metavar="A,B", help="run the seeds of these families only, a piece of a long study (the "
                        "search still covers every family: the targets are shared)")
    return parser


def summary(rec: CalibrationRecord) -> str:
    """One line per family and target: the rate, the fit, the seeds' mean and whether it is reached."""
    lines = [f"targets (pts): {', '.join(f'{100 * t:+.1f}' for t in rec.targets)}"
             f"{' (automatic)' if rec.automatic else ''}; tolerance ±{100 * rec.tolerance:.1f}"]
    for fam in rec.families:
        seeds = {(s.lr, s.target): s for s in fam.seeds}
        for p in fam.placements:
            if p.lr is None:
                lines.append(f"  {fam.name}: target {100 * p.target:+.1f}: {p.note}")
                continue
            s = seeds.get((p.lr, p.target))
            got = "" if s is None or s.mean is None else (
                f", seeds' mean {100 * s.mean:+.1f} ({len(s.gains)} runs): "
                f"{'reached' if s.reached(rec.tolerance) else 'NOT reached'}")
            lines.append(f"  {fam.name}: target {100 * p.target:+.1f} at lr {p.lr:g} (isotonic fit there "
                         f"{100 * p.fitted:+.1f}){got}")
        lines += [f"  {fam.name}: gain not monotone: {w}" for w in fam.not_monotone(rec.tolerance)]
        lines.append(f"  {fam.name}: {len(fam.probes)} probes")
    return "\n".join(lines)


def _report(out: Path) -> None:
    """The study's report over every family's finished seed runs (never the probes)."""
    from cpt_bench.report import read_study, write_report

    try:
        study = read_study([out])
    except ReportError:  # no seed run has finished yet
        return
    write_report(study.runs, out, skipped=study.skipped)


def calibrate(study: str, out: Path, settings: Sequence[str], extra: Sequence[str], probe_only: bool,
              families: Sequence[str] | None = None) -> int:
    spec = load_spec(study, list(settings))
    if unknown := [f for f in families or [] if f not in spec.families]:
        raise ConfigError(f"--families: no family {', '.join(unknown)} in {study}; it has {', '.join(spec.families)}")
    spec.common = [*spec.common, *extra]
    check_composes(spec)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(study).stem
    done: dict[str, list[Probe]] = {f: [] for f in spec.families}

    def so_far(plan: Round) -> None:  # a search stopped anywhere resumes from its last round's record
        record(spec, name, done, Round({}, plan.targets, "searching")).write(out)

    try:
        plan = run_search(spec, out, done, so_far)
    except ProbeFailed:  # what the probes found so far is recorded before the error is shown
        record(spec, name, done, Round({}, None, "stopped: a probe failed")).write(out)
        raise
    rec = record(spec, name, done, plan)
    rec.write(out)
    plot_calibration(rec, out)
    if rec.targets is None:
        print(f"{PROG}: {plan.note}; see {out / 'calibration.png'}", file=sys.stderr)
        return 1
    if not probe_only:
        for fam in rec.families:  # a piece at a time: the record, figure and report after each family
            if families and fam.name not in families:
                read_seeds(spec, out, fam)  # what an earlier piece ran, if anything
                continue
            ran = run_seeds(spec, out, fam)
            rec.write(out)
            if ran or not (out / "report.md").is_file():
                plot_calibration(rec, out)
                _report(out)
    print(summary(rec))
    print(f"Calibration: {out / 'calibration.json'}, {out / 'calibration.png'}"
          + (f"; report: {out / 'report.md'}" if (out / "report.md").is_file() and not probe_only else ""))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = build_parser().parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(format=f"{PROG}: %(message)s", stream=sys.stderr, level=logging.INFO)
    try:
        return calibrate(args.study, args.out, args.set, extra, args.probe_only, args.families)
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except ProbeFailed as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
