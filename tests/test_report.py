"""The cross-run report on hand-built run directories: labels, means, frontier, matched gain, CLI."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cpt_bench import report
from cpt_bench.outputs.records import Diagnostics
from cpt_bench.report import (
    ReportCallback,
    RunRecord,
    find_runs,
    main,
    matched_gain,
    pareto_frontier,
    stage_curve,
    variant_labels,
)

TASKS, GENERAL = ["a", "b"], ["g"]

# (paradigm, lr) -> per-seed (final_avg_acc, forgetting, gain, general_delta); bwt = -forgetting
GRID = {
    ("sft", 1e-4): [(0.30, 0.40, 0.50, -0.30), (0.40, 0.50, 0.60, -0.20)],
    ("sft", 1e-5): [(0.50, 0.10, 0.20, -0.10), (0.55, 0.20, 0.30, -0.05)],
    ("rft", 1e-4): [(0.60, 0.05, 0.30, -0.02), (0.62, 0.07, 0.40, 0.00)],
    ("rft", 1e-5): [(0.45, 0.01, 0.10, 0.01), (0.47, 0.01, 0.12, 0.00)],
}


def config(paradigm="sft", lr=1e-4, seed=0, schedule="sequential", **top) -> dict:
    p = {"name": paradigm, "learning_rate": lr, "epochs": 5.0}
    if paradigm == "rft":
        p["kl_coef"] = 0.04  # the same for every rft run: a property of paradigm=rft
    return {
        "paradigm": p,
        "benchmark": {"name": "toy", "tasks": TASKS, "general": GENERAL},
        "order": {"name": "default", "tasks": None, "seed": 0},
        "model": {"name": "tiny", "cache_dir": f"/cache/{seed}"},  # differs, but not the experiment
        "logger": {"name": "wandb", "group": f"g{seed}"},
        "seed": seed, "schedule": schedule, "cot": False, "filter": {"name": "none"},
        **top,
    }


def write_run(path: Path, cfg: dict, status="finished", metrics: dict | None = None, compute=None):
    path.mkdir(parents=True)
    joint = cfg.get("schedule") == "joint"
    stages = [(0, ""), (1, "joint")] if joint else [(0, ""), (1, "a"), (2, "b")]
    with open(path / "matrix.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["stage", "trained_task", "eval_task", "accuracy", "n"])
        for s, trained in stages:
            for j, task in enumerate([*TASKS, *GENERAL]):
                w.writerow([s, trained, task, f"{0.1 * (s + j + 1):.6f}", 10])
    info = {"status": status, "config": cfg, "order": TASKS, "general_suite": GENERAL, "seed": cfg["seed"],
            "timings": {"total_seconds": 6.0, "stages": {
                "0": {"eval_seconds": 1.0},
                "1": {"train_seconds": 2.0, "optimizer_steps": 10, "eval_seconds": 0.5},
                "2": {"train_seconds": 3.0, "optimizer_steps": 10, "eval_seconds": 0.5}}}}
    if compute:
        info["compute"] = compute
    (path / "run.json").write_text(json.dumps(info))
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps(metrics))


def metrics(final, forgetting, gain, general, stages=2, joint=False) -> dict:
    return {"final_avg_acc": final, "avg_acc_per_stage": [final] if joint else [final + 0.2, final][:stages],
            "plasticity": final + forgetting, "gain": gain,
            "bwt": None if joint else -forgetting, "forgetting": None if joint else forgetting,
            "fwt": 0.0, "general_delta": general, "general_delta_per_task": {"g": general},
            "per_task_forgetting": [forgetting], "stages_completed": 1 if joint else stages,
            "num_tasks": 2, "order": TASKS, "general_suite": GENERAL}


RFT_COMPUTE = {"optimizer_steps": 8, "generated_tokens": 12000, "train_seconds": 30.0,
               "rollout_seconds": 20.0, "wall_seconds": 40.0}
SFT_COMPUTE = {"optimizer_steps": 20, "generated_tokens": 0, "train_seconds": 5.0, "wall_seconds": 6.0}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A multirun: 2 paradigms x 2 lrs x 2 seeds, one joint run, one failed run that trained a
    stage, one failed before any stage (no metrics.json), and a decoy under wandb/."""
    root = tmp_path_factory.mktemp("report") / "sweep"
    num = 0
    for (paradigm, lr), seeds in GRID.items():
        for seed, values in enumerate(seeds):
            write_run(root / str(num), config(paradigm, lr, seed), metrics=metrics(*values),
                      compute=RFT_COMPUTE if paradigm == "rft" else SFT_COMPUTE)
            num += 1
    write_run(root / "8", config("sft", 1e-4, 0, schedule="joint"), metrics=metrics(0.55, 0.0, 0.45, -0.15, joint=True))
    write_run(root / "9", config("sft", 1e-4, 3), status="failed")  # nothing trained: skipped
    write_run(root / "10", config("sft", 1e-4, 2), status="failed", metrics=metrics(0.9, 0.0, 0.9, 0.0, stages=1))
    write_run(root / "wandb" / "decoy", config(), metrics=metrics(0.1, 0.1, 0.1, 0.1))
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


@pytest.fixture(scope="module")
def cli_report(sweep):
    exe = Path(sys.executable).with_name("cpt-bench-report")
    res = subprocess.run([str(exe), str(sweep)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res


def read_csv(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {row["run_dir"]: row for row in csv.DictReader(f)}


SFT_HI = "paradigm=sft learning_rate=0.0001 schedule=sequential"


# --- finding runs ----------------------------------------------------------------------------


def test_find_runs_walks_sweeps_skips_unfinished_stages_and_wandb(sweep, caplog):
    with caplog.at_level(logging.WARNING, logger="cpt_bench.report"):
        runs = find_runs([sweep])
    assert [p.name for p in runs] == [str(i) for i in (0, 1, 2, 3, 4, 5, 6, 7, 8, 10)]  # natural order
    assert "9" in caplog.text and "no metrics.json" in caplog.text
    assert find_runs([sweep / "3"]) == [(sweep / "3").resolve()]  # a run dir itself


# --- labels ----------------------------------------------------------------------------------


def test_variant_labels_name_only_what_differs():
    # nothing but the seed differs: the paradigm's name
    assert variant_labels([config(seed=0), config(seed=1)]) == ["sft", "sft"]
    # kl_coef varies among rft runs; sft has none; model.cache_dir and logger never count
    cfgs = [config("sft"), config("rft"), config("rft")]
    cfgs[1]["paradigm"]["kl_coef"], cfgs[2]["paradigm"]["kl_coef"] = 0.0, 0.05
    assert variant_labels(cfgs) == ["paradigm=sft", "paradigm=rft kl_coef=0.0", "paradigm=rft kl_coef=0.05"]
    # a leaf that would be ambiguous keeps its group; group choices read like overrides
    a, b = config(), config()
    b["order"].update(seed=3, tasks=["b", "a"])
    b["filter"]["name"], b["cot"] = "rif", True
    assert variant_labels([a, b])[1] == "order.tasks=[b,a] order.seed=3 cot=true filter=rif"


def test_grid_labels(sweep):
    runs = report.load_runs([sweep])
    labels = {r.path.name: r.variant for r in runs}
    assert labels["0"] == labels["1"] == labels["10"] == SFT_HI
    assert labels["6"] == "paradigm=rft learning_rate=1e-05 schedule=sequential"
    assert labels["8"] == "paradigm=sft learning_rate=0.0001 schedule=joint"
    assert not any("kl_coef" in v or "cache_dir" in v or "seed" in v for v in labels.values())


# --- numbers ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_csv_one_row_per_run(sweep, cli_report):
    rows = read_csv(sweep / "report.csv")
    assert set(rows) == {str(i) for i in (0, 1, 2, 3, 4, 5, 6, 7, 8, 10)}
    r = rows["1"]
    assert (r["variant"], r["paradigm"], r["seed"], r["status"], float(r["lr"])) == (
        SFT_HI, "sft", "1", "finished", 1e-4)
    assert float(r["final_avg_acc"]) == 0.40 and float(r["forgetting"]) == 0.50 and float(r["bwt"]) == -0.50
    # run.json's compute block, read as a `Compute` record (SFT generates no tokens)
    assert (r["optimizer_steps"], r["generated_tokens"], r["train_seconds"], r["wall_seconds"]) == (
        "20", "0", "5.0", "6.0")
    assert rows["4"]["generated_tokens"] == "12000" and rows["4"]["wall_seconds"] == "40.0"
    assert rows["10"]["status"] == "failed"
    assert rows["8"]["forgetting"] == "" and rows["8"]["schedule"] == "joint"


@pytest.mark.slow
def test_report_md_means_and_spread(sweep, cli_report):
    md = (sweep / "report.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| {SFT_HI} |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    # the failed run (seed 2) is listed but not averaged; sample std of two values 10 pts apart = 7.1;
    # the 95 % t-interval of two runs' mean is mean ± t(0.975, 1) x std / sqrt(2), 12.7 standard errors
    from scipy.stats import t

    def cell(mean: float, std: float, signed: bool = True) -> str:
        half, f = t.ppf(0.975, 1) * std / 2 ** 0.5, (lambda v: f"{v:+.1f}" if signed else f"{v:.1f}")
        lo, hi = mean - half, mean + half
        if signed:
            return f"{f(mean)} ± {std:.1f} [{f(lo)}, {f(hi)}]"
        # an accuracy's interval is cut to [0, 100] % and marked † where it reaches beyond
        cut = (max(lo, 0.0), min(hi, 100.0))
        return f"{f(mean)} ± {std:.1f} [{f(cut[0])}, {f(cut[1])}]" + "†" * (cut != (lo, hi))

    std = 10 / 2 ** 0.5
    assert cells[1:8] == ["2 (+1 unfinished)", cell(35, std, False), cell(45, std), cell(-45, std),
                          cell(80, 2 * std, False), cell(55, std), cell(-25, std)]
    assert cells[8:] == ["20", "0", "6.0 s"]
    joint = next(ln for ln in md.splitlines() if ln.startswith("| paradigm=sft learning_rate=0.0001 schedule=joint |"))
    assert "| 1 | 55.0 ± - | n/a | n/a |" in joint
    rft = next(ln for ln in md.splitlines() if ln.startswith("| paradigm=rft learning_rate=0.0001 "))
    assert "| 8 | 12.0k | 40.0 s |" in rft
    assert "forgetting positive = accuracy lost" in md and "BWT negative = forgetting" in md
    assert "negative = harm" in md
    assert "| 10 | paradigm=sft learning_rate=0.0001 schedule=sequential | 2 | failed | 1/2 |" in md
    for png in ("report_heatmaps.png", "report_curves.png", "report_pareto.png"):
        assert f"]({png})" in md and (sweep / png).stat().st_size > 1000
    assert cli_report.stdout.startswith("| variant | n |") and "35.0 ± 7.1" in cli_report.stdout


def test_stage_curve_means_over_seeds():
    def rec(per_stage, schedule="sequential", final=None):
        m = {"avg_acc_per_stage": per_stage, "final_avg_acc": final, "num_tasks": 3}
        return RunRecord(Path("x"), "finished", {"schedule": schedule}, 0, m, [], ["a", "b", "c"], [], {})

    curve = stage_curve([rec([0.8, 0.6]), rec([0.6, 0.4, 0.3])])
    assert [(t, round(m, 6)) for t, m, _ in curve] == [(1, 0.7), (2, 0.5), (3, 0.3)]
    assert curve[0][2] == pytest.approx(0.141421, abs=1e-6) and curve[2][2] is None
    assert stage_curve([rec([0.5], schedule="joint", final=0.5)]) == [(3, 0.5, None)]  # all tasks seen


# --- frontier and matched gain -----------------------------------------------------------------


def test_pareto_frontier():
    pts = [(0.10, 0.05), (0.20, 0.10), (0.15, 0.20), (0.30, 0.30), (0.05, 0.01), (0.25, 0.35)]
    # (0.15, 0.20) loses to (0.20, 0.10); (0.25, 0.35) to (0.30, 0.30)
    assert pareto_frontier(pts) == [4, 0, 1, 3]
    # higher y is better (general change): only points no other beats in both gain and y
    assert pareto_frontier([(0.1, -0.1), (0.2, -0.3), (0.15, -0.2), (0.05, -0.2)], minimize_y=False) == [0, 2, 1]
    assert pareto_frontier([]) == []


def test_matched_gain_interpolates_along_each_frontier():
    sft = [(0.2, 0.1), (0.4, 0.3), (0.6, 0.5)]
    rft = [(0.1, 0.0), (0.3, 0.05), (0.5, 0.1), (0.2, 0.2)]  # (0.2, 0.2) is off rft's frontier
    rows = matched_gain(sft, rft, n=4)
    # overlap [0.2, 0.5]; sft 0.1 -> 0.4 linearly, rft 0.025 -> 0.1 along (0.1,0)-(0.3,0.05)-(0.5,0.1)
    expected = [(0.2, 0.1, 0.025, 0.075), (0.3, 0.2, 0.05, 0.15), (0.4, 0.3, 0.075, 0.225), (0.5, 0.4, 0.1, 0.3)]
    assert [tuple(round(v, 9) for v in row) for row in rows] == expected
    assert matched_gain(sft, [(0.7, 0.1), (0.9, 0.2)]) == []  # disjoint gain ranges
    assert matched_gain([(0.3, 0.2)], rft, n=4) == [(0.3, 0.2, 0.05, pytest.approx(0.15))]  # one shared gain
    # higher-is-better y: frontier of (0.1,-0.1),(0.3,-0.2); at 0.2 -> -0.15
    assert matched_gain([(0.1, -0.1), (0.3, -0.2)], [(0.2, 0.0)], minimize_y=False) == [
        (0.2, pytest.approx(-0.15), 0.0, pytest.approx(-0.15))]


@pytest.mark.slow
def test_matched_gain_section_in_report(sweep, cli_report):
    md = (sweep / "report.md").read_text()
    section = md.split("## Matched gain")[1].split("## Figures")[0]
    # frontiers of the variants' (gain, forgetting) means: sft (0.25, 0.15)-(0.55, 0.45), rft (0.11, 0.01)-
    # (0.35, 0.06); overlap [0.25, 0.35]; rft at 0.25: 0.01 + 0.05 * 0.14 / 0.24 = 0.0392
    assert "### forgetting: sft vs rft" in section
    assert "sft: 4 runs in 2 variants; rft: 4 runs in 2 variants; 1 base model." in section
    assert "| +25.0 | +15.0 | +3.9 | +11.1 |" in section and "| +35.0 | +25.0 | +6.0 | +19.0 |" in section
    # two runs a variant: a quarter of the resamples miss the overlap, so no interval and no verdict
    assert "| 75 % | not estimable (75 % of resamples reach a common gain) |" in section
    assert "### general change: sft vs rft" in section


def test_matched_gain_reports_disjoint_ranges(tmp_path):
    write_run(tmp_path / "0", config("sft"), metrics=metrics(0.3, 0.4, 0.6, -0.3))
    write_run(tmp_path / "1", config("rft"), metrics=metrics(0.5, 0.01, 0.05, 0.0))
    section = report.matched_gain_section(report.load_runs([tmp_path]))
    assert "gain ranges do not overlap (sft: +60.0 over 1 variant; rft: +5.0 over 1 variant)" in section


def test_frontiers_apart_still_compare_the_variants_nearest_in_gain(tmp_path):
    """SFT's larger rate beats its smaller one on gain and forgetting, so SFT's frontier is one point
    (+22); GRPO's gain (+20) lies inside SFT's variants' range, where SFT's frontier end stands for
    it (SFT reaches +20 forgetting no more than at +22). GRPO's one variant moves with every
    resample, so the one common gain is not estimable; the report still compares the two variants
    nearest in gain, with Welch's interval."""
    for seed, (lo, hi, rl) in enumerate([(0.13, 0.22, 0.19), (0.14, 0.23, 0.21), (0.135, 0.21, 0.20)]):
        write_run(tmp_path / f"s{seed}", config("sft", lr=2e-6, seed=seed), metrics=metrics(0.5, 0.01, lo, 0.0))
        write_run(tmp_path / f"t{seed}", config("sft", lr=5e-6, seed=seed), metrics=metrics(0.6, 0.0, hi, 0.02))
        write_run(tmp_path / f"r{seed}", config("rft", lr=1e-5, seed=seed),
                  metrics=metrics(0.55, 0.01 * seed, rl, -0.1))
    section = report.matched_gain_section(report.load_runs([tmp_path]))
    forgetting = section.split("### forgetting: sft vs rft")[1].split("###")[0]
    assert ("| +20.0 | +0.0 | +1.0 | -1.0 |  | 26 % | not estimable (26 % of resamples reach a common gain) |"
            in forgetting)
    # sft at 5e-6 (+22.0) is nearer to rft (+20.0) than sft at 2e-6 (+13.5); forgetting 0 vs 0, 1, 2 points
    assert ("Directly, the variants nearest in gain (sft `paradigm=sft learning_rate=5e-06` at +22.0, rft "
            in forgetting)
    assert "forgetting difference -1.0 [" in forgetting
    assert ("not distinguishable (why: ±2.5 pts at 3 seeds a variant covers 0; to decide: 4 seeds a variant for "
            "±2.0 pts)." in forgetting)


# --- CLI and callback ------------------------------------------------------------------------


@pytest.mark.slow  # over a second of CPU: the fast tier stays the one-minute loop
def test_cli_writes_every_file_into_out(sweep, tmp_path):
    out = tmp_path / "out"
    assert main([str(sweep / "0"), str(sweep / "4"), "--out", str(out)]) == 0
    # every file but the within-stage figure: these runs have no curves.csv (no eval.inner_points)
    assert sorted(p.name for p in out.iterdir()) == sorted(v for k, v in report.FILES.items() if k != "within_stage")
    assert set(read_csv(out / "report.csv")) == {str(sweep / "0"), str(sweep / "4")}  # outside OUT: absolute


@pytest.mark.slow  # over a second of CPU: the fast tier stays the one-minute loop
def test_a_report_csv_re_reports_the_same_statistics_without_the_run_directories(sweep, tmp_path):
    """A study whose run directories are gone is re-analysed from its report.csv: the same
    per-variant table and matched-gain comparison, only the matrix figures are missing."""
    first, again = tmp_path / "first", tmp_path / "again"
    assert main([str(sweep), "--out", str(first)]) == 0
    assert main([str(first / "report.csv"), "--out", str(again)]) == 0
    from_dirs, from_csv = report.load_runs([sweep]), report.load_report_csv(first / "report.csv")
    assert [r.variant for r in from_csv] == [r.variant for r in from_dirs]
    assert report.variant_table(report.summarize(from_csv)) == report.variant_table(report.summarize(from_dirs))
    assert report.matched_gain_section(from_csv) == report.matched_gain_section(from_dirs)
    assert sorted(p.name for p in again.iterdir()) == ["report.csv", "report.md", "report_compute.png",
                                                       "report_pareto.png"]
    assert read_csv(again / "report.csv").keys() == read_csv(first / "report.csv").keys()


def test_a_report_csv_is_read_alone_and_a_wrong_one_fails_in_one_line(sweep, tmp_path, capsys):
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit):
        main([str(tmp_path / "other.csv")])  # no --out: would overwrite its own folder
    assert main([str(tmp_path / "other.csv"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("cpt-bench-report: error:") and "not a report.csv" in err


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "no such directory"),
    (["{empty}"], "no run with results"),
])
def test_cli_bad_paths_fail_with_one_line(tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    argv = [a.format(missing=tmp_path / "nope", empty=tmp_path / "empty") for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cpt-bench-report: error:") and message in err and "\n" not in err


@pytest.mark.slow
def test_cli_several_dirs_need_out(sweep):
    exe = Path(sys.executable).with_name("cpt-bench-report")
    res = subprocess.run([str(exe), str(sweep / "0"), str(sweep / "1")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--out is required" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([str(exe), str(sweep / "nope")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0


@pytest.mark.slow  # over a second of CPU: the fast tier stays the one-minute loop
def test_callback_writes_into_the_sweep_dir_and_never_raises(tmp_path, caplog, capsys):
    write_run(tmp_path / "sweep" / "0", config(), metrics=metrics(0.3, 0.4, 0.6, -0.3))
    ReportCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}}))
    assert (tmp_path / "sweep" / "report.md").exists() and (tmp_path / "sweep" / "report_pareto.png").exists()
    out = capsys.readouterr().out  # the sweep's table on the terminal, then where the report is
    assert "| variant | n | final avg acc (%) |" in out and f"Report: {tmp_path / 'sweep' / 'report.md'}" in out
    with caplog.at_level(logging.WARNING, logger="cpt_bench.report"):
        ReportCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "nope")}}}))
    assert "report not written" in caplog.text


def drift_run(paradigm: str, rows: list[list[float]], general: list[float], diagnostics: dict[int, dict],
              name: str | None = None) -> RunRecord:
    order, gen = ["a", "b", "c"], ["g"]
    matrix = [{"stage": s, "trained_task": "" if s == 0 else order[s - 1], "eval_task": t, "accuracy": acc, "n": 10}
              for s, row in enumerate(rows) for t, acc in zip([*order, *gen], [*row, general[s]])]
    return RunRecord(Path(name or paradigm), "finished", config(paradigm), 0, {}, matrix, order, gen, None,
                     diagnostics={stage: Diagnostics.from_json(d) for stage, d in diagnostics.items()})


def test_stage_points_take_each_stages_metrics_and_drift():
    from cpt_bench.report.drift import stage_points

    run = drift_run("sft", [[0.5, 0.4, 0.3], [0.9, 0.4, 0.3], [0.6, 0.8, 0.3], [0.5, 0.6, 0.9]], [0.8, 0.7, 0.6, 0.4],
                    {1: {"kl_to_base_task": 1.0, "param_drift": 2.0}, 2: {"kl_to_base_task": 3.0},
                     3: {"kl_to_base_task": 5.0, "kl_to_base_general": 0.5}})
    points = stage_points(run)
    assert [p.stage for p in points] == [1, 2, 3]
    assert "forgetting" not in points[0].outcomes  # nothing trained before stage 1
    assert points[1].outcomes["forgetting"] == pytest.approx(0.9 - 0.6)
    assert points[2].outcomes["forgetting"] == pytest.approx(((0.9 - 0.5) + (0.8 - 0.6)) / 2)
    assert [p.outcomes["general_delta"] for p in points] == pytest.approx([-0.1, -0.2, -0.4])
    assert points[0].predictors == {"kl_to_base_task": 1.0, "param_drift": 2.0}


@pytest.mark.slow  # over a second of CPU: the fast tier stays the one-minute loop
def test_a_perfect_linear_relation_fits_with_r2_one_and_the_report_shows_it(tmp_path):
    from cpt_bench.report import write_report
    from cpt_bench.report.drift import correlations, fit, stage_points

    line = fit([1.0, 2.0, 3.0, 4.0], [0.1, 0.3, 0.5, 0.7])
    assert line.r2 == pytest.approx(1.0) and line.slope == pytest.approx(0.2) and line.n == 4
    assert fit([1.0, 1.0, 1.0], [0.1, 0.2, 0.3]) is None  # no spread in x: no line
    curved = fit([1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 0.5, 0.7, 0.75, 0.76])  # saturating: monotone, not linear
    assert curved.rho == pytest.approx(1.0) and curved.r2 < 0.9
    runs = [drift_run(p, [[0.5, 0.4, 0.3], [0.9, 0.4, 0.3], [0.9 - f, 0.8, 0.3], [0.9 - 2 * f, 0.8 - f, 0.9]],
                      [0.8, 0.8, 0.8, 0.8], {2: {"kl_to_base_task": 10 * f}, 3: {"kl_to_base_task": 15 * f}})
            for p, f in [("sft", 0.3), ("rft", 0.02), ("sft", 0.2)]]
    points = [p for run in runs for p in stage_points(run)]
    fits = correlations(points)
    assert fits[("kl_to_base_task", "forgetting")].r2 == pytest.approx(1.0)  # forgetting = KL / 10 throughout
    assert fits[("param_drift", "forgetting")] is None
    for run in runs:
        run.variant = run.paradigm
    paths = write_report(runs, tmp_path)
    assert paths["drift"].exists()
    text = paths["md"].read_text()
    assert "## Forgetting against drift" in text
    # two of the three runs share a path (one run to the bootstrap): no interval over 2 runs
    assert "| forgetting | reverse KL (trained task) | 6 | +1.00 | 1.00 | none (2 runs) | +" in text


def predictor_sweep(spread: dict[str, float], runs: int = 8, seed: int = 1) -> list[RunRecord]:
    """A sweep of `runs` three-task runs whose forgetting at stages 2 and 3 is f and 1.5 f (f per
    run), each predictor 10 x forgetting times noise of relative size `spread[predictor]`, and a
    general harm of 0.5 g, g, 1.5 g at stages 1-3 (g per run, unrelated to f) that the forward KL on
    the general suite's prompts tracks exactly."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(runs):
        f, g = 0.04 * (i + 1), 0.03 * ((5 * i) % runs + 1)
        diagnostics = {}
        for stage, forgot in ((1, 0.0), (2, f), (3, 1.5 * f)):
            d = {k: (10 * forgot + 0.2) * (1 + rng.gauss(0, width)) for k, width in spread.items()}
            d["forward_kl_general"] = 1.5 * g * stage + 0.1
            diagnostics[stage] = d
        rows = [[0.5, 0.4, 0.3], [0.9, 0.4, 0.3], [0.9 - f, 0.8, 0.3], [0.9 - 2 * f, 0.8 - f, 0.9]]
        general = [0.8, *(0.8 - 0.5 * g * stage for stage in (1, 2, 3))]
        out.append(drift_run("sft" if i % 2 else "rft", rows, general, diagnostics, name=f"run{i}"))
    return out


def test_r2_intervals_resample_whole_runs_and_compare_every_predictor_on_the_same_points():
    from cpt_bench.report.drift import compare_predictors, r2_intervals, stage_points

    runs = predictor_sweep({"forward_kl_task": 0.02, "kl_to_base_task": 0.6, "param_drift": 1.0})
    points = [p for run in runs for p in stage_points(run)]
    forgetting = [p for p in points if "forgetting" in p.outcomes]
    fits = r2_intervals(forgetting, ["forward_kl_task", "kl_to_base_task", "param_drift"], "forgetting")
    assert {k: (r.n, r.runs) for k, r in fits.items()} == {k: (16, 8) for k in fits}  # 2 points a run
    for r2 in fits.values():
        assert r2.ci.low <= r2.r2 <= r2.ci.high and r2.ci.n == 8  # the interval's unit is the run
    assert fits["forward_kl_task"].ci.low > fits["kl_to_base_task"].ci.high
    assert r2_intervals(forgetting, ["forward_kl_task"], "forgetting") == {"forward_kl_task": fits["forward_kl_task"]}
    two_runs = [p for p in forgetting if p.run in ("run0", "run1")]
    (few,) = r2_intervals(two_runs, ["kl_to_base_task"], "forgetting").values()
    assert few.ci is None and few.why == "2 runs"  # four points, but two runs
    best = compare_predictors(points, "forgetting")
    assert best.best == "forward_kl_task" and best.distinguishable and set(best.r2) == {
        "forward_kl_task", "forward_kl_general", "kl_to_base_task", "param_drift"}
    assert compare_predictors(points, "general_delta").best == "forward_kl_general"  # an exact line there
    # the comparison uses the points where every predictor was measured: an older run without the
    # forward KL does not enter it, though its reverse KL enters the reverse KL's own fit
    old = predictor_sweep({"kl_to_base_task": 0.6, "param_drift": 1.0}, runs=1, seed=2)[0]
    old.path = Path("old-run")
    for diag in old.diagnostics.values():
        diag.forward_kl_general = None
    with_old = points + stage_points(old)
    assert compare_predictors(with_old, "forgetting").r2["kl_to_base_task"].n == 16
    assert r2_intervals([p for p in with_old if "forgetting" in p.outcomes and "kl_to_base_task" in p.predictors],
                        ["kl_to_base_task"], "forgetting")["kl_to_base_task"].n == 18


def test_the_drift_section_names_the_best_predictor_or_says_none_is_distinguishable():
    from cpt_bench.report.drift import stage_points
    from cpt_bench.report.render import drift_section

    clear = predictor_sweep({"forward_kl_task": 0.02, "kl_to_base_task": 0.6, "param_drift": 1.0})
    close = predictor_sweep({"forward_kl_task": 0.3, "kl_to_base_task": 0.3, "param_drift": 0.3}, seed=3)
    texts = {name: drift_section([p for run in runs for p in stage_points(run)])
             for name, runs in (("clear", clear), ("close", close))}
    assert "| forgetting | forward KL (trained task) | 16 | +" in texts["clear"]
    assert "R² 95 % interval" in texts["clear"] and "bootstrap over runs" in texts["clear"]
    line = next(x for x in texts["clear"].splitlines() if x.startswith("- forgetting (16 points of 8 runs)"))
    assert "forward KL (trained task) has the highest R²" in line
    assert "**forward KL (trained task) predicts best**" in line
    line = next(x for x in texts["close"].splitlines() if x.startswith("- forgetting (16 points of 8 runs)"))
    assert "its interval overlaps" in line and "**no predictor is distinguishable**" in line
    # a predictor that fits every resample exactly gets no zero-width interval
    assert "| general change | forward KL (general suite) | 24 | -1.00 | 1.00 | none (every resample gives 1.00) |" in (
        texts["clear"])


def test_matched_compute_interpolates_each_paradigm_over_the_common_budget():
    from cpt_bench.report.summary import matched_compute

    sft = [(100.0, 0.10), (200.0, 0.30), (300.0, 0.50), (300.0, 0.20)]  # (steps, gain)
    rft = [(150.0, 0.05), (250.0, 0.15), (400.0, 0.40)]
    rows = matched_compute(sft, rft, n=3)
    # overlap 150..300 steps; sft's two runs at 300 steps count as their mean, .35
    assert [c for c, *_ in rows] == pytest.approx([150.0, 225.0, 300.0])
    assert [ya for _, ya, _, _ in rows] == pytest.approx([0.2, 0.3125, 0.35])
    assert [yb for _, _, yb, _ in rows] == pytest.approx([0.05, 0.125, 0.15 + 0.25 / 3])
    assert matched_compute([(1.0, 0.1)], [(5.0, 0.1), (9.0, 0.2)]) == []  # no common budget


@pytest.mark.slow  # over a second of CPU: the fast tier stays the one-minute loop
def test_the_report_compares_paradigms_at_equal_compute(tmp_path):
    from cpt_bench.outputs.records import Compute
    from cpt_bench.report import write_report

    runs = []
    for paradigm, steps, gain, forgetting in [("sft", 100, 0.2, 0.3), ("sft", 300, 0.5, 0.6), ("rft", 200, 0.1, 0.05),
                                              ("rft", 400, 0.3, 0.1)]:
        matrix = [{"stage": s, "trained_task": ["", "a"][s], "eval_task": "a", "accuracy": 0.5, "n": 10}
                  for s in (0, 1)]
        runs.append(RunRecord(Path(f"{paradigm}{steps}"), "finished", config(paradigm), 0,
                              {"gain": gain, "forgetting": forgetting}, matrix, ["a"], [],
                              Compute(optimizer_steps=steps, wall_seconds=10.0 * steps), variant=paradigm))
    paths = write_report(runs, tmp_path)
    text = paths["md"].read_text()
    assert "### gain at equal optimizer steps: sft vs rft" in text
    assert "| 200 | +35.0 | +10.0 | +25.0 |" in text  # sft's frontier at 200 steps: half way from .2 to .5
    assert "| 300 | +60.0 | +7.5 | +52.5 |" in text  # forgetting at 300 steps
    assert "### forgetting at equal processed tokens" not in text  # no run recorded tokens: no comparison
    assert paths["compute"].exists()
    one = write_report([r for r in runs if r.paradigm == "sft"], tmp_path / "one")["md"].read_text()
    assert "## Matched compute" not in one  # one paradigm: nothing to match, and no empty section


def test_a_varying_setting_besides_the_learning_rate_makes_a_series_of_its_own(tmp_path):
    """GRPO with and without KL along one learning-rate grid (the SmolLM2 study): each KL
    setting is its own frontier, compared with SFT's and with the other's; the gain-only rule
    picks a learning rate in each."""
    i = 0
    for (paradigm, lr), seeds in GRID.items():
        for kl in ((0.0, 0.01) if paradigm == "rft" else (None,)):
            for seed, (final, forgetting, gain, general) in enumerate(seeds):
                cfg = config(paradigm, lr, seed)
                if kl is not None:
                    cfg["paradigm"]["kl_coef"] = kl
                write_run(tmp_path / str(i), cfg, metrics=metrics(final, forgetting + (kl or 0), gain, general))
                i += 1
    runs = report.load_runs([tmp_path])
    assert {r.family for r in runs} == {"sft", "rft kl_coef=0.0", "rft kl_coef=0.01"}
    section = report.matched_gain_section(runs)
    for pair in ("sft vs rft kl_coef=0.0", "sft vs rft kl_coef=0.01", "rft kl_coef=0.0 vs rft kl_coef=0.01"):
        assert f"### forgetting: {pair}" in section
    assert "rft kl_coef=0.0: 4 runs in 2 variants; rft kl_coef=0.01: 4 runs in 2 variants" in section
