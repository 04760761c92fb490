"""Numeric faults: a NaN or infinite loss, gradient norm or reward stops the stage in one line."""

from __future__ import annotations

import math
import re

import pytest

from cpt_bench.errors import TrainingDiverged
from cpt_bench.outputs.rundir import read_json
from cpt_bench.run.steps import check_finite

from conftest import run_cli


@pytest.mark.parametrize("key,value", [("loss", math.nan), ("grad_norm", math.inf), ("reward", -math.inf),
                                       ("rewards/accuracy_reward/mean", math.nan)])
def test_a_non_finite_training_signal_names_the_stage_and_step(key, value):
    with pytest.raises(TrainingDiverged, match=rf"stage 3 diverged at step 17: {key} is {value}"):
        check_finite(3, 17, {"learning_rate": 1e-5, key: value})


def test_finite_signals_and_other_keys_pass():
    check_finite(1, 1, {"loss": 0.5, "grad_norm": 2.0, "reward": 0.0, "learning_rate": math.nan, "note": "x"})


@pytest.mark.slow
def test_a_diverging_stage_stops_the_run_and_keeps_the_stages_before_it(model_cache, tmp_path):
    run_dir = tmp_path / "run"
    res = run_cli("order.tasks=[max,shift]", "benchmark.train_size=48", "benchmark.test_size=20",
                  "paradigm.learning_rate=1e30", "logger=none", f"model.cache_dir={model_cache}",
                  f"hydra.run.dir={run_dir}")
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"cpt-bench: error: stage 1 diverged at step \d+: \S+ is -?(nan|inf); .*", last), last
    info = read_json(run_dir / "run.json")
    assert info["status"] == "failed" and "TrainingDiverged" in info["error"]
    assert (run_dir / "stages" / "00-base" / "stage.json").exists()  # the base row is kept
    assert not (run_dir / "stages" / "01-max" / "model").exists()  # nothing diverged was saved
    assert not (run_dir / "stages" / "01-max" / "stage.json").exists()
