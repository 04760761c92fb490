"""A short real run through the CLI: the matrix, learning, the files, W&B, resume, sweeps."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import wandb

from cpt_bench.errors import ConfigError

from conftest import QUICK, compose_config, run_cli
from reference import check_reference
from wandb_offline import find_offline_runs, read_offline_run

pytestmark = pytest.mark.slow  # every test here builds the embedded base model and runs the CLI

TASKS, GENERAL = ["max", "shift"], ["copy", "last", "min"]


def read_matrix(run_dir):
    with open(run_dir / "matrix.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_matrix_has_every_stage_and_every_task(quick_run):
    run_dir, _ = quick_run
    rows = read_matrix(run_dir)
    assert list(rows[0]) == ["stage", "trained_task", "eval_task", "accuracy", "n"]
    assert len(rows) == 3 * (len(TASKS) + len(GENERAL))  # stages 0..2, untrained tasks included
    assert {(r["stage"], r["trained_task"]) for r in rows} == {("0", ""), ("1", "max"), ("2", "shift")}
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 and r["n"] == "50" for r in rows)


def read_flips(run_dir) -> dict[tuple[int, str, str], dict]:
    with open(run_dir / "flips.csv", newline="") as f:
        return {(int(r["stage"]), r["eval_task"], r["since"]): r for r in csv.DictReader(f)}


def recount_flips(run_dir) -> dict[tuple[int, str, str], tuple[int, int, int, int, int]]:
    """flips.csv's counts, recomputed here from the stages' eval records: (stage, task, since) ->
    (n, correct before, correct after, correct->wrong, wrong->correct); the items line up."""
    folders = sorted((run_dir / "stages").iterdir())
    scores = {}
    for stage, folder in enumerate(folders):
        for path in sorted((folder / "eval").glob("*.jsonl")):
            records = [json.loads(line) for line in path.read_text().splitlines()]
            scores[(stage, path.stem)] = [r["score"] == 1.0 for r in records]
            base = [json.loads(line) for line in (folders[0] / "eval" / path.name).read_text().splitlines()]
            assert [(r["prompt"], r["answer"]) for r in records] == [(r["prompt"], r["answer"]) for r in base]
    counts = {}
    for (stage, task), after in scores.items():
        for since, ref in (("previous", stage - 1), ("base", 0)):
            if stage > 0:
                before = scores[(ref, task)]
                counts[(stage, task, since)] = (
                    len(after), sum(before), sum(after), sum(b and not a for b, a in zip(before, after)),
                    sum(a and not b for b, a in zip(before, after)))
    return counts


def test_flips_csv_counts_each_items_change_in_the_eval_files(quick_run):
    run_dir, _ = quick_run
    rows = read_flips(run_dir)
    recounted = recount_flips(run_dir)
    assert set(rows) == set(recounted) == {(s, t, since) for s in (1, 2) for t in [*TASKS, *GENERAL]
                                           for since in ("previous", "base")}
    for key, row in rows.items():
        got = tuple(int(row[k]) for k in ("n", "correct_before", "correct_after", "correct_to_wrong",
                                          "wrong_to_correct"))
        assert got == recounted[key], key
        assert int(row["reference_stage"]) == (0 if key[2] == "base" else key[0] - 1)
        assert row["chance"] == row["lost_share_corrected"] == ""  # the toy tasks' answers are free-form
    # the counts agree with the matrix, and the run did flip items both ways
    acc = {(int(r["stage"]), r["eval_task"]): float(r["accuracy"]) for r in read_matrix(run_dir)}
    for (stage, task, _), row in rows.items():
        assert int(row["correct_after"]) == round(50 * acc[(stage, task)])
    assert sum(int(r["correct_to_wrong"]) for r in rows.values()) > 0
    assert sum(int(r["wrong_to_correct"]) for r in rows.values()) > 0
    lost = rows[(2, "max", "base")]
    assert float(lost["lost_share"]) == pytest.approx(int(lost["correct_to_wrong"]) / int(lost["correct_before"]),
                                                      abs=1e-6)


def test_pinned_reference_matrix(quick_run):
    """The fixed-seed quick run's matrix, byte for byte (tests/reference.py)."""
    check_reference("sft_quick", quick_run[0])


def test_training_a_task_raises_its_accuracy(quick_run):
    acc = {(int(r["stage"]), r["eval_task"]): float(r["accuracy"]) for r in read_matrix(quick_run[0])}
    assert acc[(1, "max")] >= acc[(0, "max")] + 0.15
    assert acc[(2, "shift")] >= acc[(1, "shift")] + 0.15


def test_metrics_json_matches_the_matrix(quick_run):
    run_dir, _ = quick_run
    m = json.loads((run_dir / "metrics.json").read_text())
    acc = {(int(r["stage"]), r["eval_task"]): float(r["accuracy"]) for r in read_matrix(run_dir)}
    for key in ["final_avg_acc", "avg_acc_per_stage", "plasticity", "gain", "bwt", "forgetting", "fwt",
                "general_delta"]:
        assert key in m
    assert m["final_avg_acc"] == pytest.approx((acc[(2, "max")] + acc[(2, "shift")]) / 2)
    assert m["bwt"] == pytest.approx(acc[(2, "max")] - acc[(1, "max")])
    assert m["general_delta"] == pytest.approx(sum(acc[(2, g)] - acc[(0, g)] for g in GENERAL) / 3)
    assert m["order"] == TASKS


def test_run_files(quick_run):
    run_dir, res = quick_run
    for name in ["run.json", "matrix.csv", "metrics.json", "heatmap.png", "curves.png", "summary.txt",
                 ".hydra/config.yaml"]:
        assert (run_dir / name).stat().st_size > 0, name
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["seed"] == 0 and info["stages_completed"] == 2
    assert info["versions"]["torch"].startswith("2.13.0") and info["versions"]["trl"]
    assert info["hardware"]["cpu_count"] >= 1
    assert info["timings"]["total_seconds"] > 0 and set(info["timings"]["stages"]) == {"0", "1", "2"}
    # every generation is kept with its score, and the scores make the matrix entry
    records = [json.loads(line) for line in (run_dir / "stages/01-max/eval/max.jsonl").read_text().splitlines()]
    assert len(records) == 50 and set(records[0]) == {"task", "prompt", "answer", "response", "extracted", "score",
                                                      "format_ok"}
    row = next(r for r in read_matrix(run_dir) if r["stage"] == "1" and r["eval_task"] == "max")
    assert float(row["accuracy"]) == pytest.approx(sum(r["score"] for r in records) / 50)
    # each stage leaves a loadable Hugging Face checkpoint
    assert (run_dir / "stages/02-shift/model/config.json").exists()
    assert (run_dir / "stages/02-shift/model/tokenizer.json").exists()
    # output drift in both directions (eval.kl_samples=64 by default), each with its standard error; the
    # base's draws for the forward one made once, at stage 1, for each trained task's prompts and the general suite's
    for stage in ("01-max", "02-shift"):
        diag = json.loads((run_dir / "stages" / stage / "stage.json").read_text())["diagnostics"]
        for key in ("kl_to_base_task", "kl_to_base_general", "forward_kl_task", "forward_kl_general"):
            assert diag[key] > 0 and diag[f"{key}_se"] > 0 and diag[f"{key}_per_token"] > 0, (stage, key)
        assert diag["forward_kl_seconds"] > 0 and diag["kl_to_base_seconds"] > 0
    assert len(list((run_dir / "stages/00-base/forward_kl").glob("*.json"))) == 3
    # the terminal ends with the summary table and states sign conventions
    assert "Accuracy matrix" in res.stdout and "negative = forgetting" in res.stdout
    assert "stage 2/2 done" in res.stderr + res.stdout


def test_wandb_offline_run_contents(quick_run):
    run_dir, _ = quick_run
    (path,) = find_offline_runs(run_dir / "wandb")
    run = read_offline_run(path)
    assert run.exit_code == 0
    assert run.config["paradigm"]["name"] == "sft" and run.config["order"]["tasks"] == TASKS
    assert {"glob_name": "cpt/*", "step_metric": "cpt/stage"}.items() <= {
        k: v for d in run.metric_defs for k, v in d.items() if d.get("glob_name") == "cpt/*"}.items()
    stage_rows = [r for r in run.history if "cpt/acc/max" in r]
    assert [r["cpt/stage"] for r in stage_rows] == [0, 1, 2]
    # per-stage diagnostics ride on the same axis; the drift from the base grows
    drift = [r["cpt/diag/param_drift"] for r in stage_rows[1:]]
    assert 0 < drift[0] < drift[1] and "cpt/diag/param_drift" not in stage_rows[0]
    assert all(r["cpt/diag/forward_kl_task"] > 0 and "cpt/diag/forward_kl_task_se" in r for r in stage_rows[1:])
    matrix = {(int(r["stage"]), r["eval_task"]): float(r["accuracy"]) for r in read_matrix(run_dir)}
    assert stage_rows[1]["cpt/acc/max"] == pytest.approx(matrix[(1, "max")])
    # each stage's flips ride on the same axis
    flips = read_flips(run_dir)
    for stage in (1, 2):
        for since in ("previous", "base"):
            assert stage_rows[stage][f"cpt/flips/min/lost_since_{since}"] == int(
                flips[(stage, "min", since)]["correct_to_wrong"])
            assert stage_rows[stage][f"cpt/flips/max/gained_since_{since}"] == int(
                flips[(stage, "max", since)]["wrong_to_correct"])
    assert not any(k.startswith("cpt/flips/") for k in stage_rows[0])
    # training metrics of both stages are kept on one increasing axis
    train = [r for r in run.history if "train/loss" in r]
    assert {r["train/stage"] for r in train} == {1, 2}
    steps = [r["train/step"] for r in train]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    final = json.loads((run_dir / "metrics.json").read_text())["final_avg_acc"]
    assert run.summary["final_avg_acc"] == pytest.approx(final)
    names = {p.name for p in run.media_files}
    assert any(n.startswith("cpt/matrix") or "matrix" in n for n in names) and any(n.endswith(".png") for n in names)
    table_file = next(p for p in run.media_files if p.suffix == ".json" and "matrix" in str(p))
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["stage", "trained_task", "eval_task", "accuracy", "n"] and len(table["data"]) == 15


def test_a_finished_run_is_never_overwritten(quick_run, model_cache):
    run_dir, _ = quick_run
    before = (run_dir / "matrix.csv").read_text()
    res = run_cli(*QUICK, f"model.cache_dir={model_cache}", f"hydra.run.dir={run_dir}")
    assert res.returncode == 2
    assert "already holds a finished run" in res.stderr.strip().splitlines()[-1]
    assert (run_dir / "matrix.csv").read_text() == before


def test_an_interrupted_run_resumes_after_its_last_complete_stage(quick_run, tmp_path):
    # a copy of the quick run, resumed by its own command line into the copy
    trained, res = quick_run
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    args = [a for a in res.args[1:] if not a.startswith("hydra.run.dir=")] + [f"hydra.run.dir={run_dir}"]
    # simulate a crash while stage 2's completion marker was written: it is half there, the run is not
    # finished; a damaged stage record is redone as after a kill (test_refusals: where it cannot be)
    stage2 = run_dir / "stages/02-shift/stage.json"
    stage2.write_text(stage2.read_text()[:40])
    (run_dir / "flips.csv").unlink()  # the resumed run recounts stage 1's flips from its eval files
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "status": "failed"}))
    stage1 = (run_dir / "stages/01-max/model/model.safetensors").stat().st_mtime_ns
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout + res.stderr  # Hydra logs to stdout
    assert "resuming" in out and "after stage 1" in out and "stage 2 is redone, as after a kill" in out
    assert (run_dir / "stages/01-max/model/model.safetensors").stat().st_mtime_ns == stage1  # not retrained
    resumed = json.loads((run_dir / "run.json").read_text())
    assert resumed["status"] == "finished"
    assert len(read_matrix(run_dir)) == 3 * 5
    flips = read_flips(run_dir)
    assert {k: v for k, v in flips.items() if k[0] == 1} == {k: v for k, v in read_flips(trained).items() if k[0] == 1}
    assert {k: tuple(int(v[c]) for c in ("n", "correct_before", "correct_after", "correct_to_wrong",
                                         "wrong_to_correct")) for k, v in flips.items()} == recount_flips(run_dir)
    # the compute of the stage that was not redone still counts
    steps = [json.loads((run_dir / f"stages/{d}/stage.json").read_text())["train"]["optimizer_steps"]
             for d in ("01-max", "02-shift")]
    assert resumed["compute"]["optimizer_steps"] == sum(steps) > steps[1]
    # stage 2 trained again; its inner points, already in curves.csv, were skipped: the same curves
    assert (run_dir / "curves.csv").read_text() == (trained / "curves.csv").read_text()
    assert json.loads((run_dir / "stages/02-shift/stage.json").read_text())["timings"]["inner_eval_seconds"] == 0
    # a different config may not resume into the same directory
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "status": "failed"}))
    res = run_cli(*args, "seed=7")
    assert res.returncode == 2 and "different config" in res.stderr


def test_multirun_runs_each_sequence_in_its_own_directory(model_cache, tmp_path):
    res = run_cli("-m", "seed=1,2", "order=default,reverse", "benchmark.tasks=[max,shift]", "benchmark.general=[last]",
                  "benchmark.test_size=20", "benchmark.train_size=32", "paradigm.epochs=1",
                  f"model.cache_dir={model_cache}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert res.returncode == 0, res.stderr[-3000:]
    runs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and (p / "run.json").exists())
    assert len(runs) == 4
    seen = set()
    groups = set()
    for run_dir in runs:
        info = json.loads((run_dir / "run.json").read_text())
        assert info["status"] == "finished"
        seen.add((info["seed"], tuple(info["order"])))
        assert len(read_matrix(run_dir)) == 3 * 3
        (path,) = find_offline_runs(run_dir / "wandb")
        offline = read_offline_run(path)
        assert offline.exit_code == 0
        groups.add(offline.group)
    assert seen == {(s, o) for s in (1, 2) for o in (("max", "shift"), ("shift", "max"))}
    assert len(groups) == 1 and None not in groups  # one W&B group per sweep
    # the sweep ends by writing its comparison report into the sweep directory
    sweep = tmp_path / "sweep"
    report_rows = list(csv.DictReader((sweep / "report.csv").read_text().splitlines()))
    assert len(report_rows) == 4 and {r["seed"] for r in report_rows} == {"1", "2"}
    assert "order" in (sweep / "report.md").read_text() and (sweep / "report_pareto.png").exists()


def test_a_failing_stage_keeps_finished_stages_and_closes_wandb(model_cache, tmp_path, monkeypatch):
    """In-process: the paradigm raises in stage 2; stage 0-1 results and the W&B run survive."""
    from hydra import compose, initialize_config_module

    from cpt_bench.configstore import register_configs
    from cpt_bench.paradigms.sft import SFT
    from cpt_bench.run import controller as continual

    register_configs()
    with initialize_config_module(config_module="cpt_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=[*QUICK, f"model.cache_dir={model_cache}"])
    real = SFT.train_stage

    def flaky(self, model, tokenizer, examples, ctx):
        if ctx.stage == 2:
            raise RuntimeError("simulated out-of-memory")
        return real(self, model, tokenizer, examples, ctx)

    monkeypatch.setattr(SFT, "train_stage", flaky)
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated"):
        continual.Run(cfg, run_dir).execute()
    wandb.teardown()  # flush the offline run file before reading it
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "failed" and "simulated out-of-memory" in info["error"]
    assert {r["stage"] for r in read_matrix(run_dir)} == {"0", "1"}
    assert (run_dir / "heatmap.png").exists()
    (path,) = find_offline_runs(run_dir / "wandb")
    assert read_offline_run(path).exit_code == 1


def test_checkpoint_space_counts_what_is_held_at_once():
    from cpt_bench.choices import KeepCheckpoints
    from cpt_bench.run.resume import checkpoint_space

    assert checkpoint_space(100, 7, KeepCheckpoints.all) == 700
    assert checkpoint_space(100, 7, KeepCheckpoints.last) == 200  # the new one before the old one goes
    assert checkpoint_space(100, 7, KeepCheckpoints.none) == 200
    assert checkpoint_space(100, 1, KeepCheckpoints.last) == 100
    assert checkpoint_space(100, 7, KeepCheckpoints.last, inner_points=3) == 500  # one stage's snapshots too
    assert checkpoint_space(100, 0, KeepCheckpoints.last, inner_points=3) == 0


def test_a_run_that_cannot_fit_its_checkpoints_refuses_to_start(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from cpt_bench.run.controller import Run

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))  # 1 MB free
    cfg = compose_config(*QUICK, "logger=none")
    with pytest.raises(ConfigError, match=r"not enough disk .* 2 stage checkpoints of about 2.5 MiB with "
                                          r"checkpoint.keep=all need about 5.0 MiB, 1.0 MiB are free"):
        Run(cfg, tmp_path / "run").execute()
    assert not (tmp_path / "run" / "stages").exists()  # nothing was evaluated


def test_checkpoints_trained_elsewhere_give_back_the_trained_runs_matrix(quick_run, model_cache, tmp_path):
    """A finished run's stage checkpoints, handed back as if trained by another framework
    (schedule=evaluate), reproduce its matrix exactly, with drift diagnostics and no training."""
    trained, _ = quick_run
    checkpoints = [trained / "stages" / "01-max" / "model", trained / "stages" / "02-shift" / "model"]
    run_dir = tmp_path / "eval"
    res = run_cli(*QUICK, "schedule=evaluate", f"checkpoints=[{checkpoints[0]},{checkpoints[1]}]", "logger=none",
                  f"model.cache_dir={model_cache}", f"hydra.run.dir={run_dir}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (run_dir / "matrix.csv").read_text() == (trained / "matrix.csv").read_text()
    assert (run_dir / "flips.csv").read_text() == (trained / "flips.csv").read_text()
    ours, theirs = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, trained))
    for key in ("final_avg_acc", "gain", "forgetting", "bwt", "general_delta"):
        assert ours[key] == theirs[key], key
    for stage, path in zip(["01-max", "02-shift"], checkpoints):
        record = json.loads((run_dir / "stages" / stage / "stage.json").read_text())
        theirs = json.loads((trained / "stages" / stage / "stage.json").read_text())
        assert record["model"] == str(path) and "train" not in record
        assert record["diagnostics"]["param_drift"] == pytest.approx(theirs["diagnostics"]["param_drift"])
        assert not (run_dir / "stages" / stage / "model").exists()  # nothing trained, nothing saved


def test_replay_trains_each_stage_with_earlier_items_and_records_them(model_cache, tmp_path):
    run_dir = tmp_path / "run"
    res = run_cli(*QUICK, "replay.fraction=0.2", "logger=none", f"model.cache_dir={model_cache}",
                  f"hydra.run.dir={run_dir}")
    assert res.returncode == 0, res.stderr[-3000:]
    first, second = (json.loads((run_dir / "stages" / s / "stage.json").read_text())["train"]
                     for s in ("01-max", "02-shift"))
    assert first["replayed"] == 0 and first["items"] == 256
    assert second["replayed"] == 64 and second["items"] == 256 + 64  # 64 of 320 = 20 %
    lines = (run_dir / "stages" / "02-shift" / "replay.jsonl").read_text().splitlines()
    replayed = [json.loads(line) for line in lines]
    assert len(replayed) == 64 and {r["task"] for r in replayed} == {"max"}
    assert not (run_dir / "stages" / "01-max" / "replay.jsonl").exists()


def test_inner_points_give_curves_csv_wandb_lines_and_the_report_figure(quick_run, tmp_path):
    """eval.inner_points=2 (quick_run): two points inside each 48-step stage, between the matrix's
    rows, which stay as they are without them (test_pinned_reference_matrix: pinned without)."""
    from cpt_bench.outputs.curves import read_curves_csv
    from cpt_bench.report import load_runs, write_report

    run_dir, _ = quick_run
    rows = read_curves_csv(run_dir / "curves.csv")
    points = sorted({(r.stage, r.point, r.step, r.global_step) for r in rows})
    assert points == [(0, "base", 0, 0), (1, "end", 48, 48), (1, "inner", 16, 16), (1, "inner", 32, 32),
                      (2, "end", 48, 96), (2, "inner", 16, 64), (2, "inner", 32, 80)]
    assert len(rows) == 7 * 5 and all(r.n == 50 for r in rows)
    matrix = {(int(r["stage"]), r["eval_task"]): float(r["accuracy"]) for r in read_matrix(run_dir)}
    assert {(r.stage, r.eval_task): r.accuracy for r in rows if r.point != "inner"} == pytest.approx(matrix)
    assert {r.accuracy for r in rows if r.eval_task == "max" and r.stage == 1} != {matrix[(1, "max")]}  # it moves
    # each point's records kept, its snapshot gone; its cost in the stage's timings and the run's compute
    assert len((run_dir / "stages/01-max/inner/step-000016/max.jsonl").read_text().splitlines()) == 50
    assert not list(run_dir.rglob("snapshots"))
    timings = json.loads((run_dir / "stages/01-max/stage.json").read_text())["timings"]
    assert timings["inner_eval_seconds"] > 0 and timings["save_seconds"] > 0
    assert json.loads((run_dir / "run.json").read_text())["compute"]["inner_eval_seconds"] > 0
    # W&B: every point on the curve/global_step axis, plasticity against stability beside each task
    (path,) = find_offline_runs(run_dir / "wandb")
    curve = [r for r in read_offline_run(path).history if "curve/global_step" in r]
    assert [r["curve/global_step"] for r in curve] == [0, 16, 32, 48, 64, 80, 96]
    assert curve[4]["curve/trained_acc"] == pytest.approx(next(r.accuracy for r in rows if (
        r.global_step, r.eval_task) == (64, "shift"))) and "curve/earlier_acc" in curve[4]
    # the report draws the figure and holds the section
    paths = write_report(load_runs([run_dir]), tmp_path)
    md = paths["md"].read_text()
    assert paths["within_stage"].stat().st_size > 0 and "![report_within_stage.png](report_within_stage.png)" in md
    assert "## Inside each stage" in md
