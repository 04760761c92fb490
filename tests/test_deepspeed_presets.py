"""The DeepSpeed presets (conf/deepspeed/*.yaml) are valid DeepSpeed configs.

Each preset is composed through Hydra and rendered the way the stage loop hands it to the
trainer; its "auto" values are filled by transformers' own HfTrainerDeepSpeedConfig from a
TrainingArguments (as the HF Trainer does), and the result is parsed by DeepSpeed's own
config class, whose pydantic models reject unknown keys and check the batch arithmetic.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from cpt_bench.configstore import register_configs

register_configs()

PRESETS = {
    # name: (zero stage, offload device of params, of optimizer states, 16-bit gather on save)
    "zero2": (2, None, None, False),
    "zero3": (3, None, None, True),
    "zero3_offload": (3, "cpu", "cpu", True),
}


def rendered(name: str) -> dict:
    """The dict the stage loop passes as `deepspeed=` (continual.py: OmegaConf.to_container)."""
    with initialize_config_module(config_module="cpt_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"deepspeed={name}"])
    assert cfg.deepspeed.name == name
    return OmegaConf.to_container(cfg.deepspeed.config, resolve=True)


def fill_auto(config: dict, tmp_path, *, batch: int, accumulation: int, max_grad_norm: float,
              hidden_size: int, steps: int = 10) -> dict:
    """Replace every "auto" as the HF Trainer does, with transformers' own code."""
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig, unset_hf_deepspeed_config

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=batch,
                             gradient_accumulation_steps=accumulation, max_grad_norm=max_grad_norm,
                             report_to=[])
    hf = HfTrainerDeepSpeedConfig(copy.deepcopy(config))
    try:  # the object registers itself globally (is_deepspeed_zero3_enabled): never leak it
        hf.trainer_config_process(args)
        model = SimpleNamespace(config=SimpleNamespace(hidden_size=hidden_size))
        hf.trainer_config_finalize(args, model, steps)
        return copy.deepcopy(hf.config)
    finally:
        unset_hf_deepspeed_config()


def autos(node, path="") -> list[str]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in autos(v, f"{path}.{k}".lstrip("."))]
    return [path] if node == "auto" else []


def test_every_deepspeed_option_is_covered():
    folder = resources.files("cpt_bench.conf") / "deepspeed"
    assert {p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")} == {"none", *PRESETS}


def test_none_has_no_config():
    with initialize_config_module(config_module="cpt_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["deepspeed=none"])
    assert cfg.deepspeed.config is None


@pytest.mark.parametrize("name", PRESETS)
def test_preset_follows_the_hf_conventions(name):
    config = rendered(name)
    json.dumps(config)  # a plain JSON config
    for key in ["train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping"]:
        assert config[key] == "auto", key
    assert config["bf16"]["enabled"] == "auto"
    assert "optimizer" not in config and "scheduler" not in config, "left to the HF Trainer"


@pytest.mark.parametrize("name", PRESETS)
def test_preset_parses_with_deepspeeds_own_config_class(name, tmp_path):
    from deepspeed.runtime.config import DeepSpeedConfig

    stage, offload_param, offload_optimizer, gather = PRESETS[name]
    # the SFT paper setting per GPU: batch 1, accumulation 2; Qwen2.5-VL-7B's hidden size
    filled = fill_auto(rendered(name), tmp_path, batch=1, accumulation=2, max_grad_norm=1.0, hidden_size=3584)
    assert autos(filled) == [], "every auto is filled"
    assert (filled["train_batch_size"], filled["train_micro_batch_size_per_gpu"],
            filled["gradient_accumulation_steps"], filled["gradient_clipping"]) == (2, 1, 2, 1.0)
    assert filled["zero_optimization"]["reduce_bucket_size"] == 3584 * 3584

    ds = DeepSpeedConfig(filled)  # raises on unknown keys, bad types, inconsistent batch sizes
    assert ds.zero_enabled and ds.zero_optimization_stage == stage
    assert (ds.train_batch_size, ds.train_micro_batch_size_per_gpu, ds.gradient_accumulation_steps) == (2, 1, 2)
    assert ds.gradient_clipping == 1.0
    assert not ds.bfloat16_config.enabled and not ds.float16_config.enabled  # bf16=False on CPU
    zero = ds.zero_config

    def device(offload):
        return None if offload is None else getattr(offload.device, "value", offload.device)

    assert device(zero.offload_param) == offload_param
    assert device(zero.offload_optimizer) == offload_optimizer
    assert zero.gather_16bit_weights_on_model_save is gather
    if stage == 3:
        assert zero.prefetch_bucket_size == int(0.9 * 3584 * 3584)
        assert zero.param_persistence_threshold == 10 * 3584
    if offload_optimizer:  # the HF Trainer's own optimizer is kept under offload
        assert ds.zero_force_ds_cpu_optimizer is False


@pytest.mark.parametrize("name", PRESETS)
def test_bf16_auto_follows_the_trainer(name, tmp_path):
    """bf16.enabled "auto" takes the Trainer's bf16 flag (set from model.dtype on a GPU)."""
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig, unset_hf_deepspeed_config

    hf = HfTrainerDeepSpeedConfig(rendered(name))
    try:
        args = SimpleNamespace(world_size=8, per_device_train_batch_size=1, gradient_accumulation_steps=2,
                               max_grad_norm=1.0, learning_rate=1e-5, adam_beta1=0.9, adam_beta2=0.999,
                               adam_epsilon=1e-8, weight_decay=0.0, save_on_each_node=False,
                               fp16=False, fp16_full_eval=False, bf16=True, bf16_full_eval=False)
        hf.trainer_config_process(args)
        assert hf.config["bf16"]["enabled"] is True and hf.config["fp16"]["enabled"] is False
        assert hf.config["train_batch_size"] == 16  # 8 GPUs x 1 x 2: the paper's SFT global batch
    finally:
        unset_hf_deepspeed_config()
