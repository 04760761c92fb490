"""Tasks declared in YAML (`benchmark=custom`, tasks/custom.py): the shipped example is the toy
benchmark's items, runs SFT and GRPO to the toy benchmark's very matrices, and every bad
declaration stops before any model in one line naming the task and the setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_natural import chat_tokenizer

from cpt_bench.builtin.export import SHIPPED, write_toy_jsonl
from cpt_bench.errors import ConfigError
from cpt_bench.model.prompts import PromptStyle
from cpt_bench.outputs.rundir import read_matrix_csv
from cpt_bench.run.plan import plan
from cpt_bench.tasks.base import Example

from conftest import QUICK, RFT_COT_RIF, cli_run, compose_config, run_cli


def _benchmark(*overrides: str):
    return plan(compose_config("benchmark=custom", *overrides), here=False).benchmark  # a later benchmark= wins


def _items(task, split: str) -> list[tuple[str, str, str]]:
    return [(ex.prompt, ex.answer, ex.rationale) for ex in getattr(task, split)()]


def test_the_shipped_example_is_what_its_builder_writes(tmp_path):
    written = write_toy_jsonl(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in SHIPPED.iterdir())
    assert all(p.read_bytes() == (SHIPPED / p.name).read_bytes() for p in written)


def test_the_example_declares_the_toy_benchmark_item_for_item():
    custom = _benchmark()
    toy = plan(compose_config("benchmark=toy"), here=False).benchmark
    assert (custom.order, custom.general) == (toy.order, toy.general)
    assert (custom.cot_instruction, custom.direct_instruction, custom.separator) == \
        (toy.cot_instruction, toy.direct_instruction, toy.separator)
    for name in ("sort", "min"):  # a CPT task and a general-suite one
        assert _items(custom.tasks[name], "test") == _items(toy.tasks[name], "test")
    assert _items(custom.tasks["sort"], "train") == _items(toy.tasks["sort"], "train")


# --- bad declarations: one line naming the task and the setting, before any model -------------

def _declared(tmp_path: Path, task: dict, *overrides: str, rows: list[dict] | None = None,
              tasks: dict[str, dict] | None = None) -> list[str]:
    """A benchmark of one task `t` (or of `tasks`), whose train and test files hold `rows`,
    declared as a user declares hers: a YAML file in a config folder of her own (`--config-dir`,
    here its search path)."""
    rows = [{"question": f"q{i}", "answer": str(i)} for i in range(4)] if rows is None else rows
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "conf" / "benchmark").mkdir(parents=True, exist_ok=True)
    files = {"train": {"path": "train.jsonl"}, "test": {"path": "test.jsonl"}}
    tasks = tasks or {"t": task}
    declared = {"defaults": ["/benchmark_custom_schema@_here_", "_self_"], "data_dir": str(tmp_path),
                "tasks": list(tasks), "sources": {name: {**files, **decl} for name, decl in tasks.items()}}
    (tmp_path / "conf" / "benchmark" / "mine.yaml").write_text(yaml.safe_dump(declared))
    return ["benchmark=mine", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "eval.general=false", *overrides]


def _drawn(overrides: list[str]):
    bench = _benchmark(*overrides)
    return bench.test_sets(bench.order, bench.general), bench


@pytest.mark.parametrize("task, rows, expected", [
    ({"test": {"path": "nowhere.jsonl"}}, None, "task 't': test data .*nowhere.jsonl does not exist"),
    ({"question": "prompt"}, None, "task 't': test data .* has no field 'prompt'; its fields: answer, question; "
                                   "name the right one in benchmark.sources.t"),
    ({"template": "{context}: {question}"}, None, "has no field 'context'"),
    ({}, [], "task 't': test data .*: 0 items, 0 of 0 rows skipped .*needs >= 1 items"),
    ({"grader": "regex", "target": "question"}, [{"question": "q", "answer": "a("}],
     "task 't': test item 0's answer 'a\\(' is no regular expression"),
    ({"grader": "choice", "choices": "opts"}, [{"question": "q", "answer": "d", "opts": ["a", "b"]}],
     "task 't': answer 'd' is neither a letter nor the text of one of the options"),
])
def test_a_bad_file_or_field_is_one_line_when_the_splits_are_drawn(tmp_path, task, rows, expected):
    with pytest.raises(ConfigError, match=expected) as err:
        _drawn(_declared(tmp_path, task, rows=rows))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("task, overrides, expected", [
    ({}, ["benchmark.tasks=[t,u]"], r"benchmark.sources.u is not declared: .* \(declared: t\)"),
    ({"grader": "fuzzy"}, [], r"benchmark.sources.t.grader='fuzzy' is no grader; graders: exact, numeric, choice"),
    ({"grader": "python"}, [], r"benchmark.sources.t.grader=python needs benchmark.sources.t.entry_point"),
    ({"grader": "python", "entry_point": "no_such_module:grade"}, [], "cannot import 'no_such_module'"),
    ({"grader": "python", "entry_point": "json:nothing"}, [], "'json' has no 'nothing'"),
    ({"grader": "regex"}, [], r"grader=regex reads the answer as a pattern: name the field SFT trains on"),
    ({"template": "{question"}, [], r"benchmark.sources.t.template='\{question' does not parse"),
    ({"template": "{0}"}, [], r"every \{...\} must name a field"),
])
def test_a_bad_declaration_is_one_line_before_any_data_is_read(tmp_path, task, overrides, expected):
    with pytest.raises(ConfigError, match=expected) as err:
        _benchmark(*_declared(tmp_path, task, *overrides))
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_an_unknown_grader_and_a_missing_file_are_one_line_from_the_cli(tmp_path):
    """As docs/custom_tasks.md runs it: the declaration in a config folder of one's own."""
    run_dir = tmp_path / "run"
    for task, expected in (({"grader": "fuzzy"}, "benchmark.sources.t.grader='fuzzy' is no grader; graders: exact"),
                           ({"test": {"path": "nowhere.jsonl"}}, "nowhere.jsonl does not exist")):
        overrides = [o for o in _declared(tmp_path, task) if not o.startswith("hydra.searchpath")]
        res = run_cli("--config-dir", str(tmp_path / "conf"), *overrides, f"hydra.run.dir={run_dir}")
        assert res.returncode != 0 and expected in res.stderr, res.stderr
        assert len([line for line in res.stderr.splitlines() if line.strip()]) == 1, res.stderr
        assert not run_dir.exists()


def test_the_documented_declaration_composes_and_names_a_missing_file(tmp_path):
    """docs/custom_tasks.md's TRACE declaration, as written: it composes, plans, and without
    TRACE's files here its first task names the file it looked for."""
    doc = (Path(__file__).parents[1] / "docs" / "custom_tasks.md").read_text()
    text = doc.split("## A declaration", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "benchmark").mkdir()
    (tmp_path / "benchmark" / "trace.yaml").write_text(text)
    bench = _benchmark("benchmark=trace", f"hydra.searchpath=[file://{tmp_path}]", "benchmark.max_test=100")
    assert bench.order == ["C-STANCE", "FOMC", "ScienceQA", "NumGLUE-cm", "NumGLUE-ds"]
    with pytest.raises(ConfigError, match=r"task 'C-STANCE': test data /data/TRACE/LLM-CL-Benchmark_5000/C-STANCE/"
                                          r"test.json does not exist"):
        bench.test_sets(bench.order, [])


# --- graders, prompts ----------------------------------------------------------------------

def grade_length(answer: str, example: Example) -> float:
    """A grader of one's own (grader=python): right when the answer has the reference's length."""
    return float(len(answer) == len(example.answer))


def test_each_grader_serves_rewards_and_evaluation(tmp_path):
    rows = [{"q": "How many?", "a": "1,234", "opts": ["red", "blue"], "c": "blue", "pat": "blue|navy"}]
    graders = {"n": {"answer": "a", "grader": "numeric"},
               "c": {"answer": "c", "grader": "choice", "choices": "opts"},
               "r": {"answer": "pat", "grader": "regex", "target": "c"},
               "p": {"answer": "a", "grader": "python", "entry_point": "test_custom_tasks:grade_length"},
               "e": {"answer": "c"}}
    cases = {"n": [("about 1234 of them", 1.0), ("1,235", 0.0)],
             "c": [("B", 1.0), ("(B) blue", 1.0), ("blue", 1.0), ("A", 0.0)],
             "r": [("Navy", 1.0), ("navy blue", 0.0)],
             "p": [("abcde", 1.0), ("ab", 0.0)],
             "e": [(" BLUE ", 1.0), ("blue!", 0.0)]}
    items, bench = _drawn(_declared(tmp_path, {}, rows=rows,
                                    tasks={k: {"question": "q", **v} for k, v in graders.items()}))
    for name, task in bench.tasks.items():
        ex = items[name][0]
        for given, score in cases[name]:
            assert task.grade(given, ex) == score, (name, given)
        assert task.grade(None, ex) == 0.0
    assert items["e"][0].answer == "blue" and items["r"][0].target == "blue"


def test_options_system_line_and_target_reach_the_prompt_and_sft(tmp_path):
    rows = [{"q": "Sky?", "opts": ["red", "blue"], "a": "blue", "why": "it scatters", "say": "B. blue"}]
    decl = {"question": "q", "answer": "a", "grader": "choice", "choices": "opts", "rationale": "why",
            "target": "say", "system": "You are terse.", "template": "Colour. {question}"}
    items, bench = _drawn(_declared(tmp_path, decl, rows=rows))
    ex = items["t"][0]
    assert (ex.prompt, ex.answer, ex.meta["choices"]) == ("Colour. Sky?\nA. red\nB. blue", "B",
                                                          {"A": "red", "B": "blue"})
    assert bench.tasks["t"].chance == 0.5
    style = PromptStyle(False, "think", "Answer briefly.", "\n")
    assert style.target(ex) == "B. blue"  # SFT trains on the target field; the grader reads the answer
    assert PromptStyle(True, "think").target(ex) == "<think> it scatters </think> \\boxed{B. blue}"
    chat = style.prompt(chat_tokenizer(), ex)
    assert chat == "<|user|>You are terse.<|user|>Colour. Sky?\nA. red\nB. blue\nAnswer briefly.<|assistant|>"
    assert style.messages(ex)[0] == {"role": "system", "content": "You are terse."}


# --- end to end: the toy benchmark's matrices, from YAML ------------------------------------

def _without(overrides: list[str], *keys: str) -> list[str]:
    return [o for o in overrides if not o.startswith(keys)]


@pytest.mark.slow
@pytest.mark.parametrize("fixture, overrides, sizes", [
    ("quick_run", QUICK, (256, 50)),
    ("rft_cot_rif_run", RFT_COT_RIF, (64, 30)),
])
def test_the_example_sequence_trains_to_the_toy_benchmark_s_matrix(request, tmp_path_factory, model_cache,
                                                                   fixture, overrides, sizes):
    """The toy tasks declared in YAML run SFT (and GRPO with CoT and RIF) to the same matrix as
    the built-in toy tasks on the same items (the fixtures' runs: the quick SFT sequence with two
    inner points, which leave its matrix as it is, and the short GRPO one)."""
    toy_dir, _ = request.getfixturevalue(fixture)
    data = tmp_path_factory.mktemp("toy_jsonl")
    write_toy_jsonl(data, train_size=sizes[0], test_size=sizes[1])
    run_dir, _ = cli_run(tmp_path_factory, f"custom-{fixture}", "benchmark=custom", f"benchmark.data_dir={data}",
                         *_without(overrides, "benchmark.train_size", "benchmark.test_size"), "logger=none",
                         model_cache=model_cache)
    assert read_matrix_csv(run_dir / "matrix.csv") == read_matrix_csv(toy_dir / "matrix.csv")
