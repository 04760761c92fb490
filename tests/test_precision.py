"""model.dtype on this machine: bf16 as mixed precision on a CPU with native bf16, the toy default in float32."""

from __future__ import annotations

import json

import pytest
import torch

from cpt_bench.model.loading import Precision, cpu_has_bf16, resolve_precision

from conftest import QUICK, cli_run, compose_config

FP32, BF16 = torch.float32, torch.bfloat16


@pytest.mark.parametrize("name, cpu_bf16, deepspeed, expected", [
    ("auto", True, False, Precision(FP32, BF16)),  # mixed: float32 weights, bf16 autocast
    ("auto", False, False, Precision(FP32, FP32)),  # bf16 would be emulated: float32
    ("auto", True, True, Precision(FP32, FP32)),  # DeepSpeed's bf16 optimizer is not exercised on a CPU
    ("bf16", False, False, Precision(FP32, BF16)),  # asked for: mixed precision on any CPU
    ("fp32", True, False, Precision(FP32, FP32)),
])
def test_cpu_precision(name, cpu_bf16, deepspeed, expected):
    assert resolve_precision(name, cuda=False, deepspeed=deepspeed, cpu_bf16=cpu_bf16) == expected


def test_mixed_precision_autocasts_inference_and_trains_with_the_trainers_switch():
    mixed, plain = Precision(FP32, BF16), Precision(FP32, FP32)
    assert mixed.autocast and mixed.trainer_bf16 and mixed.describe() == "bf16 (weights fp32, autocast)"
    assert not plain.autocast and not plain.trainer_bf16 and plain.describe() == "fp32"
    layer = torch.nn.Linear(4, 4)
    with mixed.inference():
        assert layer(torch.ones(1, 4)).dtype == BF16
    with plain.inference():
        assert layer(torch.ones(1, 4)).dtype == FP32


def test_native_bf16_is_read_from_the_cpu_flags():
    assert cpu_has_bf16("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_has_bf16("flags\t\t: fpu amx_tile amx_bf16\n")
    assert not cpu_has_bf16("flags\t\t: fpu avx2 avx512f avx512bw\n")  # bf16 emulated on avx512bw: not native


def test_the_toy_default_stays_float32_and_real_models_take_auto():
    assert compose_config().model.dtype == "fp32"  # the pinned reference matrices
    assert compose_config("+experiment=smollm2_study").model.dtype == "auto"


@pytest.mark.slow
def test_a_bf16_run_on_the_cpu_keeps_float32_weights(tmp_path_factory, model_cache):
    """model.dtype=bf16 on a CPU: recorded as mixed precision; the stage's checkpoint holds float32
    weights (no update was rounded to bf16); evaluation and training ran."""
    run_dir, _ = cli_run(tmp_path_factory, "bf16", *QUICK, "order.tasks=[max]", "paradigm.epochs=1",
                         "model.dtype=bf16", "logger=none", model_cache=model_cache)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["precision"] == "bf16 (weights fp32, autocast)" and info["status"] == "finished"
    config = json.loads(next(run_dir.glob("stages/01-*/model/config.json")).read_text())
    assert config["dtype"] == "float32"
    stage = json.loads(next(run_dir.glob("stages/01-*/stage.json")).read_text())
    assert stage["train"]["optimizer_steps"] > 0 and stage["n"]["max"] == 50
