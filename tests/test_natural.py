"""benchmark=natural (the toy tasks in plain questions), its answer format and grading, the
format-alignment step of model=smollm2_135m_aligned, and the SmolLM2 study preset."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from cpt_bench.model.prompts import PromptStyle
from cpt_bench.tasks import build_benchmark
from cpt_bench.tasks.grading import cot_target
from cpt_bench.tasks.natural import (
    COT_INSTRUCTION,
    CPT_GENERATORS,
    FORMAT_GENERATORS,
    GENERAL_GENERATORS,
    SHORT_ANSWER,
    grade_phrase,
    natural_tasks,
)

from conftest import compose_config


def bench(**over):
    cfg = OmegaConf.create({"name": "natural", "seed": 0, "train_size": 64, "test_size": 16,
                            "tasks": ["add", "capital", "largest", "antonym"], "general": ["successor", "smaller"],
                            **over})
    return build_benchmark(cfg)


def test_splits_are_disjoint_deterministic_and_fact_tasks_split_by_fact():
    b = bench()
    for name, task in b.tasks.items():
        train, test = task.train(), task.test()
        assert len(train) == 64 and len(test) == 16
        assert not {e.prompt for e in train} & {e.prompt for e in test}
        assert [e.prompt for e in test] == [e.prompt for e in bench().tasks[name].test()]
    for name in ("capital", "antonym"):  # a country asked in another phrasing is still a test country
        task = b.tasks[name]
        assert not {e.meta["split_key"] for e in task.train()} & {e.meta["split_key"] for e in task.test()}
    ex = b.tasks["capital"].test()[0]
    assert ex.answer and ex.answer in ex.rationale and ex.meta["split_key"] in ex.prompt


def test_format_tasks_share_no_question_type_with_tested_tasks():
    # the alignment step may teach the format only: no format question starts like a tested one
    def openings(generators):
        tasks = natural_tasks(generators=generators)
        return {" ".join(e.prompt.split()[:4]) for t in tasks.values() for e in t.items(50, stream="probe")}

    assert not set(FORMAT_GENERATORS) & (set(CPT_GENERATORS) | set(GENERAL_GENERATORS))
    assert not openings(FORMAT_GENERATORS) & openings({**CPT_GENERATORS, **GENERAL_GENERATORS})


@pytest.mark.parametrize("response, cot, score", [
    ("Paris", False, 1.0), ("paris.", False, 1.0), ("The capital of France is Paris.", False, 0.0),
    ("Paris, of course", False, 0.0), ("", False, 0.0),
    ("<think> The capital of France is Paris. </think> \\boxed{Paris}", True, 1.0),
    ("<think> The capital of France is Paris. </think> Paris", True, 0.0),  # no box: no answer
    ("\\boxed{Lyon} then \\boxed{Paris}", True, 1.0),  # the last box counts
])
def test_one_strict_grader_for_every_paradigm(response, cot, score):
    task = natural_tasks()["capital"]
    ex = next(e for e in task.test() + task.train() if e.answer == "Paris")
    style = PromptStyle(cot, COT_INSTRUCTION, SHORT_ANSWER, "\n")
    assert task.grade(style.extract(response), ex) == score
    assert grade_phrase("The Dog", "dog") == 1.0 and grade_phrase("seven", "7") == 1.0


def test_prompts_and_targets_follow_the_paper_format():
    b = bench()
    ex = b.tasks["add"].train()[0]
    direct = PromptStyle.for_benchmark(b, cot=False)
    cot = PromptStyle.for_benchmark(b, cot=True)
    assert direct.user_text(ex) == f"{ex.prompt}\n{SHORT_ANSWER}" and direct.target(ex) == ex.answer
    assert cot.user_text(ex) == f"{ex.prompt}\n{COT_INSTRUCTION}"
    assert cot.target(ex) == cot_target(ex.rationale, ex.answer)
    assert cot.target(ex) == f"<think> {ex.rationale} </think> \\boxed{{{ex.answer}}}"


def test_unknown_task_is_one_line_error():
    from cpt_bench.errors import ConfigError

    with pytest.raises(ConfigError, match="benchmark natural has no task 'capitals'; its tasks: add, capital"):
        bench(tasks=["capitals"])


def test_study_preset_composes_both_paradigms_sized_for_two_cores():
    from cpt_bench.run.plan import plan

    cfgs = {p: compose_config("+experiment=smollm2_study", f"paradigm={p}") for p in ("sft_smollm2", "rft_smollm2")}
    sft, rft = cfgs["sft_smollm2"], cfgs["rft_smollm2"]
    assert (sft.paradigm.name, rft.paradigm.name) == ("sft", "rft")  # reported under the paradigms' names
    assert (rft.model.name, rft.benchmark.name, rft.cot) == ("smollm2_135m_aligned", "natural", True)
    assert list(rft.order.tasks) == ["add", "capital", "largest", "antonym"]
    # as many optimizer steps per stage: 32 items / batch 8 x 2 epochs = 32 prompts / 4 per step
    assert sft.benchmark.train_size / sft.paradigm.per_device_batch_size * sft.paradigm.epochs == 8
    assert rft.benchmark.train_size / (rft.paradigm.per_device_batch_size / rft.paradigm.num_generations) == 8
    assert sft.benchmark.test_size == 64 and list(sft.benchmark.general) == ["successor", "smaller"]
    assert rft.paradigm.kl_coef == 0.0 and rft.checkpoint.keep == "last"
    params = compose_config("+experiment=smollm2_study", hydra=True).hydra.sweeper.params
    assert dict(params) == {"seed": "0,1,2"}  # paradigm, KL and learning rates on the command line
    assert compose_config("+experiment=smollm2_study").paradigm.name == "sft"
    for cfg in cfgs.values():
        plan(cfg)


@pytest.mark.slow  # over a second of CPU: the fast tier stays the one-minute loop
def test_the_forgetting_preset_is_the_setting_its_shipped_runs_were_made_with():
    """+experiment=smollm2_forget is the study's setting with SFT at 4e-5; every run recorded in
    docs/study/smollm2-forget/<paradigm>_lr<rate>/ ran exactly its config at that paradigm and
    rate (some by the long command: +experiment=smollm2_study paradigm=... learning_rate=...)."""
    from pathlib import Path

    from cpt_bench.run.resume import comparable

    assert compose_config("+experiment=smollm2_forget").paradigm.learning_rate == 4e-5
    runs = sorted((Path(__file__).parents[1] / "docs/study/smollm2-forget").glob("*_lr*/seed*/run.json"))
    assert len(runs) >= 6
    for run in runs:
        paradigm, rate = run.parents[1].name.split("_lr")
        info = json.loads(run.read_text())
        cfg = compose_config("+experiment=smollm2_forget", f"paradigm={paradigm}_smollm2",
                             f"paradigm.learning_rate={rate}", f"seed={info['seed']}", "logger=none")
        assert info["config"] == comparable(cfg) and info["status"] == "finished", run
    assert compose_config("+experiment=smollm2_forget", hydra=True).hydra.sweeper.params["seed"] == "0,1,2"


def chat_tokenizer():
    """The shipped tiny tokenizer with a minimal chat template: prompts render as chat turns."""
    from pathlib import Path

    from transformers import AutoTokenizer

    import cpt_bench.builtin

    tok = AutoTokenizer.from_pretrained(Path(cpt_bench.builtin.__file__).parent / "tiny_base")
    tok.chat_template = ("{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    return tok


@pytest.mark.slow  # over a second of CPU: the fast tier stays the one-minute loop
def test_alignment_rows_render_like_sft_and_evaluation():
    from cpt_bench.builtin.aligned import aligned_key, alignment_rows
    from cpt_bench.config import FormatAlignment
    from cpt_bench.model.prompts import completion_text, format_prompt

    tok = chat_tokenizer()
    recipe = FormatAlignment(items_per_task=10, cot_share=0.5, seed=3)
    rows = alignment_rows(tok, recipe)
    assert len(rows) == 10 * len(FORMAT_GENERATORS)
    cot_rows = [r for r in rows if COT_INSTRUCTION in r["prompt"]]
    assert 0.25 < len(cot_rows) / len(rows) < 0.75
    # each row is exactly what SFT trains on and evaluation asks: format_prompt + completion_text
    for row in rows:
        cot = row in cot_rows
        question = row["prompt"].removeprefix("<|user|>").split("\n")[0]
        answer = row["completion"].removesuffix(tok.eos_token)
        style = PromptStyle(cot, COT_INSTRUCTION, SHORT_ANSWER, "\n")
        assert row["prompt"] == format_prompt(tok, f"{question}\n{COT_INSTRUCTION if cot else SHORT_ANSWER}")
        assert row["completion"] == completion_text(tok, answer)
        assert ("\\boxed{" in answer) == cot and style.extract(answer)
    assert alignment_rows(tok, recipe) == rows  # deterministic
    base = type("P", (), {"name": "smollm2-x"})()
    assert aligned_key(base, recipe, rows) != aligned_key(base, FormatAlignment(items_per_task=10, seed=4), rows)


# a format-alignment recipe small enough for a test: 10 items, 2 optimizer steps
SMALL_ALIGN = {"items_per_task": 2, "batch_size": 5, "epochs": 1.0}


@pytest.fixture(scope="module")
def aligned(smollm2_cache):
    from cpt_bench.builtin.aligned import build_aligned_smollm2
    from cpt_bench.config import FormatAlignment

    return smollm2_cache, build_aligned_smollm2(FormatAlignment(**SMALL_ALIGN), smollm2_cache)


@pytest.mark.slow
def test_aligned_build_is_cached_and_recorded(aligned):
    from cpt_bench.builtin.aligned import build_aligned_smollm2
    from cpt_bench.config import FormatAlignment

    cache, path = aligned
    build = json.loads((path / "build.json").read_text())
    assert build["recipe"]["items_per_task"] == 2 and build["items"] == 10 and build["optimizer_steps"] == 2
    assert build["base"].startswith("smollm2-135m-instruct-") and build["train_loss"] > 0
    # bf16 only where this CPU computes it natively (TRL's default bf16 is emulated elsewhere, 17x slower)
    from cpt_bench.model.loading import resolve_precision

    assert build["precision"] == resolve_precision("auto").describe()
    stamp = (path / "build.json").stat().st_mtime_ns
    assert build_aligned_smollm2(FormatAlignment(**SMALL_ALIGN), cache) == path  # cached, not retrained
    assert (path / "build.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_grpo_on_the_aligned_model_through_the_cli(aligned, tmp_path):
    """The real-LM track end to end: the aligned SmolLM2, a natural task in the CoT format,
    GRPO rewarded by the task's grader, the matrix and metrics written."""
    from cpt_bench.outputs.rundir import read_matrix_csv

    from conftest import run_cli

    cache, _ = aligned
    run_dir = tmp_path / "run"
    res = run_cli("+experiment=smollm2_study", "paradigm=rft_smollm2", "order.tasks=[add]",
                  "benchmark.general=[smaller]", "benchmark.train_size=2", "benchmark.test_size=2",
                  "paradigm.num_generations=2",
                  "paradigm.per_device_batch_size=4", "paradigm.max_completion_length=8", "eval.max_new_tokens=8",
                  "eval.kl_samples=2", "logger=none", "checkpoint.keep=none",
                  *[f"model.align.{k}={v}" for k, v in SMALL_ALIGN.items()], f"model.cache_dir={cache}",
                  f"hydra.run.dir={run_dir}")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_matrix_csv(run_dir / "matrix.csv")
    assert {(r["stage"], r["eval_task"]) for r in rows} == {(s, t) for s in (0, 1) for t in ("add", "smaller")}
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "finished" and run["config"]["model"]["name"] == "smollm2_135m_aligned"
    # the preset generates for 4 optimizer steps at once (generation_steps=4): one generation batch
    # of 4 × 2 prompts, the 2 training items repeated to fill it, trained as 4 steps
    assert run["compute"]["generated_tokens"] > 0 and run["compute"]["optimizer_steps"] == 4
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["gain"] is not None and metrics["general_delta"] is not None
