"""Why does RL forget less? Each explanation the field argues about, tested by its control at
matched gain, with a verdict and the interval behind it (`make study-explain`, docs/study.md).

A run's *role* comes from its config: plain SFT, GRPO with or without its KL term, or one of
the SFT controls (self-SFT, reward-variance-weighted SFT, RIF-filtered SFT). Every comparison
is the matched-gain difference in forgetting (stats.py: one base model's seeds bootstrapped,
or the t-interval over base models when the runs span several), control minus reference, in
points. The words:

  supported            the control forgets less than SFT (the interval of control - SFT is below 0):
                       the mechanism it isolates buys retention on its own
  contradicted         the control forgets more than GRPO and cannot be shown to forget less than SFT:
                       the mechanism alone does not give RL's retention
  not distinguishable  neither; also when a comparison is not estimable (gain ranges that do not
                       overlap) or the runs agree within rounding (no interval)

The KL claim (MLLM-CTBench: GRPO without KL forgets more than SFT) is read from GRPO without
KL minus SFT: supported above 0, contradicted below 0 (without KL GRPO still forgets less, the
paper's finding). RL's Razor's claim (forgetting is predicted by the forward KL on the new
task, E_x~task KL(pi_0 || pi_t)) is read from the drift section's predictor comparison over
every run's stages (report/drift.py): supported when the forward KL on the trained task's
prompts has the highest R^2 with its interval above every other predictor's, contradicted when
another predictor's interval lies above its own, otherwise not distinguishable. Pure
functions of `RunRecord`s.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from cpt_bench.report.decide import HALF_WIDTH, comparison_line, separating_runs
from cpt_bench.report.drift import SHORT, compare_predictors, format_r2, stage_points
from cpt_bench.report.runs import RunRecord, base_model
from cpt_bench.report.stats import Interval, RunPoint, matched_gain_across_bases, matched_gain_ci

SUPPORTED, CONTRADICTED, UNDECIDED, NOT_RUN = "supported", "contradicted", "not distinguishable", "not run"

ROLE_NAMES = {"sft": "SFT", "grpo_kl": "GRPO with KL", "grpo_no_kl": "GRPO without KL", "self_sft": "self-SFT",
              "weighted_sft": "reward-variance-weighted SFT", "rif_sft": "RIF-filtered SFT",
              "forward_kl_task": "forward KL as predictor"}  # RL's Razor's claim is tested by a predictor


def role(run: RunRecord) -> str | None:
    """What a run stands for in the explanation study (ROLE_NAMES), None for anything else (e.g.
    SFT both weighted and filtered, which tests no single explanation)."""
    paradigm = run.paradigm
    filtered = str(run.setting("filter.name") or "none") != "none"
    weighted = str(run.setting("paradigm.weighting") or "none") != "none"
    if paradigm == "rft":
        return None if filtered else ("grpo_kl" if float(run.setting("paradigm.kl_coef") or 0.0) > 0 else "grpo_no_kl")
    if paradigm == "self_sft":
        return None if filtered else "self_sft"
    if paradigm == "sft":
        sft_roles = {(False, False): "sft", (True, False): "rif_sft", (False, True): "weighted_sft"}
        return sft_roles.get((filtered, weighted))
    return None


@dataclass(frozen=True)
class Difference:
    """control - reference in forgetting at matched gain (fractions), with its interval."""

    control: str  # a role
    reference: str
    diff: float
    ci: Interval | None  # None: the runs agree within rounding, or too few base models

    @property
    def below_zero(self) -> bool:
        return self.ci is not None and self.ci.high < 0

    @property
    def above_zero(self) -> bool:
        return self.ci is not None and self.ci.low > 0


@dataclass(frozen=True)
class Verdict:
    explanation: str
    source: str
    control: str  # the role that tests it
    word: str  # SUPPORTED, CONTRADICTED, UNDECIDED or NOT_RUN
    evidence: tuple[Difference, ...]
    reason: str
    notes: str = ""  # evidence that is not a matched-gain difference (the predictor comparison)


@dataclass(frozen=True)
class Claim:
    explanation: str
    source: str
    control: str


CONTROLS = (
    Claim("on-policy data (SFT on the model's own rewarded samples retains as RL does)",
          "Retaining by Doing, arXiv 2510.18874", "self_sft"),
    Claim("reward-variance scaling of RFT's gradient, p(1-p) (an implicit regulariser)",
          "the paper's own theory, arXiv 2507.05386 v2", "weighted_sft"),
    Claim("favouring medium-difficulty items (SFT on difficulty-curated data matches RL)",
          "arXiv 2602.10815", "rif_sft"),
)
KL_CLAIM = Claim("the KL penalty (GRPO without KL forgets more than SFT)", "MLLM-CTBench, arXiv 2508.08275",
                 "grpo_no_kl")
RAZOR_CLAIM = Claim("forgetting follows the forward KL(pi_0 || pi_t) on the new task; RL finds KL-minimal solutions",
                    "RL's Razor, arXiv 2509.04259", "forward_kl_task")


def forgetting_points(runs: Sequence[RunRecord]) -> dict[str, list[RunPoint]]:
    """Each role's sequential runs as (gain, forgetting) points, by role."""
    out: dict[str, list[RunPoint]] = {}
    for run in runs:
        name, gain, y = role(run), run.metrics.get("gain"), run.metrics.get("forgetting")
        if name and not run.joint and gain is not None and y is not None:
            out.setdefault(name, []).append(RunPoint(run.variant, base_model(run.config), gain, y))
    return out


def difference(points: dict[str, list[RunPoint]], control: str, reference: str,
               minimize: bool = True) -> Difference | None:
    """control - reference at matched gain (`minimize`: lower y is better, as forgetting; False
    for general change); None when either has no runs or it is not estimable."""
    a, b = points.get(control), points.get(reference)
    if not a or not b:
        return None
    if len({p.cluster for p in (*a, *b)}) > 1:
        across = matched_gain_across_bases(a, b, minimize_y=minimize)
        if across is None or across.mean_diff is None:
            return None
        return Difference(control, reference, across.mean_diff, across.mean_ci)
    cmp = matched_gain_ci(a, b, minimize_y=minimize)
    if cmp is None or not cmp.estimable:
        return None
    return Difference(control, reference, cmp.mean_diff, cmp.mean_ci)


def verdicts(runs: Sequence[RunRecord]) -> list[Verdict]:
    """One verdict per explanation whose control or reference has runs; [] when there is no SFT
    or no GRPO to explain (then this is not an explanation study)."""
    points = forgetting_points(runs)
    grpo = "grpo_kl" if "grpo_kl" in points else "grpo_no_kl"
    if "sft" not in points or grpo not in points:
        return []
    gap = difference(points, grpo, "sft")
    out = [_control_verdict(points, claim, grpo, gap) for claim in CONTROLS]
    out.append(_kl_verdict(points))
    out.append(razor_verdict(runs))
    return out


def razor_verdict(runs: Sequence[RunRecord]) -> Verdict:
    claim, key = RAZOR_CLAIM, RAZOR_CLAIM.control
    cmp = compare_predictors([p for run in runs for p in stage_points(run)], "forgetting")
    if cmp is None or key not in cmp.r2:
        return Verdict(claim.explanation, claim.source, key, NOT_RUN, (),
                       "the forward KL and another drift measure were not both measured (eval.kl_samples > 0)")
    notes = "; ".join(f"{SHORT[k]} R² {format_r2(r2, True)}" for k, r2 in cmp.r2.items())
    own, best = cmp.r2[key], cmp.r2[cmp.best]
    if cmp.best == key and cmp.distinguishable:
        return Verdict(claim.explanation, claim.source, key, SUPPORTED, (),
                       "the forward KL predicts forgetting better than every other drift measure", notes)
    if cmp.best != key and own.bounds and best.bounds and own.bounds[1] < best.bounds[0]:
        return Verdict(claim.explanation, claim.source, key, CONTRADICTED, (),
                       f"{SHORT[cmp.best]} predicts forgetting better than the forward KL", notes)
    return Verdict(claim.explanation, claim.source, key, UNDECIDED, (),
                   "the forward KL's R² interval overlaps another drift measure's", notes)


def _control_verdict(points, claim: Claim, grpo: str, gap: Difference | None) -> Verdict:
    if claim.control not in points:
        return Verdict(claim.explanation, claim.source, claim.control, NOT_RUN, (), "no runs of the control")
    vs_sft, vs_grpo = difference(points, claim.control, "sft"), difference(points, claim.control, grpo)
    evidence = tuple(d for d in (vs_sft, vs_grpo, gap) if d is not None)
    name = ROLE_NAMES[claim.control]
    if vs_sft is None:
        return Verdict(claim.explanation, claim.source, claim.control, UNDECIDED, evidence,
                       f"{name} and SFT reach no common gain that the resamples agree on: not estimable")
    if vs_sft.below_zero:
        return Verdict(claim.explanation, claim.source, claim.control, SUPPORTED, evidence,
                       f"{name} forgets less than SFT at matched gain")
    if vs_grpo is not None and vs_grpo.above_zero:
        return Verdict(claim.explanation, claim.source, claim.control, CONTRADICTED, evidence,
                       f"{name} forgets more than {ROLE_NAMES[grpo]} and not less than SFT")
    return Verdict(claim.explanation, claim.source, claim.control, UNDECIDED, evidence,
                   f"{name} is not distinguishable from SFT, nor shown to forget more than {ROLE_NAMES[grpo]}")


def _kl_verdict(points) -> Verdict:
    claim = KL_CLAIM
    if "grpo_no_kl" not in points:
        return Verdict(claim.explanation, claim.source, claim.control, NOT_RUN, (), "no runs of GRPO without KL")
    vs_sft = difference(points, "grpo_no_kl", "sft")
    with_kl = difference(points, "grpo_no_kl", "grpo_kl")
    evidence = tuple(d for d in (vs_sft, with_kl) if d is not None)
    if vs_sft is not None and vs_sft.above_zero:
        return Verdict(claim.explanation, claim.source, claim.control, SUPPORTED, evidence,
                       "GRPO without KL forgets more than SFT at matched gain")
    if vs_sft is not None and vs_sft.below_zero:
        return Verdict(claim.explanation, claim.source, claim.control, CONTRADICTED, evidence,
                       "GRPO without KL still forgets less than SFT: the KL term is not what retains (the paper's "
                       "finding)")
    return Verdict(claim.explanation, claim.source, claim.control, UNDECIDED, evidence,
                   "GRPO without KL is not distinguishable from SFT" if vs_sft else
                   "GRPO without KL and SFT reach no common gain that the resamples agree on: not estimable")


def _pts(d: Difference) -> str:
    ci = f" [{100 * d.ci.low:+.1f}, {100 * d.ci.high:+.1f}]" if d.ci else " (no interval: the runs agree)"
    return f"{ROLE_NAMES[d.control]} - {ROLE_NAMES[d.reference]} {100 * d.diff:+.1f}{ci}"


def decide_lines(runs: Sequence[RunRecord], found: Sequence[Verdict], half_width: float = HALF_WIDTH) -> list[str]:
    """For each verdict left open, why and what would decide it: its comparison with SFT (the one
    its word rests on) through decide.py; for RL's Razor, the R² intervals."""
    points, lines = forgetting_points(runs), []
    for v in found:
        if v.word != UNDECIDED:
            continue
        if v.control == RAZOR_CLAIM.control:
            line = razor_line(runs)
        else:
            line = comparison_line(points[v.control], points["sft"], ROLE_NAMES[v.control], "SFT", True, half_width)
        lines.append(f"- {v.explanation}: {line}")
    return lines


def razor_line(runs: Sequence[RunRecord]) -> str:
    """Why RL's Razor's verdict is open (the forward KL's R² interval overlaps the best other
    measure's) and the runs at which the two intervals would part (decide.separating_runs)."""
    cmp = compare_predictors([p for run in runs for p in stage_points(run)], "forgetting")
    key = RAZOR_CLAIM.control
    rival = cmp.best if cmp.best != key else next(iter(cmp.rivals), None)
    own, other = cmp.r2[key], cmp.r2.get(rival) if rival else None
    why = f"why: the forward KL's R² interval overlaps {SHORT[rival]}'s" if rival else "why: an R² has no interval"
    if other is None or own.bounds is None or other.bounds is None:
        return f"{why}; to decide: more runs (the R² intervals are a bootstrap over runs)"
    n = separating_runs(own.bounds, other.bounds, own.runs)
    if n is None:
        return f"{why}, about the same R² ({own.r2:.2f} and {other.r2:.2f}): no number of runs would separate them"
    return (f"{why} ({format_r2(own)} and {format_r2(other)}, {own.runs} runs); to decide: about {n} runs, "
            "if the intervals narrow as 1/√runs about where they are now")


ON_POLICY_SHARE = 0.5  # below it, self-SFT trained mostly on reference text


def on_policy_note(runs: Sequence[RunRecord]) -> str:
    """How much of self-SFT's training text was its own: the share of its trained rows whose text
    differs from SFT's target for the same item, over its runs' stages (stage.json `rollouts`);
    a warning when it is mostly reference text. "" without self-SFT runs that recorded it."""
    shares = [r.off_reference for run in runs if role(run) == "self_sft"
              for r in run.rollouts.values() if r.off_reference is not None]
    if not shares:
        return ""
    share = statistics.fmean(shares)
    note = (f"Self-SFT's trained rows differed from SFT's target for the same item in {100 * share:.0f} % of rows "
            f"(mean over {len(shares)} stages of its runs).")
    if share < ON_POLICY_SHARE:
        note += (" **It trained mostly on reference text**: its correct samples were the reference strings, so here "
                 "it is close to SFT on the items the model can already solve (RIF-filtered SFT), not an on-policy "
                 "control. Sampling at a higher `paradigm.rollout_temperature` (GRPO's and self-SFT's alike, so that "
                 "neither is off-policy to the other) makes its rows the model's own.")
    return note


def explain_section(runs: Sequence[RunRecord], half_width: float = HALF_WIDTH) -> str:
    """The report's "Why does RL forget less?" section; "" when the runs are not such a study."""
    found = verdicts(runs)
    if not found:
        return ""
    open_lines = decide_lines(runs, found, half_width)
    rows = [f"| {v.explanation} | {v.source} | {ROLE_NAMES[v.control]} | **{v.word}**: {v.reason} | "
            f"{'; '.join([*(_pts(d) for d in v.evidence), *([v.notes] if v.notes else [])]) or '-'} |"
            for v in found]
    return "\n".join([
        "## Why does RL forget less?", "",
        "Each explanation is tested by its control, at matched gain: the difference in forgetting "
        "(points, positive = the first forgets more) averaged over the gains both reach, with its 95 % "
        "interval (as in the matched-gain section). *Supported*: the control forgets less than SFT. "
        "*Contradicted*: the control forgets more than GRPO and is not shown to forget less than SFT. For the "
        "KL claim, *supported* means GRPO without KL forgets more than SFT and *contradicted* that it still "
        "forgets less. For RL's Razor, *supported* means the forward KL on the trained task's prompts predicts "
        "forgetting best (its R² interval above every other drift measure's, over every run's stages; the drift "
        "section), *contradicted* that another measure's lies above it. Otherwise *not distinguishable*, which is "
        "not the same as equal.", "",
        "| explanation | source | control | verdict | evidence (forgetting at matched gain, pts; R² over stages) |",
        "|---|---|---|---|---|",
        *rows,
        *(["", f"What would decide the open verdicts (the control against SFT; ±{100 * half_width:.1f} points "
           "planned):", "", *open_lines] if open_lines else []),
        *(["", note] if (note := on_policy_note(runs)) else []),
    ])
