"""eval.harness: lm-evaluation-harness run for real, offline, on local task files (tests/harness_tasks/,
their data written here), checked against a direct computation on the same items; its scores as
general columns of the matrix, the metrics, W&B and the report; resume; one-line errors."""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

from cpt_bench.errors import ConfigError
from cpt_bench.model.harness import _task_manager, evaluate_harness, primary_score
from cpt_bench.outputs.records import HarnessScore

from conftest import REPO, run_cli
from wandb_offline import find_offline_runs, read_offline_run

TASKS = REPO / "tests" / "harness_tasks"
TOY = ["toy_max_mc", "toy_max_gen"]


def write_toy_max(folder: Path) -> list[dict]:
    """The toy benchmark's `max` test items as toy_max.json: the tiny model's own prompt format,
    the distinct numbers as choices."""
    from cpt_bench.tasks.toy import toy_tasks

    rows = []
    for ex in toy_tasks(seed=0, train_size=8, test_size=20)["max"].test():
        choices = sorted(set(ex.prompt.split("=")[0].split()[1:]), key=int)
        rows.append({"question": f"{ex.prompt} answer", "choices": choices, "answer": ex.answer,
                     "label": choices.index(ex.answer)})
    (folder / "toy_max.json").write_text("\n".join(json.dumps(r) for r in rows))
    return rows


def write_capitals(folder: Path, n: int = 8) -> list[dict]:
    """Sentences to complete with a capital (capitals.json), four cities to choose from."""
    from cpt_bench.tasks.natural import CAPITALS

    rng = random.Random(0)
    rows = []
    for country in rng.sample(sorted(CAPITALS), n):
        city = CAPITALS[country]
        choices = sorted([city, *rng.sample(sorted(set(CAPITALS.values()) - {city}), 3)])
        rows.append({"question": f"The capital of {country} is", "choices": choices, "answer": city,
                     "label": choices.index(city)})
    (folder / "capitals.json").write_text("\n".join(json.dumps(r) for r in rows))
    return rows


@torch.no_grad()
def direct_choice_accuracy(model, tok, rows: list[dict]) -> float:
    """The argmax of each choice's summed log-probability after the prompt (choice after one space)."""
    def loglik(context: str, continuation: str) -> float:
        whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
        start = len(tok(context, add_special_tokens=False)["input_ids"])
        logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
        return sum(logp[i - 1, whole[i]].item() for i in range(start, len(whole)))

    picks = [max(range(len(r["choices"])), key=lambda i, r=r: loglik(r["question"], " " + r["choices"][i]))
             for r in rows]
    return statistics.fmean(p == r["label"] for p, r in zip(picks, rows))


@torch.no_grad()
def direct_exact_match(model, tok, rows: list[dict], until: tuple[str, ...], max_new_tokens: int) -> float:
    """Greedy completions one prompt at a time, cut at the first stop string, equal to the answer."""
    hits = []
    for r in rows:
        enc = tok(r["question"], return_tensors="pt", add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for stop in until:
            text = text.split(stop)[0]
        hits.append(text.strip() == r["answer"])
    return statistics.fmean(hits)


def harness(tasks: list[str]):
    from cpt_bench.config import HarnessConfig

    return HarnessConfig(backend="lm_eval", tasks=tasks, include_path=str(TASKS), batch_size=4)


# --- the scores against a direct computation ----------------------------------------------


@pytest.mark.slow
def test_lm_eval_on_the_tiny_model_equals_a_direct_computation(tiny_base, tmp_path, monkeypatch):
    from cpt_bench.model.loading import load_checkpoint

    monkeypatch.chdir(tmp_path)
    rows = write_toy_max(tmp_path)
    model, tok = load_checkpoint(tiny_base)
    result = evaluate_harness(model, tok, harness(TOY))
    mc, gen = result.scores
    assert (mc.task, mc.metric, gen.task, gen.metric) == ("toy_max_mc", "acc,none", "toy_max_gen", "exact_match,none")
    assert mc.value == pytest.approx(direct_choice_accuracy(model, tok, rows), abs=1e-9)
    assert gen.value == pytest.approx(direct_exact_match(model, tok, rows, ("\n",), 8), abs=1e-9)
    assert 0 < mc.value < 1 and 0 < gen.value < 1  # neither trivially right nor wrong
    assert (mc.n, mc.num_fewshot, mc.version, gen.version) == (20, 0, "1.0", "2.0")
    assert mc.stderr == pytest.approx((mc.value * (1 - mc.value) / 19) ** 0.5)
    assert (result.backend, result.version) == ("lm_eval", metadata.version("lm-eval"))
    # the task index is built once per process (a run asks at planning and at every evaluation),
    # and an evaluation on the reused index gives the same scores
    assert evaluate_harness(model, tok, harness(TOY)).scores == result.scores
    assert _task_manager(harness(TOY)) is _task_manager(harness(["toy_max_mc"]))


@pytest.mark.slow
def test_lm_eval_on_smollm2_equals_a_direct_computation(smollm2_cache, tmp_path, monkeypatch):
    from cpt_bench.builtin.smollm2 import build_smollm2
    from cpt_bench.model.loading import load_checkpoint

    monkeypatch.chdir(tmp_path)
    rows = write_capitals(tmp_path)
    model, tok = load_checkpoint(build_smollm2(smollm2_cache))
    mc, gen = evaluate_harness(model, tok, harness(["capital_mc", "capital_gen"])).scores
    assert mc.value == pytest.approx(direct_choice_accuracy(model, tok, rows), abs=1e-9)
    assert gen.value == pytest.approx(direct_exact_match(model, tok, rows, (".", "\n"), 8), abs=1e-9)
    assert mc.value > 0.25 and gen.value > 0  # a real LM knows capitals: above a 1-in-4 guess
    assert mc.n == gen.n == len(rows)


# --- a run: general columns, metrics, W&B, report, resume ----------------------------------


@pytest.mark.slow
def test_a_run_records_the_harness_as_general_columns_and_resumes_without_evaluating_it_again(
        model_cache, tiny_base, tmp_path):
    from cpt_bench.model.loading import load_checkpoint

    rows = write_toy_max(tmp_path)  # the tasks read it from the run's working directory
    run_dir = tmp_path / "run"
    args = ["order.tasks=[max,shift]", "benchmark.test_size=20", "benchmark.train_size=32", "paradigm.epochs=1",
            "eval.harness.backend=lm_eval", f"eval.harness.include_path={TASKS}",
            f"eval.harness.tasks=[{','.join(TOY)}]",
            f"model.cache_dir={model_cache}", f"hydra.run.dir={run_dir}"]
    killed = run_cli(*args, cwd=tmp_path, env={"CPT_BENCH_KILL_AT": "training@2"})
    assert killed.returncode == -9
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # the base model and stage 1 were evaluated by the first attempt; the resumed run evaluated stage 2 only
    assert (killed.stdout + killed.stderr).count("harness (lm_eval):") == 2
    assert (done.stdout + done.stderr).count("harness (lm_eval):") == 1

    lines = (run_dir / "matrix.csv").read_text().splitlines()
    header = lines[0].split(",")
    matrix = {(int(r["stage"]), r["eval_task"]): r for r in (dict(zip(header, line.split(","))) for line in lines[1:])}
    columns = [f"harness:{t}" for t in TOY]
    assert all((stage, c) in matrix for stage in (0, 1, 2) for c in columns)
    model, tok = load_checkpoint(tiny_base)
    assert float(matrix[(0, "harness:toy_max_mc")]["accuracy"]) == pytest.approx(
        direct_choice_accuracy(model, tok, rows), abs=1e-6)
    assert int(matrix[(0, "harness:toy_max_gen")]["n"]) == 20

    metrics = json.loads((run_dir / "metrics.json").read_text())
    per_task = metrics["general_delta_per_task"]
    assert set(per_task) == {"copy", "last", "min", *columns}  # the built-in suite and the harness alike
    assert metrics["general_delta"] == pytest.approx(statistics.fmean(per_task.values()))
    assert metrics["general_suite"] == ["copy", "last", "min", *columns]
    stage = json.loads(next(run_dir.glob("stages/02-*/stage.json")).read_text())
    assert stage["harness"]["version"] == metadata.version("lm-eval")
    assert [(s["task"], s["n"], s["num_fewshot"]) for s in stage["harness"]["scores"]] == [(t, 20, 0) for t in TOY]

    # flips.csv: the built-in tasks item by item (stage 1 recounted by the resumed run); the harness
    # columns have no per-item records here
    flips = [line.split(",") for line in (run_dir / "flips.csv").read_text().splitlines()[1:]]
    assert {(int(r[0]), r[2]) for r in flips} == {(s, t) for s in (1, 2) for t in ("max", "shift", *per_task)
                                                  if not t.startswith("harness:")}

    offline = read_offline_run(sorted(find_offline_runs(run_dir / "wandb"))[-1])
    logged = {row["cpt/stage"] for row in offline.history if "cpt/acc/harness:toy_max_mc" in row}
    assert logged == {0, 1, 2} and any("cpt/harness_stderr/toy_max_gen" in row for row in offline.history)
    out = subprocess.run([str(Path(sys.executable).with_name("cpt-bench-report")), str(run_dir)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = (run_dir / "report.md").read_text()
    assert "## General ability by harness" in text and "toy_max_gen (lm_eval 0.4.13: exact_match,none, 0-shot" in text


# --- what fails before any model ------------------------------------------------------------


def test_the_primary_metric_is_the_first_where_higher_is_better():
    results = {"results": {"g": {"alias": "g", "acc,none": 0.25, "acc_stderr,none": 0.1},
                           "g_a": {"perplexity,none": 9.0, "exact_match,strict": 0.5,
                                   "exact_match_stderr,strict": "N/A"}},
               "higher_is_better": {"g": {"acc": True}, "g_a": {"perplexity": False, "exact_match": True}},
               "n-samples": {"g_a": {"original": 10, "effective": 8}, "g_b": {"original": 4, "effective": 4}},
               "group_subtasks": {"g": ["g_a", "g_b"]}, "versions": {"g": 2, "g_a": 1.0}, "n-shot": {"g_a": 5}}
    assert primary_score(results, "g") == HarnessScore("g", "acc,none", 0.25, 0.1, 12, None, "2")
    assert primary_score(results, "g_a") == HarnessScore("g_a", "exact_match,strict", 0.5, None, 8, 5, "1.0")
    with pytest.raises(ConfigError, match="no metric where higher is better"):
        primary_score({"results": {"p": {"perplexity,none": 3.0}}, "higher_is_better": {"p": {"perplexity": False}}},
                      "p")
    with pytest.raises(ConfigError, match=r"its primary metric bleu is 34.5, not in \[0, 1\]"):
        primary_score({"results": {"t": {"bleu,none": 34.5}}, "higher_is_better": {"t": {"bleu": True}}}, "t")


@pytest.mark.slow
@pytest.mark.parametrize("case, message", [
    ("missing", "eval.harness.backend=lm_eval needs lm-eval, which is not installed "),
    ("unknown", "eval.harness: unknown task 'toy_nope': not one of lm_eval's "),
    ("offline", "eval.harness: the data of toy_hub_only could not be read ("),
])
def test_a_harness_that_cannot_run_fails_in_one_line_before_any_model(tmp_path, case, message):
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    if case == "missing":  # an environment without the extra: `import lm_eval` fails
        shadow = tmp_path / "shadow" / "lm_eval"
        shadow.mkdir(parents=True)
        (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'lm_eval'\")\n")
        env["PYTHONPATH"] = str(shadow.parent)
    task = {"missing": "toy_max_mc", "unknown": "toy_nope", "offline": "toy_hub_only"}[case]
    res = run_cli("eval.harness.backend=lm_eval", f"eval.harness.include_path={TASKS}", f"eval.harness.tasks=[{task}]",
                  f"hydra.run.dir={tmp_path / 'run'}", f"model.cache_dir={tmp_path / 'cache'}", "logger=none",
                  cwd=tmp_path, env=env)
    assert res.returncode == 2, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"cpt-bench: error: {message}"), last
    if case == "missing":
        assert last.endswith("pip install 'cpt-bench[harness]'")
    assert not (tmp_path / "cache").exists(), "no model may be built when the harness cannot run"


@pytest.mark.slow
def test_the_paper_harness_presets_say_what_they_need_before_any_model():
    """`+harness=paper_text` (MMLU-Pro through lm-eval) composes beside a paper preset and, with
    no network and nothing cached, stops at planning with the download step; `paper_vlm`
    (lmms-eval) names the extra it needs."""
    from cpt_bench.run.plan import plan

    from conftest import compose_config

    cfg = compose_config("+experiment=paper_rft", "+harness=paper_text")
    assert (cfg.eval.harness.backend, list(cfg.eval.harness.tasks)) == ("lm_eval", ["mmlu_pro"])
    with pytest.raises(ConfigError, match=r"the data of mmlu_pro could not be read .* download it once"):
        plan(cfg)
    cfg = compose_config("+experiment=paper_sft", "+harness=paper_vlm")
    assert list(cfg.eval.harness.tasks) == ["mmmu_val", "pope"]
    with pytest.raises(ConfigError, match=r"needs lmms-eval, which is not installed .*'cpt-bench\[harness-vlm\]'"):
        plan(cfg)


@pytest.mark.slow
def test_a_launched_run_scores_the_harness_on_rank_0(model_cache, tiny_base, tmp_path):
    """launcher=torchrun over two ranks: the evaluation step's rank 0 runs the harness (and says
    it ran alone); the base row's harness scores equal the direct computation."""
    from cpt_bench.model.loading import load_checkpoint

    rows = write_toy_max(tmp_path)
    run_dir = tmp_path / "run"
    res = run_cli("order.tasks=[max]", "benchmark.test_size=10", "benchmark.train_size=32", "paradigm.epochs=1",
                  "eval.general=false", "launcher=torchrun", "launcher.nproc_per_node=2", "logger=none",
                  "eval.harness.backend=lm_eval", f"eval.harness.include_path={TASKS}",
                  "eval.harness.tasks=[toy_max_mc]",
                  f"model.cache_dir={model_cache}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "eval.harness runs on rank 0 only" in next(run_dir.glob("stages/00*/eval/evaluate.log")).read_text()
    stage0 = json.loads(next(run_dir.glob("stages/00*/stage.json")).read_text())
    model, tok = load_checkpoint(tiny_base)
    assert stage0["accuracy"]["harness:toy_max_mc"] == pytest.approx(direct_choice_accuracy(model, tok, rows), abs=1e-6)
    stage1 = json.loads(next(run_dir.glob("stages/01-*/stage.json")).read_text())
    assert stage1["n"]["harness:toy_max_mc"] == 20 and stage1["harness"]["scores"][0]["task"] == "toy_max_mc"
