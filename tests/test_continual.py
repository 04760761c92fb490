"""The classic continual-learning methods' defining properties, on hand-made tensors and modules:
EWC's and L2's penalty and gradient, LwF's distillation term, the merge rules, O-LoRA's overlap,
how a term joins a trainer's loss, the settings' refusals and what the report calls each run.
(The runs themselves: test_continual_runs.py.)"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from cpt_bench.choices import MergeRule, TaskVectorsFrom
from cpt_bench.config import validate
from cpt_bench.continual.ewc import Anchor
from cpt_bench.continual.lwf import distillation_kl, training_sequences
from cpt_bench.continual.merge import MergeSettings, merge_checkpoints, merged_tensor
from cpt_bench.continual.olora import module_key, overlap
from cpt_bench.errors import ConfigError
from cpt_bench.paradigms.loss_terms import LossTerm, with_loss_terms
from cpt_bench.report.continual import arm
from cpt_bench.report.runs import RunRecord, variant_labels

from conftest import compose_config


def small_module(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))


@pytest.mark.parametrize("with_fisher", [True, False])
def test_the_penalty_and_its_gradient_equal_a_direct_computation(with_fisher):
    model = small_module()
    fisher = {n: torch.rand(p.shape) for n, p in model.named_parameters()} if with_fisher else None
    term = Anchor("p", model, strength=3.0, fisher=fisher)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    value = term(model, {})
    value.backward()
    f = fisher or {n: torch.ones_like(t) for n, t in start.items()}
    expected = 0.5 * 3.0 * sum((f[n] * (p.detach() - start[n]) ** 2).sum() for n, p in model.named_parameters())
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    for n, p in model.named_parameters():  # d/dtheta = strength * F * (theta - theta*)
        torch.testing.assert_close(p.grad, 3.0 * f[n] * (p.detach() - start[n]))
    assert term.values == [pytest.approx(expected.item(), rel=1e-6)]
    assert term.diagnostics() == {"p": pytest.approx(expected.item(), rel=1e-6),  # and before the strength:
                                  "p_unscaled": pytest.approx(expected.item() / 3.0, rel=1e-6)}


def test_the_penalty_is_zero_at_the_anchor_and_refuses_a_fisher_that_misses_a_weight():
    model = small_module()
    assert Anchor("p", model, 5.0)(model, {}).item() == 0.0
    partial = {n: torch.ones(p.shape) for n, p in list(model.named_parameters())[:1]}
    with pytest.raises(ValueError, match="no entry for 3 trained weights"):
        Anchor("p", model, 1.0, partial)


def test_distillation_is_the_kl_from_the_previous_model_at_the_masked_positions():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 0]], dtype=torch.bool)
    assert distillation_kl(teacher, teacher, mask, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    t, s = torch.log_softmax(teacher[:, :-1], -1), torch.log_softmax(student[:, :-1], -1)
    per_position = (t.exp() * (t - s)).sum(-1)
    assert distillation_kl(student, teacher, mask, 1.0).item() == pytest.approx(per_position[mask].mean().item())
    t2, s2 = torch.log_softmax(teacher[:, :-1] / 2, -1), torch.log_softmax(student[:, :-1] / 2, -1)
    softened = 4 * (t2.exp() * (t2 - s2)).sum(-1)[mask].mean()
    assert distillation_kl(student, teacher, mask, 2.0).item() == pytest.approx(softened.item())


def test_distillation_reads_sfts_answer_tokens_and_grpos_completion_tokens():
    sft = {"input_ids": torch.tensor([[5, 6, 7, 8]]), "attention_mask": torch.ones(1, 4),
           "labels": torch.tensor([[-100, -100, 7, 8]])}
    forward, ids, mask = training_sequences(sft)
    assert set(forward) == {"input_ids", "attention_mask"} and mask.tolist() == [[False, True, True]]
    grpo = {"prompt_ids": torch.tensor([[1, 2, 3]]), "prompt_mask": torch.ones(1, 3, dtype=torch.long),
            "completion_ids": torch.tensor([[4, 5, 0]]), "completion_mask": torch.tensor([[1, 1, 0]])}
    forward, ids, mask = training_sequences(grpo)
    assert ids.tolist() == [[1, 2, 3, 4, 5, 0]]
    assert forward["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0]]
    assert mask.tolist() == [[False, False, True, True, False]]  # the logits that predict 4 and 5


class _Trainer:
    """What `with_loss_terms` reads of a transformers Trainer."""

    model_accepts_loss_kwargs, compute_loss_func, current_gradient_accumulation_steps = True, None, 4

    class accelerator:  # noqa: N801
        unwrap_model = staticmethod(lambda model: model)

    def __init__(self, scaled: bool | None):
        self.loss_is_scaled_for_ga = scaled

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs.pop("consumed")
        return torch.tensor(1.0)


class _Constant(LossTerm):
    name = "two"

    def value(self, model, inputs):
        assert "consumed" in inputs  # the term sees the batch as the trainer got it
        return torch.tensor(2.0)


@pytest.mark.parametrize("scaled, expected", [(True, 1.5), (False, 3.0), (None, 1.5)])
def test_a_term_counts_once_per_optimizer_step_whether_or_not_the_trainer_divides_its_loss(scaled, expected):
    """A trainer whose loss is already divided over its 4 accumulation steps (GRPO; SFT given the
    window's token count) gets the term divided too; otherwise transformers divides both."""
    trainer = with_loss_terms(_Trainer, [_Constant()])(scaled)
    loss = trainer.compute_loss(None, {"consumed": 1}, num_items_in_batch=None if scaled is False else 10)
    assert loss.item() == expected


def test_no_terms_leave_the_trainer_class_as_it_is():
    assert with_loss_terms(_Trainer, []) is _Trainer


def test_a_linear_merge_at_alpha_0_or_1_gives_either_side_exactly():
    torch.manual_seed(0)
    prev, stage = torch.randn(50).to(torch.bfloat16), torch.randn(50).to(torch.bfloat16)
    for alpha, side in ((0.0, prev), (1.0, stage)):
        assert torch.equal(merged_tensor(prev, stage, None, MergeSettings(alpha=alpha)), side)
    half = merged_tensor(prev, stage, None, MergeSettings(alpha=0.5))
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half, ((prev.float() + stage.float()) / 2).to(torch.bfloat16))


@pytest.mark.slow  # over a second of CPU: the fast tier stays the one-minute loop
def test_the_task_vector_rules_are_peft_s_on_vectors_from_the_previous_model_or_the_base():
    torch.manual_seed(1)
    base, prev, stage = torch.randn(200), torch.randn(200), torch.randn(200)
    for origin in TaskVectorsFrom:  # task arithmetic is linear interpolation either way
        cfg = MergeSettings(rule=MergeRule.task_arithmetic, alpha=0.3, task_vectors_from=origin)
        torch.testing.assert_close(merged_tensor(prev, stage, base, cfg), 0.7 * prev + 0.3 * stage)
    ties = merged_tensor(prev, stage, None, MergeSettings(rule=MergeRule.ties, alpha=1.0, density=0.25))
    moved = (ties - prev).abs() > 1e-6  # one task vector: TIES keeps its largest quarter
    assert moved.sum().item() == 50
    assert (stage - prev).abs()[moved].min() >= (stage - prev).abs()[~moved].max()


def test_ties_from_the_base_trims_elects_signs_and_averages_as_worked_out_by_hand():
    base = torch.zeros(4)
    prev, stage = torch.tensor([3.0, -1.0, 2.0, 0.5]), torch.tensor([1.0, 2.0, -4.0, 0.5])
    cfg = MergeSettings(rule=MergeRule.ties, alpha=0.25, density=0.5, task_vectors_from=TaskVectorsFrom.base)
    # trim to the largest half of each task vector: [3, 0, 2, 0] and [0, 2, -4, 0]; elected signs
    # (of their sum [3, 2, -2, 0], 0 counted positive): + + - +; weighted by 1 - alpha and alpha:
    # [2.25, 0, 1.5, 0] and [0, 0.5, -1, 0]; each entry the mean of the weighted values that agree
    # with its sign: [2.25, 0.5, -1, 0] (entry 3: the previous model's +1.5 is against the elected -)
    assert merged_tensor(prev, stage, base, cfg).tolist() == [2.25, 0.5, -1.0, 0.0]


@pytest.mark.parametrize("rule", [MergeRule.dare_linear, MergeRule.dare_ties])
def test_dare_drops_entries_at_random_and_rescales_the_kept_ones_by_one_over_the_density(rule):
    torch.manual_seed(2)
    prev, stage = torch.randn(2000), torch.randn(2000)
    vector = stage - prev
    full = merged_tensor(prev, stage, None, MergeSettings(rule=rule, alpha=1.0, density=1.0))
    torch.testing.assert_close(full, stage)  # nothing dropped: the stage itself
    got = merged_tensor(prev, stage, None, MergeSettings(rule=rule, alpha=1.0, density=0.3)) - prev
    kept = got.abs() > 1e-6
    torch.testing.assert_close(got[kept], vector[kept] / 0.3)  # kept entries rescaled, the rest dropped
    assert 0.25 < kept.float().mean().item() < 0.35  # about `density` of them kept


def test_merging_checkpoint_folders_merges_every_weight_and_copies_the_rest(tmp_path):
    for name, value in (("prev", 0.0), ("stage", 2.0)):
        (tmp_path / name).mkdir()
        weights = {"a": torch.full((3,), value), "steps": torch.tensor([7])}
        save_file(weights, str(tmp_path / name / "model.safetensors"))
        (tmp_path / name / "config.json").write_text(f'{{"from": "{name}"}}')
    merge_checkpoints(str(tmp_path / "prev"), tmp_path / "stage", tmp_path / "out", MergeSettings(alpha=0.25))
    out = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert out["a"].tolist() == [0.5] * 3 and out["steps"].tolist() == [7]
    assert (tmp_path / "out" / "config.json").read_text() == '{"from": "stage"}'


def test_o_lora_s_overlap_is_zero_for_orthogonal_subspaces_and_grows_with_shared_directions():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(16, 16))
    rows = q.T  # orthonormal rows
    assert overlap({"m": rows[:4]}, {"m": rows[4:8]}).item() == pytest.approx(0.0, abs=1e-10)
    assert overlap({"m": rows[:4]}, {"m": rows[3:7]}).item() == pytest.approx(1.0, abs=1e-5)  # one shared row
    assert overlap({}, {"m": rows[4:8]}).item() == 0.0
    with pytest.raises(ValueError, match="target_modules changed"):
        overlap({"other": rows[:4]}, {"m": rows[4:8]})


def test_o_lora_finds_peft_s_down_projections_by_module():
    assert module_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight") == \
        "model.layers.0.self_attn.q_proj"
    assert module_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight") == \
        "model.layers.0.self_attn.q_proj"
    assert module_key("base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight") is None


@pytest.mark.parametrize("overrides, message", [
    (["cl=ewc", "deepspeed=zero3"], "cl=ewc is not supported with deepspeed=zero3"),
    (["cl=l2", "peft=lora"], "cl=l2 penalises full weights and peft=lora"),
    (["cl=ewc", "schedule=joint"], "schedule=joint has one stage"),
    (["cl=lwf", "deepspeed=zero3"], "cl=lwf is not supported with deepspeed=zero3"),
    (["cl=lwf", "paradigm=rft", "paradigm.kl_reference=previous"], "counts the same term twice"),
    (["cl=lwf", "paradigm=rft", "peft=lora"], "counts the same term twice"),
    (["cl=merge", "cl.alpha=1.5"], "cl.alpha must be in [0, 1], not 1.5"),
    (["cl=merge", "cl.rule=ties", "cl.density=0"], "cl.density must be in (0, 1]"),
    (["cl=ewc", "cl.decay=2"], "cl.decay must be in [0, 1]"),
    (["cl=ewc", "cl.strength=-1"], "cl.strength must be >= 0"),
    (["cl=lwf", "cl.temperature=0"], "cl.temperature must be > 0"),
    (["peft=olora", "peft.orthogonality=-1"], "peft.orthogonality must be >= 0"),
    (["peft=olora", "deepspeed=zero3"], "peft=olora is not supported with ZeRO-3"),
    (["cl=merge", "schedule=evaluate"], "schedule=evaluate trains nothing, so cl=merge would do nothing"),
])
def test_a_combination_a_method_cannot_run_fails_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        validate(compose_config(*overrides))


def test_rfts_own_kl_to_the_base_composes_with_lwf():
    assert validate(compose_config("cl=lwf", "paradigm=rft")).cl.name == "lwf"


def test_each_method_s_settings_set_its_runs_apart_in_the_report():
    configs = [{"paradigm": {"name": "sft"}, "cl": {"name": "none"}, "seed": 0},
               {"paradigm": {"name": "sft"}, "cl": {"name": "ewc", "strength": 1000.0}, "seed": 0},
               {"paradigm": {"name": "sft"}, "cl": {"name": "ewc", "strength": 10.0}, "seed": 0}]
    labels = variant_labels(configs)
    assert len(set(labels)) == 3 and "cl=ewc" in labels[1] and "strength=1000" in labels[1]


@pytest.mark.parametrize("config, expected", [
    ({"paradigm": {"name": "sft"}, "cl": {"name": "ewc"}}, ("SFT", "ewc")),
    ({"paradigm": {"name": "rft"}, "cl": {"name": "none"}, "replay": {"fraction": 0.25}}, ("GRPO", "replay")),
    ({"paradigm": {"name": "rft"}, "cl": {"name": "merge"}, "replay": {"fraction": 0.25}}, ("GRPO", "merge+replay")),
    ({"paradigm": {"name": "sft"}, "cl": {"name": "none"}, "peft": {"name": "olora"}}, ("SFT", "olora")),
    ({"paradigm": {"name": "sft"}, "cl": {"name": "none"}, "filter": {"name": "rif"}}, None),
    ({"paradigm": {"name": "self_sft"}, "cl": {"name": "ewc"}}, None),
])
def test_the_report_names_each_run_by_its_paradigm_and_method(config, expected):
    run = RunRecord(path=None, status="finished", config=config, seed=0, metrics={}, matrix=[], order=[], general=[],
                    compute=None)
    assert arm(run) == expected
