"""The preflight (cpt_bench.preflight), the node checks of a run's plan (run/plan.py) and the
paper's figures beside a paper preset's report (report/paper.py)."""

from __future__ import annotations

import json
import re
import weakref
from pathlib import Path

import pytest

from cpt_bench.errors import ConfigError
from cpt_bench.preflight.memory import FITS, GIB, NO_FIT, Step, activation_bytes, estimate
from cpt_bench.preflight.shapes import ModelShape, Tower
from cpt_bench.report.paper import FIGURES, paper_section
from cpt_bench.report.runs import RunRecord

from conftest import compose_config, run_cli

DOCS = Path(__file__).resolve().parents[1] / "docs"
# Qwen2.5-VL-7B's counts, as shapes.model_shape builds them on the meta device
QWEN_VL_7B = ModelShape("qwen2_5_vl_7b", "test", 8_292_166_656, 544_997_376, Tower(28, 3584, 18944, 512), 152064,
                        Tower(32, 1280, 3420, 1280), 784)
PAPER_RFT = Step(world=8, ranks_per_node=8, zero_stage=3, offload_optimizer=False, offload_params=False,
                 dtype_bytes=2, micro_batch=8, seq_len=5120, loss_tokens=1024, image_patches=5120,
                 checkpointing=True, reference=True, generation_kv=True, vllm_share=0.0, vllm_max_model_len=5120,
                 vllm_tp=1, gpu_gib=80.0)


@pytest.mark.parametrize("stage,offload", [(3, False), (3, True), (2, False)])
def test_model_states_are_deepspeeds_own_estimate(stage, offload):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    step = Step(**{**PAPER_RFT.__dict__, "zero_stage": stage, "offload_optimizer": offload, "offload_params": offload})
    got = estimate(QWEN_VL_7B, step).items[0]
    total, largest = QWEN_VL_7B.total_params, QWEN_VL_7B.largest_layer_params
    if stage == 3:
        _, gpu, _ = estimate_zero3_model_states_mem_needs(total, largest, 8, 1, cpu_offload=offload,
                                                          cpu_offload_params=offload)
    else:
        _, gpu = estimate_zero2_model_states_mem_needs(total, 8, 1, cpu_offload=False)
    assert got.name == "model states" and got.gib * GIB == pytest.approx(gpu)


@pytest.mark.parametrize("nodes", [1, 2])
def test_model_states_follow_deepspeeds_formulas_worked_by_hand(nodes):
    """Per GPU and per node, on one node and on two of 8 ranks each (a swap of ranks per node and
    nodes changes the CPU figures, not the GPU ones): DeepSpeed's formulas, written out here."""
    total, largest = QWEN_VL_7B.total_params, QWEN_VL_7B.largest_layer_params
    world = 8 * nodes
    cases = [  # (zero stage, offload, GPU bytes, CPU bytes per node)
        (3, False, 4 * largest + int(18 * total / world), 4 * largest * 8 * 1.5),
        (3, True, 4 * largest, total * 18 / nodes * 1.5),  # offloaded parameters and optimizer, zero.Init
        (2, False, 2 * total + int(18 * total / world), total * 4 * 8 * 1.5),
    ]
    for stage, offload, gpu, cpu in cases:
        step = Step(**{**PAPER_RFT.__dict__, "world": world, "zero_stage": stage, "offload_optimizer": offload,
                       "offload_params": offload})
        got = estimate(QWEN_VL_7B, step)
        assert got.items[0].gib * GIB == pytest.approx(gpu), (stage, offload)
        assert got.cpu_gib * GIB == pytest.approx(cpu, rel=1e-6), (stage, offload)


def test_one_gpu_grpo_step_of_the_7b_does_not_fit_and_eight_zero3_ranks_do():
    """docs/cluster.md's first GPU run: one GRPO step of the full 7B on one 80 GB GPU, unsharded,
    with the KL reference and 0.3 of the card held for vLLM, ran out of memory at 75.2 GB."""
    one = Step(**{**PAPER_RFT.__dict__, "world": 1, "ranks_per_node": 1, "zero_stage": 0, "seq_len": 2100,
                  "image_patches": 4000, "vllm_share": 0.3, "generation_kv": False})
    got = estimate(QWEN_VL_7B, one)
    states, reference = got.items[0].gib, got.items[1].gib
    assert states == pytest.approx(8 * QWEN_VL_7B.total_params / GIB)  # bf16 weights, grads, 2 AdamW states
    assert reference == pytest.approx(2 * QWEN_VL_7B.total_params / GIB)
    assert got.verdict == NO_FIT and states + reference + 24 > 80  # the 99 GB of the arithmetic there
    assert got.fixes and any(f.setting.startswith("deepspeed=zero3") for f in got.fixes)
    paper = estimate(QWEN_VL_7B, PAPER_RFT)
    assert paper.items[0].gib < 20 and paper.verdict != NO_FIT  # ZeRO-3 over 8: about 19 GiB of states


@pytest.mark.parametrize("method, per_weight", [("ewc", 8), ("l2", 4), ("lwf", 2), ("merge", 0)])
def test_a_continual_learning_method_s_copies_count_on_each_rank(method, per_weight):
    """What the method declares it holds beside the model (EWC: theta* and F in float32; LwF: the
    frozen previous model in the run's dtype; merging: nothing on the GPU)."""
    from cpt_bench.config import validate

    held = validate(compose_config(f"cl={method}")).cl.held_per_weight(2)
    assert held == per_weight
    step = Step(**{**PAPER_RFT.__dict__, "zero_stage": 0, "cl_name": method, "cl_bytes_per_weight": held})
    items = {i.name: i.gib for i in estimate(QWEN_VL_7B, step).items}
    assert items.get(f"cl={method}", 0.0) == pytest.approx(per_weight * QWEN_VL_7B.total_params / GIB)


def test_a_node_check_refuses_what_this_node_cannot_run():
    from cpt_bench.config import validate
    from cpt_bench.run.plan import check_node, check_seeds

    cfg = validate(compose_config("launcher=torchrun", "launcher.nproc_per_node=64"))
    with pytest.raises(ConfigError, match=r"launcher.nproc_per_node=64 is more than the 2 CPU core\(s\)"):
        check_node(cfg, gpus=0, cores=2)
    with pytest.raises(ConfigError, match=r"more than the 8 GPU\(s\) visible here"):
        check_node(cfg, gpus=8, cores=2)
    cfg.launcher.nproc_per_node = 8
    check_node(cfg, gpus=8, cores=2)  # one rank per GPU
    cfg.model.dtype = "fp16"
    with pytest.raises(ConfigError, match="model.dtype=fp16 cannot be computed on this machine's CPU"):
        check_node(cfg, gpus=0, cores=64)
    cfg.seed = -1
    with pytest.raises(ConfigError, match=r"seed=-1 is outside NumPy's seed range.*use a seed in \[0, 4294967288\]"):
        check_seeds(cfg, 7)
    cfg.seed = 2**32 - 1 - 7
    check_seeds(cfg, 7)  # the last stage seed is NumPy's largest


def test_the_papers_figures_are_docs_paper_md_s():
    text = (DOCS / "paper.md").read_text()
    table = dict(re.findall(r"^\| ([^|]+?) \| ([\d.]+) \|", text, re.M))
    for figures in FIGURES.values():
        assert float(table[figures.method]) == figures.final_avg_acc, figures.method
        if figures.forgetting is not None:
            assert f"| {figures.method} | {figures.final_avg_acc} | -{figures.forgetting} |" in text
    assert "MMMU 52.1 (base) -> 40.1 after SFT, 54.2 after GRPO; MMLU-Pro 47.5 -> 30.6" in text


def test_a_paper_presets_runs_on_another_model_show_the_papers_figures_as_a_reference():
    def run(seed, acc):
        return RunRecord(path=Path(f"r{seed}"), status="finished", seed=seed, metrics={"final_avg_acc": acc,
                         "forgetting": 0.1}, matrix=[], order=[], general=[], compute=None, experiment="paper_sft",
                         config={"model": {"name": "tiny"}, "benchmark": {"name": "toy"}, "schedule": "sequential"})

    text = paper_section([("sft", [run(0, 0.5), run(1, 0.6)])])
    assert "## The paper's published figures (reference)" in text and "Reference only" in text
    assert "| sft | SFT (reference only) | final avg acc | 55.0 | 54.0 | +1.0 |" in text
    assert paper_section([("sft", [RunRecord(**{**run(0, 0.5).__dict__, "experiment": None})])]) == ""


# --- slow: a model's shape, a measured peak, the CLI ------------------------------------------


class LivePeak:
    """The peak bytes of tensors alive at once (storages, as autograd keeps them) while a
    forward and backward run under it: torch's dispatch mode sees every op's outputs."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        peak = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in (out if isinstance(out, tuple | list) else [out]):
                    if hasattr(t, "untyped_storage"):
                        peak.add(t.untyped_storage())
                return out

        self.mode, self.live, self.now, self.peak = Mode(), {}, 0, 0

    def add(self, storage) -> None:
        key = storage.data_ptr()
        if key in self.live or not storage.nbytes():
            return
        self.live[key] = storage.nbytes()
        self.now += storage.nbytes()
        self.peak = max(self.peak, self.now)
        weakref.finalize(storage, self.free, key)

    def free(self, key) -> None:
        self.now -= self.live.pop(key, 0)


@pytest.mark.slow
@pytest.mark.parametrize("checkpointing", [False, True])
def test_the_activation_formula_is_within_15_percent_of_a_measured_peak(checkpointing):
    """A small Qwen2 (float32, sdpa attention) on the CPU: forward and backward of one batch."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    h, i, heads, kv_heads, layers, vocab, batch, seq = 64, 192, 4, 2, 4, 512, 4, 256
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, hidden_size=h, intermediate_size=i, num_hidden_layers=layers,
                                         num_attention_heads=heads, num_key_value_heads=kv_heads,
                                         tie_word_embeddings=False, use_cache=False)).train()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ids = torch.randint(0, vocab, (batch, seq))
    peak = LivePeak()
    with peak.mode:
        model(input_ids=ids, labels=ids).loss.backward()
    shape = ModelShape("small", "test", 0, 0, Tower(layers, h, i, kv_heads * h // heads), vocab)
    step = Step(**{**PAPER_RFT.__dict__, "dtype_bytes": 4, "micro_batch": batch, "seq_len": seq, "loss_tokens": seq,
                   "image_patches": 0, "checkpointing": checkpointing})
    assert activation_bytes(shape, step) == pytest.approx(peak.peak, rel=0.15)


@pytest.mark.slow
def test_the_preflight_of_the_papers_grpo_on_eight_80gb_gpus(tmp_path):
    """The issue's command, on this CPU machine and offline: the per-GPU breakdown and a verdict,
    exit 0, nothing of a run written; the model states are DeepSpeed's estimate of the meta shape."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    run_dir = tmp_path / "run"
    res = run_cli("+experiment=paper_rft", "model=qwen2_5_vl_7b", "launcher=torchrun", "launcher.nproc_per_node=8",
                  "preflight.enabled=true", "preflight.gpu_memory_gb=80", f"hydra.run.dir={run_dir}",
                  env={"HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert re.search(r"training step: [\d.]+ of 80.0 GiB per GPU -> (fits|tight|does not fit)", res.stdout)
    for item in ("model states", "KL reference model", "activations", "evaluation step", "disk:", "install:"):
        assert item in res.stdout
    assert not (run_dir / "run.json").exists() and not (run_dir / "stages").exists()
    got = json.loads((run_dir / "preflight.json").read_text())
    model = got["model"]
    assert 8.2e9 < model["total_params"] < 8.4e9  # Qwen2.5-VL-7B: 8.29 B
    _, gpu, _ = estimate_zero3_model_states_mem_needs(model["total_params"], model["largest_layer_params"], 8, 1,
                                                      cpu_offload=False, cpu_offload_params=False)
    assert got["training"]["items"][0]["gib"] * GIB == pytest.approx(gpu)
    assert got["training"]["verdict"] == FITS


@pytest.mark.slow
@pytest.mark.parametrize("overrides,message", [
    (["launcher=torchrun", "launcher.nproc_per_node=64"], "launcher.nproc_per_node=64 is more than the"),
    (["seed=-1"], "seed=-1 is outside NumPy's seed range"),
])
def test_a_run_refuses_what_this_node_cannot_run_before_any_model(tmp_path, overrides, message):
    run_dir = tmp_path / "run"
    res = run_cli(*overrides, "logger=none", f"hydra.run.dir={run_dir}")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith(f"cpt-bench: error: {message}")
    assert len([x for x in res.stderr.splitlines() if "cpt-bench: error" in x]) == 1
    assert not (run_dir / "run.json").exists() and not (run_dir / "stages").exists()


@pytest.mark.slow
def test_a_report_over_two_tiny_paper_sft_runs_shows_the_papers_figures_as_a_reference(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_cli("-m", "+experiment=paper_sft", "model=tiny", "benchmark=toy", "benchmark.train_size=8",
                  "benchmark.test_size=8", "eval.kl_samples=0", "order.tasks=[max,shift]", "paradigm.max_steps=1",
                  "eval.max_new_tokens=8", "deepspeed=none", "logger=none", "seed=0,1", f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((sweep / "0" / "run.json").read_text())["experiment"] == "paper_sft"
    report = (sweep / "report.md").read_text()
    assert "## The paper's published figures (reference)" in report and "Reference only" in report
    assert "| SFT (reference only) | final avg acc |" in report and "| 54.0 |" in report


def test_the_gpu_checks_parts_fit_its_call_and_record_the_preflight_beside_the_peaks(tmp_path):
    import sys

    script = (DOCS.parent / "benchmarks" / "gpu_check.sh").read_text()
    budget = int(re.search(r"BUDGET=\$\{BUDGET:-(\d+)\}", script).group(1))
    call = int(re.search(r"timeout_s (\d+)", script).group(1))
    assert budget < call <= 600  # every part's limit is checked against what is left of the budget
    assert 'want "$name" 150' in script and 'want "${check%%:*}" "${check#*:}"' in script
    sys.path.insert(0, str(DOCS.parent / "benchmarks"))
    from gpu_summary import predictions

    (tmp_path / "preflight-grpo.json").write_text(json.dumps({"training": {"total_gib": 133.14, "verdict": NO_FIT}}))
    rows = predictions(tmp_path, {"risk_grpo": {"peak_gb": 75.2, "out_of_memory": "CUDA out of memory"}})
    assert rows == {"grpo": {"predicted_gib": 133.1, "predicted_verdict": NO_FIT, "measured_peak_gib": 75.2,
                             "out_of_memory": True}}


PAPER_PRESETS = [[f"+experiment={p.stem}"] for p in sorted((Path(__file__).resolve().parents[1] / "conf" /
                                                           "experiment").glob("paper_*.yaml"))]


@pytest.mark.parametrize("preset", [*PAPER_PRESETS, ["+experiment=paper_sft", "schedule=joint"]],
                         ids=lambda o: " ".join(o))
def test_every_paper_preset_fits_the_papers_node(preset, tmp_path):
    """As `make paper-*` launches it (one node, 8 ranks) on 8 x 80 GB, checkpoint.keep as the preset
    has it: the training and the evaluation step fit (the disk is the cluster's, not this machine's)."""
    from cpt_bench.preflight import run_preflight, verdict_line

    cfg = compose_config(*preset, "launcher=torchrun", "launcher.nproc_per_node=8", "preflight.enabled=true",
                         "preflight.gpus=8", "preflight.gpu_memory_gb=80")
    got = run_preflight(cfg, tmp_path)
    assert got.ranks == FITS
    assert got.training is None or got.training.verdict == FITS, verdict_line(got)
    assert got.evaluation.verdict == FITS, verdict_line(got)


def test_a_verdict_names_each_step_that_does_not_fit_by_how_much_and_its_fix(tmp_path):
    from cpt_bench.preflight import run_preflight, verdict_line

    cfg = compose_config("+experiment=paper_sft", "eval.batch_size=256", "launcher=torchrun",
                         "launcher.nproc_per_node=8", "preflight.enabled=true", "preflight.gpus=8",
                         "preflight.gpu_memory_gb=80")
    got = run_preflight(cfg, tmp_path)
    e = got.evaluation  # 256 sequences' KV cache: more than the GPU
    assert e.verdict == NO_FIT and e.fixes and e.fixes[0].setting.startswith("eval.batch_size=")
    largest = int(e.fixes[0].setting.split("=")[1])
    assert e.fixes[0].verdict == FITS and 0 < largest < 256
    line = verdict_line(got)
    assert line.startswith("verdict: the run does not fit this node: the evaluation step needs ")
    assert f"{e.total_gib - e.gpu_gib:.1f} over; eval.batch_size={largest} -> fits" in line
