"""vLLM as an optional generation engine: validated up front, tested here with a fake engine
(vLLM itself cannot run on these CPUs), through the same worker code a GPU run uses."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
import types

import pytest

from cpt_bench.errors import ConfigError
from cpt_bench.model.processing import PixelBounds
from cpt_bench.model.vllm_engine import VLLMEngine
from cpt_bench.paradigms.filtering import rif_sampling
from cpt_bench.run.plan import plan
from cpt_bench.run.rank import RankSteps
from cpt_bench.run.wire import EvalSpec, RolloutSpec

from conftest import compose_config as composed
from conftest import worker_config


class FakeLLM:
    """Stands in for vllm.LLM: answers every prompt with `answer(prompt)`, records its calls."""

    instances: list = []

    def __init__(self, model, **kwargs):
        import os

        self.model, self.kwargs, self.rank_seen = model, kwargs, os.environ.get("RANK")
        self.calls = []
        FakeLLM.instances.append(self)

    def generate(self, requests, params, use_tqdm=False):
        self.calls.append((requests, params))
        out = types.SimpleNamespace
        return [out(outputs=[out(text=FakeLLM.answer(r["prompt"])) for _ in range(params.kwargs["n"])])
                for r in requests]

    @staticmethod
    def answer(prompt: str) -> str:
        return "7"


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    module.LLM, module.SamplingParams = FakeLLM, FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.instances.clear()
    return module


@pytest.mark.parametrize("overrides,message", [
    (["launcher=torchrun", "eval.backend=vllm"], "eval.backend=vllm needs vLLM, which is not installed"),
    (["paradigm=rft", "paradigm.use_vllm=true"], "paradigm.use_vllm=true needs vLLM, which is not installed"),
])
def test_asking_for_vllm_where_it_is_missing_is_a_one_line_error(overrides, message):
    if "vllm" in sys.modules or importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(ConfigError, match=message) as err:
        plan(composed(*overrides))
    assert "\n" not in str(err.value)


def test_vllm_evaluation_needs_launched_steps(fake_vllm):
    with pytest.raises(ConfigError, match="eval.backend=vllm needs launcher=torchrun"):
        plan(composed("eval.backend=vllm"))
    plan(composed("eval.backend=vllm", "launcher=torchrun"))  # with vLLM installed and launched steps: valid


def test_engine_requests(fake_vllm, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("RANK", "1")  # torchrun's variables are hidden from vLLM's own set-up
    engine = VLLMEngine("/models/stage-1", seed=3, pixels=PixelBounds(max_pixels=1003520))
    llm = FakeLLM.instances[0]
    assert llm.model == "/models/stage-1" and llm.kwargs["tensor_parallel_size"] == 1 and llm.kwargs["seed"] == 3
    assert llm.kwargs["mm_processor_kwargs"] == {"max_pixels": 1003520}  # the bound every other path uses
    assert llm.kwargs["dtype"] == "auto" and llm.kwargs["enforce_eager"] is True  # a CPU: vLLM's CPU build
    assert llm.rank_seen is None and __import__("os").environ["RANK"] == "1"
    image = Image.new("RGB", (8, 8))
    out = engine.generate(["a", "b"], [[], [image]], num_samples=4, temperature=1.0, max_new_tokens=5)
    assert out == [["7"] * 4, ["7"] * 4]
    requests, params = llm.calls[0]
    assert requests[0] == {"prompt": "a"} and requests[1]["multi_modal_data"]["image"] == [image]
    assert params.kwargs == {"n": 4, "temperature": 1.0, "top_p": 1.0, "max_tokens": 5}
    engine.generate(["a"])
    assert llm.calls[1][1].kwargs["temperature"] == 0.0 and llm.calls[1][1].kwargs["n"] == 1  # greedy
    # greedy samples are one sample repeated (vLLM refuses n > 1 at temperature 0)
    assert engine.generate(["a"], num_samples=3) == [["7"] * 3] and llm.calls[2][1].kwargs["n"] == 1


@pytest.mark.slow
def test_worker_evaluates_and_rolls_out_through_vllm(fake_vllm, model_cache, tmp_path, monkeypatch):
    """The worker's evaluate and filter steps with eval.backend=vllm: the engine generates, the
    task graders score, the base model's weights are read only for the parameter drift."""
    import cpt_bench.run.rank
    from cpt_bench.builtin import base_model_path
    from cpt_bench.model.loading import run_precision

    cfg = composed("order.tasks=[max]", "benchmark.test_size=20", "benchmark.train_size=16", "eval.general=false",
                   "eval.backend=vllm", "launcher=torchrun", "filter=rif", "model.dtype=bf16", "eval.kl_samples=4",
                   f"model.cache_dir={model_cache}")
    base = base_model_path(cfg.model)
    resolved = worker_config(cfg, tmp_path)  # what the worker reads
    closed, close = [], VLLMEngine.close
    monkeypatch.setattr(VLLMEngine, "close", lambda self: closed.append(self.llm) or close(self))
    loaded, load = [], cpt_bench.run.rank.load_model

    def recorded_load(cfg, path, device="cpu"):
        model, processing_class = load(cfg, path, device)
        loaded.append((path, str(model.device), model.dtype, bool(closed)))
        return model, processing_class

    monkeypatch.setattr(cpt_bench.run.rank, "load_model", recorded_load)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    # with an inner point (eval.inner_points; here the base again) after the model, in the same step
    RankSteps(resolved, EvalSpec(dir=str(tmp_path / "eval"), model_path=base, seed=0, drift_from=base,
                                 task="max", points=[base], point_dirs=[str(tmp_path / "inner")])).evaluate()
    shard = json.loads((tmp_path / "eval/shard-0.json").read_text())
    rows = shard["records"]
    assert len(rows) == 20 and shard["indices"] == list(range(20)) and all(r["response"] == "7" for r in rows)
    assert [r["score"] for r in rows] == [float(r["answer"] == "7") for r in rows]
    drift = json.loads((tmp_path / "eval/drift.json").read_text())
    assert drift["param_drift"] == 0.0  # the base itself, read in float32 (bf16 on a CPU is mixed precision)
    # the engine was let go before the weights were read; the inner point's own engine after its evaluation
    assert closed == FakeLLM.instances[:2] and len(FakeLLM.instances) == 2
    point = json.loads((tmp_path / "inner/shard-0.json").read_text())
    assert point["records"] == rows and (tmp_path / "inner/seconds.json").exists()
    assert not (tmp_path / "inner/drift.json").exists()  # an inner point measures no drift
    # the stage model and the base, both in the run's weights dtype on the rank's device, after the engine went
    assert loaded == [(base, "cpu", run_precision(resolved).weights, True)] * 2
    assert drift["kl_to_base_task"] == 0.0 and drift["forward_kl_task"] == 0.0  # the base against itself
    RankSteps(resolved, RolloutSpec.of(rif_sampling(resolved.filter, None), stage=1, task="max",
                                       dir=str(tmp_path / "stage"), seed=0, model_path=base)).rollout()
    shard = json.loads((tmp_path / "stage/rollout-rif-shard-0.json").read_text())
    assert shard["indices"] == list(range(16)) and shard["generated_tokens"] > 0
    assert all(len(s) == 8 for s in shard["scores"]) and all(len(c) == 8 for c in shard["completions"])
    _, params = FakeLLM.instances[-1].calls[0]
    assert params.kwargs["n"] == 8 and params.kwargs["temperature"] == 1.0
