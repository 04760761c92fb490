"""A refused command touches nothing: every refusal (a bad value, a finished directory, an unfinished
one with another config, a held lock, too little disk) leaves an existing run directory byte for
byte as it was, Hydra's files included, and a refused new run leaves no folder. The refusals run
the CLI in this process (Hydra, the controller, its checks), on copies of the session's quick run."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
from filelock import FileLock

pytestmark = pytest.mark.slow


def tree(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder`: its path and content hash ("dir" for a folder)."""
    return {p.relative_to(folder).as_posix(): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """`cpt-bench ARGS` in this process: (exit code, stderr)."""
    from hydra.core.global_hydra import GlobalHydra

    from cpt_bench import cli as entry

    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", ["cpt-bench", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        entry.main()
    return stop.value.code, capsys.readouterr().err


@pytest.fixture
def finished(quick_run, tmp_path) -> tuple[Path, list[str]]:
    """A copy of the session's finished quick run, and the overrides that made it (run dir moved)."""
    run_dir, res = quick_run
    copy = tmp_path / "finished"
    shutil.copytree(run_dir, copy)
    overrides = [a for a in res.args[1:] if not a.startswith("hydra.run.dir=")]
    return copy, overrides


def test_a_finished_run_s_record_is_never_rewritten_by_a_refused_command(finished, monkeypatch, capsys):
    run_dir, overrides = finished
    command = [*overrides, f"hydra.run.dir={run_dir}"]
    assert (run_dir / ".hydra" / "config.yaml").exists() and (run_dir / "cli.log").stat().st_size > 0
    before = tree(run_dir)
    refusals = [
        ([], "already holds a finished run"),
        (["seed=1"], "already holds a finished run"),
        (["paradigm.learning_rate=-1"], "paradigm.learning_rate must be > 0"),
        (["order=reverse", "order.tasks=[max]"], "is an explicit order"),
    ]
    for extra, message in refusals:
        code, err = cli(monkeypatch, capsys, *command, *extra)
        assert code == 2 and message in err and err.count("\n") == 1, (extra, err)
        assert tree(run_dir) == before, extra  # .hydra/, cli.log, run.json: byte for byte
    info = json.loads((run_dir / "run.json").read_text())
    info["status"] = "running"  # an unfinished run: another config is refused, untouched too
    (run_dir / "run.json").write_text(json.dumps(info))
    before = tree(run_dir)
    code, err = cli(monkeypatch, capsys, *command, "seed=1")
    assert code == 2 and "holds an unfinished run with a different config" in err
    assert tree(run_dir) == before
    with FileLock(run_dir / ".cpt" / "controller.lock"):  # another controller holds it
        before = tree(run_dir)
        code, err = cli(monkeypatch, capsys, *command)
        assert code == 2 and "is in use by another cpt-bench controller" in err
        assert tree(run_dir) == before


def test_a_refused_new_run_leaves_no_folder(finished, monkeypatch, capsys, tmp_path):
    _, overrides = finished
    monkeypatch.chdir(tmp_path)
    command = [*overrides, "hydra.run.dir=runs/today/new"]  # Hydra makes it, and runs/today, before any check
    code, err = cli(monkeypatch, capsys, *command, "paradigm.learning_rate=-1")
    assert code == 2 and "paradigm.learning_rate must be > 0" in err
    assert not (tmp_path / "runs").exists()
    # a refusal after the run took its lock and built its base model: the disk check
    from cpt_bench.run import resume

    monkeypatch.setattr(resume.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 0))
    code, err = cli(monkeypatch, capsys, *command)
    assert code == 2 and err.startswith("cpt-bench: error: not enough disk in ")
    assert not (tmp_path / "runs").exists()


# --- damaged records: one line naming the file, or the stage redone as after a kill ------------


def test_a_damaged_record_is_one_line_naming_the_file_and_what_to_do(finished, monkeypatch, capsys):
    run_dir, overrides = finished
    command = [*overrides, f"hydra.run.dir={run_dir}"]
    run_json = run_dir / "run.json"
    good = run_json.read_bytes()
    for damaged, what in [(good[: len(good) // 2], "cannot be read (JSONDecodeError"), (b"", "cannot be read"),
                          (b"[1, 2]", "is not a record (a JSON list")]:
        run_json.write_bytes(damaged)
        before = tree(run_dir)
        code, err = cli(monkeypatch, capsys, *command)
        assert code == 2 and err.count("\n") == 1, err
        assert f"{run_json} {what}" in err and "overwrite=true" in err, err
        assert tree(run_dir) == before
    run_json.write_bytes(good)
    interrupted(run_dir)  # a resumed run reads its curves.csv back (the inner points of its finished stages)
    curves = run_dir / "curves.csv"
    curves.write_text("stage,trained\n1")
    before = tree(run_dir)
    code, err = cli(monkeypatch, capsys, *command)
    assert code == 2 and err.count("\n") == 1 and f"{curves} cannot be read (KeyError" in err, err
    assert tree(run_dir) == before
    run_json.write_bytes(good)
    lock = run_dir / ".cpt" / "controller.lock"
    lock.unlink(missing_ok=True)
    lock.mkdir()  # a lock that cannot be opened
    code, err = cli(monkeypatch, capsys, *command)
    assert code == 2 and err.count("\n") == 1 and f"{lock} cannot be locked" in err, err
    lock.rmdir()


def interrupted(run_dir: Path) -> None:
    """The finished copy as a run killed after its last stage's record: run.json still says running."""
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "status": "running"}))


def test_a_damaged_stage_record_whose_start_model_is_gone_is_named_in_one_line(finished, monkeypatch, capsys):
    run_dir, overrides = finished
    command = [*overrides, f"hydra.run.dir={run_dir}"]
    interrupted(run_dir)
    stage2 = run_dir / "stages" / "02-shift" / "stage.json"
    stage2.write_text(stage2.read_text()[:40])  # a half-written record
    model1 = run_dir / "stages" / "01-max" / "model"
    shutil.move(model1, run_dir / "kept-model")  # as checkpoint.keep=last would have left it
    before = tree(run_dir)
    code, err = cli(monkeypatch, capsys, *command)
    assert code == 2 and err.count("\n") == 1, err
    assert f"{stage2} cannot be read (JSONDecodeError" in err and "stage 2 cannot be redone" in err
    assert f"({model1}) is gone" in err and "overwrite=true" in err
    assert tree(run_dir) == before
    # with the model there, the stage is redone: test_end_to_end's resume test, on a half-written stage.json


# --- failures end as "failed": a full disk injected at each finishing step ----------------------


def full_disk(*_args, **_kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device", "/full/disk/file")


def after_setup(write_json):
    """write_json that fills the disk once the run has written run.json's "running" (at setup):
    metrics.json, then run.json's final status, cannot be written."""
    calls = []

    def write(path, data):
        calls.append(path)
        if len(calls) > 1:
            full_disk()
        write_json(path, data)

    return write


class FailingTracker:
    """A tracker whose close fails (W&B's own failures already only warn)."""

    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        return lambda *args, **kwargs: None

    def finish(self, *args, **kwargs):
        raise RuntimeError("the tracker's server went away")


@pytest.mark.parametrize("step, code, status", [
    ("write_matrix_csv", 1, "failed"),  # the results: the run failed, and run.json says so
    ("write_json", 1, "running"),  # the final run.json cannot be written either: the one line says so
    ("optional", 0, "finished"),  # the plots, summary.txt and the tracker's close at once: each only warns
])
def test_a_full_disk_at_each_finishing_step_ends_in_a_truthful_record_and_one_line(
        finished, monkeypatch, capsys, step, code, status):
    from cpt_bench.outputs.tracking import NullTracker
    from cpt_bench.run import controller

    monkeypatch.setattr(controller, "make_tracker", NullTracker)  # no W&B service in this process
    run_dir, overrides = finished
    interrupted(run_dir)  # every stage is done: the rerun only writes the results and finishes
    partial = run_dir / "stages" / "02-shift" / "model.partial"
    partial.mkdir()  # a half-written checkpoint, freed first when the run fails
    if step == "optional":
        monkeypatch.setattr(controller.plots, "heatmap", full_disk)
        monkeypatch.setattr(controller, "write_text", full_disk)
        monkeypatch.setattr(controller, "make_tracker", FailingTracker)
    else:
        monkeypatch.setattr(controller, step, after_setup(controller.write_json) if step == "write_json" else full_disk)
    command = [*overrides, f"hydra.run.dir={run_dir}"]
    if code == 0:
        from hydra.core.global_hydra import GlobalHydra

        from cpt_bench import cli as entry

        GlobalHydra.instance().clear()
        monkeypatch.setattr(sys, "argv", ["cpt-bench", *command])
        entry.main()
        log = (run_dir / "cli.log").read_text()  # each warning names what is missing
        for what in ("the run's plots not written", "summary.txt not written", "the tracker's close not written"):
            assert what in log, what
    else:
        got, err = cli(monkeypatch, capsys, *command)
        assert got == code and err.count("\n") == 1, err
        assert err.startswith("cpt-bench: error: /full/disk/file: No space left on device; free space")
        assert ("run.json records the failure" if status == "failed"
                else "run.json could not be written and still says 'running'") in err
        assert not partial.exists()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == status
    if status == "failed":
        assert "No space left on device" in info["error"]
