"""What a run records about itself: one `StageRecord` per stage and the `Compute` it spent.

A stage's record is written once, last, as `stages/<kk>-<task>/stage.json` (the mark that
the stage is complete) and read back by resume and by the report, always through
`to_json` / `from_json`. `Compute` is the run's running total; the live loop and a resumed
run add stages to it the same way (`add`), so a new counter is one new field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


def _drop_none(data: dict) -> dict:
    return {k: v for k, v in data.items() if v is not None}


@dataclass
class TrainStats:
    """What a stage's training consumed."""

    items: int  # training items after filtering
    optimizer_steps: int
    generated_tokens: int = 0  # tokens generated to train: GRPO's rollouts, a paradigm's rollout step; 0 for SFT
    replayed: int = 0  # of `items`, those replayed from earlier tasks (replay.fraction)
    processed_tokens: int = 0  # tokens the trainer processed (TRL's num_tokens: sequences, or prompts + completions)


@dataclass
class FilterStats:
    """RIF before a stage: the rule, what it kept and what the rollouts cost."""

    rule: str
    num_rollouts: int
    items: int
    kept: int
    kept_fraction: float
    rollout_seconds: float
    rollout_tokens: int
    train_items_saved: int


@dataclass
class RolloutStats:
    """A paradigm's rollout step before a stage (self-SFT, reward-variance-weighted SFT): how it
    sampled, what the samples left to train on and what they cost."""

    purpose: str  # what the rollouts are for: self_sft, reward_variance, reward_std
    num_rollouts: int
    temperature: float
    max_new_tokens: int
    items: int  # items rolled out (after RIF, when it ran)
    kept: int  # items that train: with a rewarded sample (self-SFT), with a non-zero weight (weighting)
    kept_fraction: float
    rows: int  # training rows (self-SFT: one per rewarded sample kept)
    mean_success: float  # p averaged over the items
    rollout_seconds: float
    rollout_tokens: int
    # the share of the rows trained on the model's own text that differs from SFT's target for
    # the same item (whitespace aside); None: no row trains on sampled text (weighting). On the toy
    # with CoT the correct samples are almost always the reference text itself: an "on-policy"
    # control at a low share trains reference strings, close to RIF-filtered SFT
    off_reference: float | None = None


@dataclass
class KLToBase:
    """Output drift on one set of prompts in one direction (model.drift: `output_kl` the reverse
    KL(pi_t || pi_0), `forward_kl` the forward KL(pi_0 || pi_t)): in nats per sequence, its
    standard error, and per token."""

    kl: float
    se: float
    per_token: float


@dataclass
class Diagnostics:
    """How a stage trained and how far it moved the model: stage.json's `diagnostics` (one flat
    object: the trainer's keys, then these fields, a KL as `<direction>_<set>`, `..._se`,
    `..._per_token`), W&B's `cpt/diag/*`, and what the report's drift section reads.

    The KL directions keep their own names: `kl_to_base_*` is the reverse KL(pi_t || pi_0)
    (responses from the stage's model; the name older runs wrote it under), `forward_kl_*` the
    forward KL(pi_0 || pi_t) (responses from the base), RL's Razor's predictor."""

    training: dict[str, float] = field(default_factory=dict)  # the trainer's per-stage means, TRL's log names
    param_drift: float | None = None  # ||theta_t - theta_0||
    kl_to_base_task: KLToBase | None = None  # reverse KL, on the trained task's test prompts
    kl_to_base_general: KLToBase | None = None  # reverse KL, on the general suite's
    kl_to_base_seconds: float | None = None  # the reverse KL's measurement
    forward_kl_task: KLToBase | None = None  # forward KL, on the trained task's test prompts
    forward_kl_general: KLToBase | None = None  # forward KL, on the general suite's
    forward_kl_seconds: float | None = None  # the forward KL's, with the base's draw when this stage made it
    format_rate: float | None = None  # CoT format compliance, averaged over the evaluated tasks
    rif_kept_fraction: float | None = None

    KL_DIRECTIONS = ("kl_to_base", "forward_kl")  # reverse, forward
    KL_SETS = ("task", "general")
    OWN = ("param_drift", "kl_to_base_seconds", "forward_kl_seconds", "format_rate", "rif_kept_fraction")

    @classmethod
    def kl_keys(cls) -> list[str]:
        """`kl_to_base_task`, `kl_to_base_general`, `forward_kl_task`, `forward_kl_general`."""
        return [f"{d}_{s}" for d in cls.KL_DIRECTIONS for s in cls.KL_SETS]

    def drift(self) -> dict[str, float]:
        """The drift measures recorded: param_drift and each KL (`kl_keys`) that was measured."""
        out = {"param_drift": self.param_drift, **{k: kl.kl for k in self.kl_keys() if (kl := getattr(self, k))}}
        return {k: v for k, v in out.items() if v is not None}

    def to_json(self) -> dict[str, float]:
        data: dict[str, float] = dict(self.training)
        for key in self.kl_keys():
            if kl := getattr(self, key):
                data |= {key: kl.kl, f"{key}_se": kl.se, f"{key}_per_token": kl.per_token}
        return data | _drop_none({k: getattr(self, k) for k in self.OWN})

    @classmethod
    def from_json(cls, data: dict) -> Diagnostics:
        data = dict(data)
        kls = {key: KLToBase(data.pop(key), data.pop(f"{key}_se", float("nan")),
                             data.pop(f"{key}_per_token", float("nan")))
               for key in cls.kl_keys() if key in data}
        own = {k: data.pop(k) for k in cls.OWN if k in data}
        return cls(training=data, **kls, **own)


HARNESS_PREFIX = "harness:"  # a harness task's column in the matrix (model/harness.py)


@dataclass
class HarnessScore:
    """One harness task's score on one model."""

    task: str
    metric: str  # the primary metric, with the harness's filter name ("exact_match,strict-match")
    value: float
    stderr: float | None
    n: int  # items scored
    num_fewshot: int | None
    version: str | None  # the task's own version

    @property
    def column(self) -> str:
        return HARNESS_PREFIX + self.task


@dataclass
class HarnessResult:
    """A stage's harness evaluation: what ran and each task's score (stage.json's `harness`)."""

    backend: str
    version: str  # the harness package's version
    scores: list[HarnessScore]
    seconds: float

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> HarnessResult:
        return cls(data["backend"], data["version"], [HarnessScore(**s) for s in data["scores"]], data["seconds"])


@dataclass
class StageTimings:
    """Seconds per step of a stage (stage 0 only evaluates)."""

    train_seconds: float | None = None
    save_seconds: float | None = None
    optimizer_steps: int | None = None
    eval_seconds: float | None = None
    rollout_seconds: float | None = None  # a paradigm's rollout step (RIF's is in its FilterStats)
    inner_eval_seconds: float | None = None  # eval.inner_points: the points' evaluations (their saves: save_seconds)

    def to_json(self) -> dict:
        return _drop_none(asdict(self))


@dataclass
class ContinualStats:
    """What a method did at the end of a stage in the controller (stage.json's `cl`): the merge
    it made, and the un-merged model's accuracy when asked for (`cl.evaluate_unmerged`)."""

    method: str
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    unmerged_accuracy: dict[str, float] | None = None  # eval task -> accuracy before the merge
    unmerged_eval_seconds: float | None = None


@dataclass
class StageRecord:
    """One row of the accuracy matrix and everything known about the stage that produced it."""

    stage: int  # 0 = the base model
    trained_task: str  # "" at stage 0; "joint" for the multi-task baseline
    accuracy: dict[str, float]  # eval task -> accuracy in [0, 1]
    n: dict[str, int]  # eval task -> items evaluated
    model: str | None = None  # stage 0: the base model evaluated
    filter: FilterStats | None = None  # noqa: A003 - the stage.json key
    rollouts: RolloutStats | None = None  # a paradigm's rollout step
    train: TrainStats | None = None
    diagnostics: Diagnostics = field(default_factory=Diagnostics)  # cpt/diag/* in W&B
    format_rate: dict[str, float] = field(default_factory=dict)  # eval task -> CoT format compliance
    timings: StageTimings = field(default_factory=StageTimings)
    disk_bytes: int | None = None  # the stage folder (checkpoint, eval records, logs) when it completed
    harness: HarnessResult | None = None  # eval.harness's scores (their values are also in `accuracy`)
    cl: ContinualStats | None = None  # what the continual-learning method did after training (a merge)

    def to_json(self) -> dict:
        data = {"stage": self.stage, "trained_task": self.trained_task, "accuracy": self.accuracy, "n": self.n,
                "model": self.model, "disk_bytes": self.disk_bytes,
                "filter": asdict(self.filter) if self.filter else None,
                "rollouts": asdict(self.rollouts) if self.rollouts else None,
                "train": asdict(self.train) if self.train else None,
                "diagnostics": self.diagnostics.to_json(), "format_rate": self.format_rate,
                "timings": self.timings.to_json(), "harness": self.harness.to_json() if self.harness else None,
                "cl": asdict(self.cl) if self.cl else None}
        return _drop_none(data)

    @classmethod
    def from_json(cls, data: dict) -> StageRecord:
        return cls(
            stage=data["stage"], trained_task=data["trained_task"], accuracy=data["accuracy"], n=data["n"],
            model=data.get("model"), disk_bytes=data.get("disk_bytes"),
            filter=FilterStats(**data["filter"]) if data.get("filter") else None,
            rollouts=RolloutStats(**data["rollouts"]) if data.get("rollouts") else None,
            train=TrainStats(**data["train"]) if data.get("train") else None,
            diagnostics=Diagnostics.from_json(data.get("diagnostics", {})), format_rate=data.get("format_rate", {}),
            timings=StageTimings(**data.get("timings", {})),
            harness=HarnessResult.from_json(data["harness"]) if data.get("harness") else None,
            cl=ContinualStats(**data["cl"]) if data.get("cl") else None,
        )


@dataclass
class Compute:
    """What a run spent, summed over its completed stages (`run.json`'s `compute`)."""

    optimizer_steps: int = 0
    processed_tokens: int = 0  # by the trainers (TRL's num_tokens)
    generated_tokens: int = 0  # generated to train: GRPO's rollouts, a paradigm's rollout step
    rollout_tokens: int = 0  # RIF rollouts
    train_seconds: float = 0.0
    rollout_seconds: float = 0.0  # RIF's rollouts and a paradigm's rollout step
    eval_seconds: float = 0.0
    inner_eval_seconds: float = 0.0  # eval.inner_points' evaluations (recorded only when there were any)
    wall_seconds: float | None = None  # set when the run ends

    def add(self, record: StageRecord) -> None:
        """Count one completed stage (live, or read back from its stage.json on resume)."""
        if record.train:
            self.optimizer_steps += record.train.optimizer_steps
            self.processed_tokens += record.train.processed_tokens
            self.generated_tokens += record.train.generated_tokens
        if record.filter:
            self.rollout_tokens += record.filter.rollout_tokens
            self.rollout_seconds += record.filter.rollout_seconds
        self.rollout_seconds += record.timings.rollout_seconds or 0.0
        self.train_seconds += record.timings.train_seconds or 0.0
        self.eval_seconds += record.timings.eval_seconds or 0.0
        self.inner_eval_seconds += record.timings.inner_eval_seconds or 0.0

    def to_json(self) -> dict:
        data = asdict(self)
        if not self.inner_eval_seconds:  # a run without inner points records what it always did
            del data["inner_eval_seconds"]
        return data

    @classmethod
    def from_json(cls, data: dict | None) -> Compute:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})
