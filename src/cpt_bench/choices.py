"""Closed choices of the config schema (StrEnum: Hydra rejects any other value at compose
time, with the list of allowed ones) and the one-line range check the schema's validate() uses."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from cpt_bench.errors import ConfigError

# member names = values, so files and the command line read the same


class Schedule(StrEnum):
    sequential = "sequential"  # one stage per task
    joint = "joint"  # one stage on the union of all tasks (the multi-task baseline)
    evaluate = "evaluate"  # no training: `checkpoints` trained elsewhere, one per task, evaluated


class KeepCheckpoints(StrEnum):
    all = "all"  # noqa: A003 - every stage's model
    last = "last"  # only the latest (what resume needs)
    none = "none"  # the latest until the sequence ends (resume needs it), then none


class LoggerMode(StrEnum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


class KeepRule(StrEnum):
    solvable = "solvable"  # >= 1 of K rollouts correct (the authors' code)
    nonzero_variance = "nonzero_variance"  # some right, some wrong


class SFTWeighting(StrEnum):
    none = "none"  # every item's loss counts the same
    reward_variance = "reward_variance"  # p(1-p), p the item's success rate over K rollouts
    reward_std = "reward_std"  # sqrt(p(1-p)): what GRPO's group normalisation leaves of the signal


class KLReference(StrEnum):
    base = "base"  # the original base model (the paper)
    previous = "previous"  # the stage's starting checkpoint


class RewardScaling(StrEnum):
    group = "group"
    batch = "batch"
    none = "none"


class RFTEstimator(StrEnum):
    grpo = "grpo"  # TRL's GRPOTrainer: group-mean baseline (the paper's)
    rloo = "rloo"  # TRL's RLOOTrainer: leave-one-out baseline (REINFORCE Leave-One-Out)


class PeftMethod(StrEnum):
    none = "none"  # full fine-tuning
    lora = "lora"  # a LoRA adapter per stage, merged into the weights when the stage ends
    olora = "olora"  # O-LoRA: LoRA whose new adapter is pushed orthogonal to the earlier stages'


class MergeRule(StrEnum):
    linear = "linear"  # (1 - alpha) previous + alpha stage (WiSE-FT)
    task_arithmetic = "task_arithmetic"  # task vectors summed with their weights (peft.utils.merge_utils)
    ties = "ties"  # trimmed to `density`, signs elected, disjoint mean (TIES-merging)
    dare_linear = "dare_linear"  # randomly dropped to `density` and rescaled, then summed
    dare_ties = "dare_ties"  # randomly dropped and rescaled, then TIES' sign election


class TaskVectorsFrom(StrEnum):
    previous = "previous"  # the stage's task vector from the model it started from
    base = "base"  # the previous and the stage's task vectors, both from the original base


class DType(StrEnum):
    auto = "auto"  # bf16 on a GPU that supports it or a CPU with native bf16 (loading.Precision), else fp32
    bf16 = "bf16"  # on a CPU: float32 weights, bf16 autocast (mixed precision)
    fp16 = "fp16"
    fp32 = "fp32"


class GenerationBackend(StrEnum):
    hf = "hf"  # transformers' generate
    vllm = "vllm"  # vLLM's offline engine (optional extra; launcher=torchrun)


class HarnessBackend(StrEnum):
    none = "none"  # the benchmark's own general suite only
    lm_eval = "lm_eval"  # EleutherAI's lm-evaluation-harness (extra `cpt-bench[harness]`)
    lmms_eval = "lmms_eval"  # lmms-eval for vision-language models (extra `cpt-bench[harness-vlm]`)


class VLLMMode(StrEnum):
    colocate = "colocate"  # TRL runs vLLM inside each training process
    server = "server"  # a separate `trl vllm-serve`


class FilterName(StrEnum):
    none = "none"  # train on every item
    rif = "rif"  # RIF-RFT: K rollouts per item before each stage decide which are trained on


class LauncherName(StrEnum):
    local = "local"  # every step in the controller's process
    torchrun = "torchrun"  # every step as a torchrun job; the controller holds no model


class LoggerName(StrEnum):
    wandb = "wandb"  # Weights & Biases (offline by default) beside the plain files
    none = "none"  # plain files only


class SourceFormat(StrEnum):
    auto = "auto"  # detected from the first row (or the dataset's columns)
    sharegpt = "sharegpt"  # LLaMA-Factory's messages + images
    easyr1 = "easyr1"  # EasyR1's problem + answer + images
    native = "native"  # the dataset's own columns


class Grader(StrEnum):
    """How a declared task (benchmark=custom) grades an extracted answer: one rule for SFT's
    targets, GRPO's rewards and evaluation, as for the built-in tasks."""

    exact = "exact"  # equal after lower-casing and collapsing whitespace (the toy tasks' rule)
    numeric = "numeric"  # the last number of the answer equals the reference's (1,234 / 0.5 / 1/2)
    choice = "choice"  # the option picked, by letter ("B", "(B) text") or by its text
    math = "math"  # equivalent expressions (mathruler; its sympy step in a time-limited worker)
    regex = "regex"  # the reference is a regular expression the whole answer must match
    python = "python"  # a function of your own: `entry_point: module:function`


class OrderName(StrEnum):
    default = "default"
    reverse = "reverse"
    shuffled = "shuffled"


def require(ok: bool, key: str, value: Any, rule: str) -> None:
    """One-line error for a value outside its range: `<key> must be <rule>, not <value>`."""
    if not ok:
        raise ConfigError(f"{key} must be {rule}, not {value!r}")
