"""The typed records that cross files and processes: the run's Config (controller -> worker) and
a stage's Diagnostics (stage.json, W&B, the report) come back as what was written."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from cpt_bench.config import Config, config_dict
from cpt_bench.errors import ConfigError
from cpt_bench.outputs.records import Diagnostics, KLToBase, StageRecord
from cpt_bench.run.wire import read_config, write_config

from conftest import compose_config


@pytest.mark.parametrize("overrides", [
    ["paradigm=rft", "peft=lora", "filter=rif", "launcher=torchrun", "launcher.nproc_per_node=2"],
    ["+experiment=paper_rft", "model.path=Qwen/Qwen2-VL-7B-Instruct", "benchmark.max_test=4"],
    ["schedule=joint", "deepspeed=zero3", "eval.kl_samples=0"],
])
def test_the_worker_reads_back_the_typed_config_the_controller_wrote(tmp_path, overrides):
    from cpt_bench.config import validate

    config = validate(compose_config(*overrides))
    write_config(tmp_path / "config.yaml", config)
    again = read_config(tmp_path / "config.yaml")
    assert isinstance(again, Config) and type(again.paradigm) is type(config.paradigm)
    assert type(again.benchmark) is type(config.benchmark) and config_dict(again) == config_dict(config)


def test_a_config_file_edited_out_of_range_fails_the_same_check(tmp_path):
    from cpt_bench.config import validate

    write_config(tmp_path / "config.yaml", validate(compose_config("paradigm=rft")))
    data = OmegaConf.load(tmp_path / "config.yaml")
    data.paradigm.num_generations = 1
    OmegaConf.save(data, tmp_path / "config.yaml")
    with pytest.raises(ConfigError, match="paradigm.num_generations must be >= 2"):
        read_config(tmp_path / "config.yaml")


def test_diagnostics_keep_stage_json_flat_and_come_back_typed():
    diag = Diagnostics(training={"reward": 0.5, "kl": 0.01}, param_drift=1.5,
                       kl_to_base_task=KLToBase(0.2, 0.05, 0.01), kl_to_base_seconds=3.0, format_rate=0.9)
    flat = diag.to_json()
    assert flat == {"reward": 0.5, "kl": 0.01, "kl_to_base_task": 0.2, "kl_to_base_task_se": 0.05,
                    "kl_to_base_task_per_token": 0.01, "param_drift": 1.5, "kl_to_base_seconds": 3.0,
                    "format_rate": 0.9}
    assert Diagnostics.from_json(flat) == diag
    assert diag.drift() == {"param_drift": 1.5, "kl_to_base_task": 0.2}
    record = StageRecord(stage=1, trained_task="a", accuracy={"a": 1.0}, n={"a": 2}, diagnostics=diag)
    assert StageRecord.from_json(record.to_json()).diagnostics == diag


def test_both_kl_directions_keep_their_own_names():
    """The reverse KL keeps the `kl_to_base_*` keys older runs wrote; the forward one has its own."""
    diag = Diagnostics(param_drift=1.5, kl_to_base_general=KLToBase(0.3, 0.1, 0.02),
                       forward_kl_task=KLToBase(0.4, 0.06, 0.03), forward_kl_general=KLToBase(0.1, 0.01, 0.005),
                       kl_to_base_seconds=2.0, forward_kl_seconds=5.0)
    flat = diag.to_json()
    assert flat == {"kl_to_base_general": 0.3, "kl_to_base_general_se": 0.1, "kl_to_base_general_per_token": 0.02,
                    "forward_kl_task": 0.4, "forward_kl_task_se": 0.06, "forward_kl_task_per_token": 0.03,
                    "forward_kl_general": 0.1, "forward_kl_general_se": 0.01, "forward_kl_general_per_token": 0.005,
                    "param_drift": 1.5, "kl_to_base_seconds": 2.0, "forward_kl_seconds": 5.0}
    assert Diagnostics.from_json(flat) == diag
    assert diag.drift() == {"param_drift": 1.5, "kl_to_base_general": 0.3, "forward_kl_task": 0.4,
                            "forward_kl_general": 0.1}
    old = Diagnostics.from_json({"kl_to_base_task": 0.2, "kl_to_base_task_se": 0.05, "kl": 0.01})  # an older run's
    assert (old.kl_to_base_task.kl, old.kl_to_base_task.se) == (0.2, 0.05)
    assert old.forward_kl_task is None and old.training == {"kl": 0.01}


def test_an_rft_node_settles_its_kl_reference_under_lora():
    """With LoRA, GRPO's KL reference is the adapter-free model, i.e. the stage's start: planning
    records kl_reference=previous; without LoRA, or without the KL term, the node is left as is."""
    from cpt_bench.config import validate
    from cpt_bench.run.plan import plan

    assert plan(compose_config("paradigm=rft", "peft=lora")).config.paradigm.kl_reference == "previous"
    assert validate(compose_config("paradigm=rft", "peft=lora")).paradigm.kl_reference == "base"  # not yet planned
    assert plan(compose_config("paradigm=rft")).config.paradigm.kl_reference == "base"
    no_kl = plan(compose_config("paradigm=rft", "peft=lora", "paradigm.kl_coef=0")).config.paradigm
    assert no_kl.kl_reference == "base"
