"""The `benchmark` node's schemas: the generated benchmarks (toy, natural), the paper's
multimodal one (mllm_cl7, read from files or the hub) and tasks declared in YAML (custom)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from cpt_bench.choices import Grader, SourceFormat, require
from cpt_bench.errors import ConfigError


@dataclass
class BenchmarkConfig:
    name: str = MISSING
    seed: int = 0  # which items are drawn; train and test stay disjoint for every seed
    train_size: int = 512  # per task
    test_size: int = 100  # per task
    tasks: list[str] = MISSING  # the CPT tasks in the benchmark's own order
    general: list[str] = field(default_factory=list)  # held-out general-ability suite

    def validate(self, at: str = "benchmark") -> None:
        require(self.train_size > 0, f"{at}.train_size", self.train_size, "> 0")
        require(self.test_size > 0, f"{at}.test_size", self.test_size, "> 0")


def check_drawn(cfg, at: str) -> None:
    """The rules of a benchmark whose splits are drawn from sources (mllm_cl7, custom): its
    least items, its skipped share and every cap, the benchmark's and each task's."""
    require(cfg.min_items >= 1, f"{at}.min_items", cfg.min_items, ">= 1")
    require(0 <= cfg.max_skipped_fraction <= 1, f"{at}.max_skipped_fraction", cfg.max_skipped_fraction, "in [0, 1]")
    caps = [("max_train", cfg.max_train), ("max_test", cfg.max_test)]
    caps += [(f"sources.{t}.{k}", getattr(src, k)) for t, src in cfg.sources.items() for k in ("max_train", "max_test")]
    for key, cap in caps:
        require(cap is None or cap > 0, f"{at}.{key}", cap, "> 0 or null (every item)")


@dataclass
class SplitSourceConfig:
    """One split of a real task: a local `path`, or a dataset on the Hugging Face Hub."""

    path: str | None = None  # ShareGPT JSON/JSONL, parquet file, or a dataset folder
    hf_id: str | None = None
    hf_config: str | None = None
    images_hf_config: str | None = None  # GQA on lmms-lab: images in a config of their own
    split: str | None = None  # the hub (or dataset folder) split name


@dataclass
class TaskSourceConfig:
    format: SourceFormat = SourceFormat.auto
    image_root: str | None = None  # this task's images; overrides benchmark.image_root
    max_train: int | None = None  # overrides the benchmark's for this task
    max_test: int | None = None
    train: SplitSourceConfig = field(default_factory=SplitSourceConfig)
    test: SplitSourceConfig = field(default_factory=SplitSourceConfig)


@dataclass
class MLLMBenchmarkConfig:
    """The paper's seven multimodal tasks and the general suite (benchmark=mllm_cl7).

    Each split is read from, in order: `sources.<task>.<split>.path`, the authors' file under
    `data_dir` (ScienceQA_test.json, ...), `sources.<task>.<split>.hf_id`.
    """

    name: str = "mllm_cl7"
    seed: int = 0  # which items a capped split draws
    tasks: list[str] = MISSING  # the CPT tasks in the paper's order
    general: list[str] = field(default_factory=list)  # held-out general-ability suite
    data_dir: str | None = None  # a folder of the authors' ShareGPT files
    # where image paths are looked up (default: data_dir, or an explicit file's folder): as
    # written, else under this root by their trailing components, longest first, so a file
    # written on another machine (/home/them/data/VizWiz/val/1.jpg) finds <root>/VizWiz/val/1.jpg
    image_root: str | None = None
    max_train: int | None = None  # per task; null = every item
    max_test: int | None = None
    # a drawn split with fewer items (or than its cap, if smaller), or with more of its rows
    # skipped (image missing or unreadable, empty answer), stops the run before any model loads
    min_items: int = 1
    max_skipped_fraction: float = 0.05
    sources: dict[str, TaskSourceConfig] = field(default_factory=dict)

    def validate(self, at: str = "benchmark") -> None:
        check_drawn(self, at)


@dataclass
class CustomTaskConfig:
    """One task declared in YAML (benchmark=custom, tasks/custom.py): where its items are,
    which fields hold them, how its prompt reads and how an answer is graded."""

    train: SplitSourceConfig = field(default_factory=SplitSourceConfig)  # not needed by a general-suite task
    test: SplitSourceConfig = field(default_factory=SplitSourceConfig)
    question: str = "question"  # the field holding the question (`{question}` in the template)
    answer: str = "answer"  # the field holding the reference answer the grader compares with
    target: str | None = None  # the field SFT trains on where it is not the answer (needed by grader=regex)
    rationale: str | None = None  # a field with worked reasoning: the <think> part of CoT SFT targets
    choices: str | None = None  # grader=choice: a field listing the options (else the question's "A. ..." lines)
    # the prompt: {question} is the question field, any other {name} the row's field of that name
    template: str = "{question}"  # e.g. "Context: {context}\nQuestion: {question}"
    system: str | None = None  # a system line (models with a chat template; others see it above the prompt)
    instruction: str | None = None  # the direct-answer line, null: the benchmark's `direct_instruction`
    grader: str = "exact"  # a `choices.Grader` (a name, checked by validate: an unknown one is one line)
    entry_point: str | None = None  # grader=python: "module:function", called (answer, example) -> 0..1
    max_train: int | None = None  # overrides the benchmark's for this task
    max_test: int | None = None
    format: SourceFormat = SourceFormat.auto  # a ShareGPT or EasyR1 file gives `question` and `answer` itself


@dataclass
class CustomBenchmarkConfig:
    """Text tasks declared in YAML, no Python (benchmark=custom): the CPT tasks in `tasks`, the
    general suite in `general`, each declared under `sources.<task>` (docs/custom_tasks.md)."""

    name: str = "custom"
    seed: int = 0  # which items a capped split draws
    tasks: list[str] = MISSING  # the CPT tasks in their default order
    general: list[str] = field(default_factory=list)  # held-out general-ability suite
    # relative source paths are read from here; null: the example tasks shipped with cpt-bench
    data_dir: str | None = None
    max_train: int | None = None  # per task; null = every item
    max_test: int | None = None
    min_items: int = 1  # a split with fewer (or than its cap, if smaller) stops the run before any model
    max_skipped_fraction: float = 0.05  # of the rows looked at (empty answers); more stops the run
    cot_instruction: str | None = None  # appended with cot=true; null: EasyR1's <think>/\boxed{} line (the paper's)
    direct_instruction: str = ""  # appended without CoT (a task's `instruction` replaces it)
    separator: str = "\n"  # between the prompt and the instruction
    sources: dict[str, CustomTaskConfig] = field(default_factory=dict)

    def validate(self, at: str = "benchmark") -> None:
        check_drawn(self, at)
        declared = ", ".join(self.sources) or "none"
        for task in [*self.tasks, *self.general]:
            if task not in self.sources:
                raise ConfigError(f"{at}.sources.{task} is not declared: every task of {at}.tasks and "
                                  f"{at}.general needs one (declared: {declared})")
        for task, src in self.sources.items():
            key = f"{at}.sources.{task}"
            if src.grader not in set(Grader):
                raise ConfigError(f"{key}.grader={src.grader!r} is no grader; graders: {', '.join(Grader)}")
            if src.grader == Grader.python and not src.entry_point:
                raise ConfigError(f"{key}.grader=python needs {key}.entry_point (module:function)")
            if src.grader == Grader.regex and not src.target:
                raise ConfigError(f"{key}.grader=regex reads the answer as a pattern: name the field SFT trains "
                                  f"on in {key}.target")
