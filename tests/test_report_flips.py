"""The report's "Forgetting item by item" section on hand-built run directories with a flips.csv."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cpt_bench import report
from cpt_bench.outputs.flips import BASE, PREVIOUS, FlipRow, Flips
from cpt_bench.outputs.rundir import write_flips_csv
from cpt_bench.report.flips import pool, run_flips

ORDER, GENERAL = ["a", "b"], ["g", "mc"]
CHANCE = {"mc": 0.25}  # a four-option task; the others answer free-form


def final(a_lost: int, b_lost: int, mc: tuple[int, int] = (6, 2)) -> dict[str, Flips]:
    """The last stage against the base: (n, correct before, after, correct->wrong, wrong->correct)."""
    return {"a": Flips(10, 6, 6 - a_lost + 2, a_lost, 2), "b": Flips(10, 4, 4 - b_lost + 4, b_lost, 4),
            "g": Flips(10, 5, 4, 1, 0), "mc": Flips(20, 12, 12 - mc[0] + mc[1], *mc)}


def write_run(path: Path, paradigm: str, seed: int, flips: dict[str, Flips] | None):
    path.mkdir(parents=True)
    cfg = {"paradigm": {"name": paradigm}, "seed": seed, "benchmark": {"name": "mllm"}}
    (path / "run.json").write_text(json.dumps({"status": "finished", "config": cfg, "order": ORDER,
                                               "general_suite": GENERAL, "seed": seed}))
    (path / "metrics.json").write_text(json.dumps({"gain": 0.1, "forgetting": 0.1, "stages_completed": 2}))
    if flips is None:  # a run from before flips.csv
        return
    rows = []
    for task, f in flips.items():
        # stage 1 and the since-previous rows differ from the last stage since the base: not read
        decoy = Flips(f.n, f.correct_before, f.correct_before, 0, 0)
        rows += [FlipRow(1, "a", task, since, 0, decoy, CHANCE.get(task)) for since in (PREVIOUS, BASE)]
        rows += [FlipRow(2, "b", task, PREVIOUS, 1, decoy, CHANCE.get(task)),
                 FlipRow(2, "b", task, BASE, 0, f, CHANCE.get(task))]
    write_flips_csv(path / "flips.csv", rows)


def test_pooling_counts_every_item_once_and_corrects_only_tasks_with_a_chance_level():
    f = final(3, 1)
    rows = [FlipRow(2, "b", t, BASE, 0, f[t], CHANCE.get(t)) for t in f]
    cpt, general = pool(rows[:2]), pool(rows[2:])
    assert (cpt.lost, cpt.gained) == (pytest.approx(4 / 10), pytest.approx(6 / 10))
    assert cpt.lost_corrected is None and cpt.corrected_tasks == 0
    assert general.lost == pytest.approx(7 / 17) and general.gained == pytest.approx(2 / 13)
    # mc: 6 of 12 lost, 6 wrong in both rows -> 2 flips by guessing; (6 - 2) / (12 - 20/4)
    assert general.lost_corrected == pytest.approx(4 / 7) and general.corrected_tasks == 1


@pytest.fixture
def sweep(tmp_path) -> Path:
    write_run(tmp_path / "0", "sft", 0, final(3, 1))
    write_run(tmp_path / "1", "sft", 1, final(1, 1, mc=(4, 2)))
    write_run(tmp_path / "2", "rft", 0, final(0, 1, mc=(2, 2)))
    write_run(tmp_path / "3", "rft", 1, final(0, 0, mc=(2, 2)))
    write_run(tmp_path / "4", "grpo_old", 0, None)
    return tmp_path


def test_the_report_gives_the_share_of_the_bases_correct_items_lost_per_variant(sweep):
    runs = report.load_runs([sweep])
    assert len(runs[0].flips) == 16 and runs[4].flips == []
    assert run_flips(runs[4]) == {}
    assert run_flips(runs[1])["cpt"].lost == pytest.approx(2 / 10)
    text = report.write_report(runs, sweep)["md"].read_text()
    section = text.split("## Forgetting item by item")[1].split("\n## ")[0]
    lines = {line.split(" | ")[0].strip("| "): line for line in section.splitlines() if line.startswith("| ")}
    # sft: CPT 40 % and 20 % lost (mean 30, std 14.1); gained 60 % both; no chance level among them
    sft = lines["paradigm=sft"].split(" | ")
    assert sft[1] == "2" and sft[2].startswith("30.0 ± 14.1 [") and sft[3] == "n/a" and sft[4] == "60.0 ± 0.0"
    # general: g (free-form) and mc pooled raw; chance-corrected over mc alone: (6-2)/7 and (4-2)/7
    assert sft[5].startswith(f"{100 * (7 / 17 + 5 / 17) / 2:.1f} ± ")
    assert sft[6].startswith(f"{100 * (4 / 7 + 2 / 7) / 2:.1f} ± ")
    rft = lines["paradigm=rft"].split(" | ")
    assert rft[2].startswith("5.0 ± 7.1 [") and rft[6].startswith(f"{0.0:.1f} ± 0.0")  # guessing explains it all
    assert "paradigm=grpo_old" not in lines  # no flips.csv: nothing to show
    assert "harness:<task>` columns have no per-item records" in section
    assert "n/a where no task declares one" in section


def test_every_file_the_report_cannot_read_is_named_with_what_it_leaves_out(sweep, tmp_path, caplog):
    (sweep / "1" / "flips.csv").write_text("stage,trained_task\n1,a\n")  # damaged: a column short
    (sweep / "2" / "stages" / "1_a").mkdir(parents=True)
    (sweep / "2" / "stages" / "1_a" / "stage.json").write_text('{"stage": 1, "trai')  # half-written
    (sweep / "5").mkdir()
    (sweep / "5" / "run.json").write_text("garbage")
    (sweep / "5" / "metrics.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="cpt_bench.report"):
        assert report.main([str(sweep), "--out", str(tmp_path / "out")]) == 0
    err = caplog.text  # the terminal's warnings
    text = (tmp_path / "out" / "report.md").read_text()
    section = text.split("## What could not be read")[1].split("\n## ")[0]
    for where, what, leaves_out in [
        ("1/flips.csv", "unreadable (KeyError", "this run in 'Forgetting item by item'"),
        ("2/stages/1_a/stage.json", "unreadable (JSONDecodeError", "this stage's diagnostics"),
        ("4/flips.csv", "missing", "this run in 'Forgetting item by item'"),
        ("5", "unreadable run.json or metrics.json (JSONDecodeError", "the whole run"),
    ]:
        assert any(where in line and what in line and leaves_out in line for line in section.splitlines()), where
        assert any(where in line and what in line for line in err.splitlines()), where  # on the terminal too
    listed = [line for line in section.splitlines() if line.startswith("- ")]
    assert f"{len(listed)} files could not be read" in section  # with the runs' missing matrix.csv: none here
    lines = text.split("## Forgetting item by item")[1].split("\n## ")[0]
    assert "| paradigm=sft | 1 |" in lines  # the run with a damaged flips.csv is left out, and said so above
