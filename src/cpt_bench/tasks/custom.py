"""Tasks declared in YAML, no Python (`benchmark=custom`, docs/custom_tasks.md).

Each task of `benchmark.sources` names its train and test sources (JSON, JSONL, parquet, a
`datasets` folder or a hub id: read by sources.py as the paper's tasks are), the fields that
hold the question and the answer, an optional prompt template, system line and rationale,
and a grader by name (`choices.Grader`). The grader serves SFT's targets, GRPO's rewards and
evaluation alike, through `Task.grade`, as the built-in tasks' graders do.

A declaration is checked in two steps, each one line naming the task and the setting: what
needs no data (a template that does not parse, an entry point that does not import) when the
benchmark is built, in `plan`; what needs the files (a missing file, a field the rows lack, a
split without items, a pattern that does not compile) when the splits are drawn, which the
controller does before any model is built.
"""

from __future__ import annotations

import importlib
import logging
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cpt_bench.choices import Grader
from cpt_bench.config.benchmarks import CustomBenchmarkConfig, CustomTaskConfig
from cpt_bench.errors import ConfigError, DataError
from cpt_bench.tasks.base import Benchmark, Example, stable_seed
from cpt_bench.tasks.grading import grade_choice, grade_exact, grade_numeric, grade_regex, parse_choices
from cpt_bench.tasks.mllm import COT_INSTRUCTION, LETTERS, lettered
from cpt_bench.tasks.sources import EMPTY_ANSWER, Row, Skip, SourceSpec, draw, open_rows, prompt_and_answer

log = logging.getLogger("cpt_bench")

# the example sequence shipped with cpt-bench: the toy tasks written out as JSONL
# (`python -m cpt_bench.builtin.export` rebuilds it), read where `benchmark.data_dir` is null
EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "builtin" / "toy_jsonl"

GradeFn = Callable[[str, Example], float]


def _math(answer: str, ex: Example) -> float:
    from cpt_bench.tasks.safe_math import grade_answer  # sympy in a time-limited worker, never in process

    return float(grade_answer(answer, ex.answer))


GRADERS: dict[Grader, GradeFn] = {
    Grader.exact: lambda answer, ex: grade_exact(answer, ex.answer),
    Grader.numeric: lambda answer, ex: grade_numeric(answer, ex.answer),
    Grader.choice: lambda answer, ex: grade_choice(answer, ex.answer, ex.meta.get("choices")),
    Grader.math: _math,
    Grader.regex: lambda answer, ex: grade_regex(answer, ex.answer),
}


def entry_point(spec: str, key: str) -> GradeFn:
    """`module:function` imported, or one line saying why not."""
    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name) if name else None
    except ImportError as exc:
        raise ConfigError(f"{key}={spec!r}: cannot import {module!r} ({exc})") from None
    except AttributeError:
        raise ConfigError(f"{key}={spec!r}: {module!r} has no {name!r}") from None
    if not callable(fn):
        raise ConfigError(f"{key}={spec!r} must name a function as module:function, called (answer, example)")
    return fn


def template_fields(template: str, key: str) -> list[str]:
    """The fields a prompt template names ("{context}\\n{question}" -> context, question)."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"{key}={template!r} does not parse ({exc}); write fields as {{name}}, braces as {{{{ }}}}") \
            from None
    if any(not n or not n.isidentifier() for n in names):
        raise ConfigError(f"{key}={template!r}: every {{...}} must name a field, e.g. {{question}}")
    return names


@dataclass
class CustomTask:
    """One declared task: reads its sources on first use, then keeps the items."""

    name: str
    spec: CustomTaskConfig
    sources: dict[str, SourceSpec | None]  # train / test
    limits: dict[str, int | None]  # max items per split (None = all)
    grader: GradeFn
    seed: int = 0
    min_items: int = 1
    max_skipped_fraction: float = 0.05
    key: str = ""  # the config node that declares it, named in errors
    _items: dict[str, list[Example]] = field(default_factory=dict, repr=False)

    def needed(self) -> list[str]:
        """The fields every row must have: the question, the template's (where `{question}` is the
        declared question field), the answer and the optional ones named."""
        s = self.spec
        fields = [s.question if f == "question" else f for f in template_fields(s.template, f"{self.key}.template")]
        return list(dict.fromkeys(f for f in [s.question, *fields, s.answer, s.target, s.rationale, s.choices] if f))

    def _fields(self, row: Row) -> dict:
        """A row's fields; a ShareGPT or EasyR1 row also gives its prompt and answer as the
        declared question and answer fields."""
        if row.format == "native":
            return row.fields
        question, answer = prompt_and_answer(row)
        return {self.spec.question: question, self.spec.answer: answer, **row.fields}

    def to_example(self, row: Row) -> Example:
        s, f = self.spec, self._fields(row)
        answer = f.get(s.answer)
        if answer is None or not str(answer).strip():
            raise Skip(EMPTY_ANSWER)  # counted against max_skipped_fraction, as a hidden test split's rows
        values = {k: "" if v is None else v for k, v in f.items()}
        try:
            prompt = s.template.format_map({**values, "question": values[s.question]})  # {question}: the declared one
        except KeyError as exc:  # a row without a field the others have
            raise DataError(f"task {self.name!r}: a row has no field {exc.args[0]!r} ({', '.join(sorted(f))}); "
                            f"fix the data or {self.key}") from None
        meta: dict = {}
        answer = str(answer).strip()
        if s.grader == Grader.choice:
            prompt, answer, meta["choices"] = self._options(prompt, answer, f)
        target = str(f[s.target]).strip() if s.target else None
        rationale = str(f[s.rationale]).strip() if s.rationale and f.get(s.rationale) is not None else ""
        return Example(self.name, prompt, answer, rationale, meta, direct_instruction=s.instruction, system=s.system,
                       target=target)

    def _options(self, prompt: str, answer: str, f: dict) -> tuple[str, str, dict[str, str]]:
        """(prompt with lettered options, the answer's letter, the options): options from the
        `choices` field, appended as "A. ..." lines, else those the question already lists."""
        if self.spec.choices:
            options = [str(o) for o in f[self.spec.choices]]
            choices = dict(zip(LETTERS, options))
            prompt = f"{prompt}\n{lettered(options)}"
        else:
            choices = parse_choices(prompt)
        letter = next((k for k, v in choices.items() if v.strip().lower() == answer.lower()), None)
        if letter is None and answer.strip("()").upper() in choices:
            letter = answer.strip("()").upper()
        if letter is None:
            raise DataError(f"task {self.name!r}: answer {answer!r} is neither a letter nor the text of one of the "
                            f"options {list(choices.values())} ({self.key}.grader=choice)")
        return prompt, letter, choices

    def _split(self, split: str) -> list[Example]:
        if split in self._items:
            return self._items[split]
        src = self.sources.get(split)
        if src is None:
            held_out = " (a general-suite task is only tested)" if split == "train" else ""
            raise ConfigError(f"task {self.name!r} has no {split} data{held_out}; set {self.key}.{split}.path "
                              f"(or .hf_id)")
        rows = open_rows(src)
        if len(rows):
            columns = set(rows.columns) | ({self.spec.question, self.spec.answer} if rows.format != "native" else set())
            missing = [c for c in self.needed() if c not in columns]
            if missing:
                raise DataError(f"task {self.name!r}: {split} data {src.describe()} has no field {missing[0]!r}; its "
                                f"fields: {', '.join(sorted(columns))}; name the right one in {self.key}")
        limit = self.limits.get(split)
        drawn = draw(rows, self.to_example, limit, stable_seed("custom", self.name, split, self.seed))
        problem = drawn.shortfall(min(self.min_items, limit or self.min_items), self.max_skipped_fraction)
        if problem is not None:
            raise DataError(f"task {self.name!r}: {split} data {src.describe()}: {problem}")
        if self.spec.grader == Grader.regex:
            self._check_patterns(split, drawn.examples)
        log.info("%s %s: %d items from %s%s", self.name, split, len(drawn.examples), src.describe(),
                 f"; {drawn.skipped} rows skipped ({EMPTY_ANSWER})" if drawn.skipped else "")
        self._items[split] = drawn.examples
        return drawn.examples

    def _check_patterns(self, split: str, items: list[Example]) -> None:
        import regex

        for i, ex in enumerate(items):
            try:
                regex.compile(ex.answer)
            except regex.error as exc:
                raise DataError(f"task {self.name!r}: {split} item {i}'s answer {ex.answer!r} is no regular "
                                f"expression ({exc}); {self.key}.grader=regex reads answers as patterns") from None

    def train(self) -> list[Example]:
        return self._split("train")

    def test(self) -> list[Example]:
        return self._split("test")

    @property
    def chance(self) -> float | None:
        """1/k averaged over the test items for multiple choice (`Task.chance`); None otherwise."""
        if self.spec.grader != Grader.choice:
            return None
        items = self.test()
        return sum(1 / len(ex.meta["choices"]) for ex in items) / len(items)

    def grade(self, answer: str | None, example: Example) -> float:
        return 0.0 if answer is None else float(self.grader(answer, example))


def _source(cfg: CustomBenchmarkConfig, task: str, split: str) -> SourceSpec | None:
    """Where `split` of `task` comes from; a relative path is read under `data_dir` (null: the
    shipped example's folder). Pure: nothing is read or checked on disk here."""
    spec: CustomTaskConfig = cfg.sources[task]
    node = getattr(spec, split)
    key = f"benchmark.sources.{task}.{split}"
    common = dict(task=task, split=split, key=key, format=spec.format)
    if node.path:
        path = Path(node.path).expanduser()
        base = Path(cfg.data_dir).expanduser() if cfg.data_dir else EXAMPLE_DIR
        setting = f"{key}.path" + ("" if path.is_absolute() else f" under benchmark.data_dir={cfg.data_dir}")
        return SourceSpec(path=str(path if path.is_absolute() else base / path), setting=setting,
                          hf_split=node.split, hf_config=node.hf_config, **common)
    if node.hf_id:
        return SourceSpec(hf_id=node.hf_id, hf_config=node.hf_config, hf_split=node.split or split, **common)
    return None


def build_custom(cfg: CustomBenchmarkConfig) -> Benchmark:
    """The declared tasks (cheap: sources are opened by train()/test(); what needs no data is
    checked here)."""
    tasks = {}
    for name in dict.fromkeys([*cfg.tasks, *cfg.general]):
        spec, key = cfg.sources[name], f"benchmark.sources.{name}"
        grader = (entry_point(spec.entry_point, f"{key}.entry_point") if spec.grader == Grader.python
                  else GRADERS[Grader(spec.grader)])
        task = CustomTask(name, spec, {s: _source(cfg, name, s) for s in ("train", "test")},
                          {s: getattr(spec, f"max_{s}") or getattr(cfg, f"max_{s}") for s in ("train", "test")},
                          grader, seed=cfg.seed, min_items=cfg.min_items,
                          max_skipped_fraction=cfg.max_skipped_fraction, key=key)
        task.needed()  # the template parses
        tasks[name] = task
    cot = COT_INSTRUCTION if cfg.cot_instruction is None else cfg.cot_instruction  # EasyR1's, the paper's
    return Benchmark("custom", tasks, list(cfg.tasks), list(cfg.general), cot, cfg.direct_instruction,
                     separator=cfg.separator)
