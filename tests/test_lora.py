"""LoRA for both paradigms: each stage trains an adapter, merged into full weights that chain
into the next stage; the adapter is kept beside the checkpoint."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from conftest import run_cli

pytestmark = pytest.mark.slow

SMALL = ["order.tasks=[max,shift]", "benchmark.train_size=64", "benchmark.test_size=30", "logger=none", "peft=lora"]


@pytest.mark.parametrize("paradigm", [["paradigm=sft", "paradigm.learning_rate=1e-3"],
                                      ["paradigm=rft", "paradigm.learning_rate=1e-3"]])
def test_a_lora_sequence_merges_each_stage_and_chains_full_checkpoints(paradigm, tiny_base, model_cache, tmp_path):
    run_dir = tmp_path / "run"
    res = run_cli(*SMALL, *paradigm, f"model.cache_dir={model_cache}", f"hydra.run.dir={run_dir}")
    assert res.returncode == 0, res.stderr[-3000:]
    base = load_file(str(tiny_base / "model.safetensors"))
    previous = base
    for stage in ("01-max", "02-shift"):
        model = run_dir / "stages" / stage / "model"
        weights = load_file(str(model / "model.safetensors"))
        assert sorted(weights) == sorted(base)  # a plain checkpoint: merged, no LoRA tensors
        assert any(not weights[k].equal(previous[k]) for k in weights), f"{stage} trained on from the last stage"
        adapter = json.loads((model / "adapter" / "adapter_config.json").read_text())
        assert (adapter["peft_type"], adapter["r"], adapter["lora_alpha"]) == ("LORA", 16, 32)
        previous = weights
    config = json.loads((run_dir / "run.json").read_text())["config"]
    assert config["peft"]["name"] == "lora"
    if config["paradigm"]["name"] == "rft":  # the reference LoRA's KL really uses, recorded as such
        assert config["paradigm"]["kl_reference"] == "previous"
