"""Composition, the schema's strictness, the CLI's help and its one-line input errors."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib import resources

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from cpt_bench.run.plan import plan
from cpt_bench.tasks import ConfigError

from conftest import REPO, run_cli
from conftest import compose_config as composed

GROUPS = ["paradigm", "benchmark", "order", "model", "deepspeed", "logger", "filter", "launcher", "peft", "cl"]


def options(group: str) -> list[str]:
    folder = resources.files("cpt_bench.conf") / group
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_config_option_composes_and_plans(group, option):
    cfg = composed(f"{group}={option}")
    # a sized variant of a paradigm (sft_smollm2) reports under the paradigm's own name
    assert cfg[group].name == option or (group == "paradigm" and option.startswith(f"{cfg[group].name}_"))
    plan(cfg)  # validation of the composed config passes


SWEEP_PRESETS = [p for p in options("experiment") if not p.startswith("paper_")]  # paper_*: single runs


@pytest.mark.parametrize("preset", SWEEP_PRESETS)
def test_every_sweep_preset_composes_into_a_sweep(preset):
    cfg = composed(f"+experiment={preset}", hydra=True)
    params = cfg.hydra.sweeper.params
    assert params and "seed" in params, "every preset sweeps seeds"
    for override in params:  # each swept key exists in the composed config (or is a group, maybe appended)
        appended = override.startswith("+") and set(str(params[override]).split(",")) <= set(options(override[1:]))
        assert appended or override in GROUPS + ["schedule", "cot", "seed"] \
            or OmegaConf.select(cfg, override) is not None, override
    plan(cfg)


@pytest.mark.parametrize("strategy,schedule,fraction", [("sequential", "sequential", 0.0),
                                                        ("replay", "sequential", 0.25), ("joint", "joint", 0.0)])
def test_each_continual_strategy_sets_schedule_and_replay(strategy, schedule, fraction):
    cfg = composed(f"+strategy={strategy}", "paradigm=rft")
    assert (cfg.schedule, cfg.replay.fraction) == (schedule, fraction)
    plan(cfg)


def test_defaults():
    cfg = composed()
    assert (cfg.paradigm.name, cfg.benchmark.name, cfg.order.name, cfg.model.name) == ("sft", "toy", "default", "tiny")
    assert (cfg.deepspeed.name, cfg.logger.name, cfg.logger.mode) == ("none", "wandb", "offline")


@pytest.mark.parametrize(
    "override",
    ["paradigm.lerning_rate=0.1", "benchmark.test_sise=3", "order.task=[add]", "logger.mdoe=online", "sed=3"],
)
def test_a_misspelt_key_fails_at_compose_time(override):
    with pytest.raises(ConfigCompositionException):
        composed(override)


@pytest.mark.parametrize("override", ["paradigm.learning_rate=fast", "benchmark.test_size=many", "seed=x"])
def test_a_wrongly_typed_value_fails_at_compose_time(override):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        composed(override)


@pytest.mark.parametrize(
    "overrides,order",
    [
        ([], ["add", "reverse", "count", "max", "sort", "sub", "shift"]),
        (["order=reverse"], ["shift", "sub", "sort", "max", "count", "reverse", "add"]),
        (["order.tasks=[sort,add]"], ["sort", "add"]),
    ],
)
def test_orders(overrides, order):
    assert plan(composed(*overrides)).order == order


def test_shuffled_order_depends_on_its_own_seed_only():
    a = plan(composed("order=shuffled", "order.seed=1", "seed=5")).order
    b = plan(composed("order=shuffled", "order.seed=1", "seed=6")).order
    c = plan(composed("order=shuffled", "order.seed=2")).order
    assert a == b and sorted(a) == sorted(c) and a != c


@pytest.mark.parametrize(
    "override,message",
    [
        ("order.tasks=[add,nope]", "unknown task 'nope'"),
        ("order.tasks=[add,add]", "appears twice"),
        ("order.tasks=[]", "order is empty"),
    ],
)
def test_bad_orders_are_one_line_errors_listing_valid_tasks(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        plan(composed(override))
    assert "add, reverse, count, max, sort, sub, shift" in str(err.value)


@pytest.mark.slow
def test_cli_bad_order_fails_fast_with_one_line(tmp_path):
    res = run_cli("order.tasks=[add,nope]", f"hydra.run.dir={tmp_path / 'run'}",
                  f"model.cache_dir={tmp_path / 'cache'}", "logger=none")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert lines[-1] == ("cpt-bench: error: unknown task 'nope' in the order; "
                         "valid tasks: add, reverse, count, max, sort, sub, shift")
    assert not (tmp_path / "cache").exists(), "no model may be built for a bad config"


@pytest.mark.slow
def test_cli_help_and_cfg_job():
    res = run_cli("--help")
    assert res.returncode == 0
    for text in ["cpt-bench", "paradigm: rft, rft_smollm2, self_sft, sft, sft_smollm2",
                 "order: default, reverse, shuffled", "filter: none, rif",
                 "experiment: ablation_cot, ablation_estimator, ablation_kl, ablation_rif, cl_methods, compare, "
                 "explain, lora, paper_rft",
                 "peft: lora, none, olora", "cl: ewc, l2, lwf, merge, none", "strategy: joint, replay, sequential",
                 "-m seed=1,2"]:
        assert text in res.stdout, text
    for text in ["deepspeed: none, zero2, zero3, zero3_offload", "benchmark: custom, mllm_cl7, natural, toy",
                 "hydra/launcher: basic, joblib, slurm", "cpt-bench paradigm=rft --help",
                 "model: qwen2_5_0_5b_instruct, qwen2_5_vl_3b, qwen2_5_vl_7b, smollm2_135m, smollm2_135m_aligned, "
                 "tiny"]:
        assert text in res.stdout
    groups = res.stdout.split("== Config groups ==")[1].split("== Config ==")[0]
    assert "schema" not in groups, "only real choices are listed"
    assert "kl_coef:" not in res.stdout and "kl_coef: 0.01" in run_cli("paradigm=rft", "--help").stdout  # as it says
    res = run_cli("--cfg", "job", "paradigm.learning_rate=0.01")
    assert res.returncode == 0 and "learning_rate: 0.01" in res.stdout


@pytest.mark.slow
def test_wheel_ships_the_configs(tmp_path):
    """A non-editable install finds its configs: they are inside the package."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("cpt_bench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"cpt_bench/conf/{p.relative_to(REPO / 'conf')}" for p in (REPO / "conf").rglob("*.yaml")}
    assert expected <= names and "cpt_bench/conf/__init__.py" in names
    assert "cpt_bench/conf/paradigm/sft.yaml" in names


# --- values checked where they are declared ---------------------------------------------------

INVALID = [
    (["paradigm.learning_rate=-1"], "paradigm.learning_rate must be > 0, not -1.0"),
    (["paradigm.epochs=0"], "paradigm.epochs must be > 0, not 0.0"),
    (["paradigm.per_device_batch_size=0"], "paradigm.per_device_batch_size must be > 0, not 0"),
    (["paradigm.max_steps=0"], "paradigm.max_steps must be -1 (no cap) or > 0, not 0"),
    (["+paradigm.epochs_per_task.add=0"], "paradigm.epochs_per_task.add must be > 0, not 0"),
    (["paradigm=rft", "paradigm.temperature=-1"], "paradigm.temperature must be > 0, not -1.0"),
    (["paradigm=rft", "paradigm.top_p=1.5"], "paradigm.top_p must be in (0, 1], not 1.5"),
    (["paradigm=rft", "paradigm.num_generations=1"], "paradigm.num_generations must be >= 2"),
    (["eval.batch_size=0"], "eval.batch_size must be > 0, not 0"),
    (["eval.max_new_tokens=0"], "eval.max_new_tokens must be > 0, not 0"),
    (["benchmark.train_size=0"], "benchmark.train_size must be > 0, not 0"),
    (["benchmark.test_size=0"], "benchmark.test_size must be > 0, not 0"),
    (["benchmark=mllm_cl7", "benchmark.max_test=0"], "benchmark.max_test must be > 0 or null"),
    (["filter=rif", "filter.keep=nonzero_variance", "filter.num_rollouts=1"], "filter.num_rollouts must be >= 2"),
    (["threads=0"], "threads must be > 0 or null, not 0"),
    (["paradigm.name=ppo"], "unknown paradigm 'ppo'; available: rft, self_sft, sft"),
    (["model.builtin=huge"], "unknown built-in model 'huge'; available: tiny, smollm2_135m"),
    (["model.path=/nonexistent"], "model.path=/nonexistent would be ignored: model=tiny is the built-in model"),
    (["model.builtin=null", "model.path=/nonexistent"], "model.path /nonexistent does not exist"),
    (["benchmark.name=nope"], "unknown benchmark 'nope'; available: toy, natural, mllm_cl7"),
    (["schedule=evaluate", "order.tasks=[max,sort]"],
     "schedule=evaluate needs checkpoints=[...] with one folder per task of the order (2: max, sort), not 0"),
    (["schedule=evaluate", "order.tasks=[max,sort]", "checkpoints=[/a]"], "(2: max, sort), not 1"),
    (["schedule=evaluate", "order.tasks=[max]", "checkpoints=[/no/such/folder]"],
     "checkpoint 1 (after task 'max') is not a model folder: /no/such/folder"),
    (["schedule=evaluate", "order.tasks=[max]", "checkpoints=[/a]", "filter=rif"],
     "schedule=evaluate trains nothing, so it filters nothing: drop filter=rif"),
    (["checkpoints=[/a]"], "checkpoints are only read with schedule=evaluate, not schedule=sequential"),
    (["replay.fraction=1"], "replay.fraction must be in [0, 1), not 1.0"),
    (["peft=lora", "peft.r=0"], "peft.r must be > 0, not 0"),
    (["peft=lora", "peft.dropout=1"], "peft.dropout must be in [0, 1), not 1.0"),
    (["peft=lora", "deepspeed=zero3"], "peft=lora is not supported with ZeRO-3 here"),
    (["replay.fraction=0.2", "replay.max_items=0"], "replay.max_items must be > 0 or null, not 0"),
    (["replay.fraction=0.2", "schedule=joint"], "replay.fraction applies to schedule=sequential, not schedule=joint"),
    # a setting its choice does not read is refused, never recorded as used (config/ignored.py)
    (["order=reverse", "order.tasks=[add,sort]"],
     "order.tasks=[add,sort] is an explicit order, which order=reverse would not draw"),
    (["order=shuffled", "order.tasks=[add,sort]"], "which order=shuffled would not draw"),
    (["order.seed=3"], "order.seed=3 draws order=shuffled only; this order is order=default"),
    (["filter.num_rollouts=4"], "filter.num_rollouts=4 applies to filter=rif, not filter=none"),
    (["peft.r=8"], "peft.r=8 applies to peft=lora or olora, not peft=none"),
    (["peft=lora", "peft.orthogonality=1"], "peft.orthogonality=1.0 applies to peft=olora, not peft=lora"),
    (["replay.max_items=5"], "replay.max_items=5 needs replay.fraction > 0"),
    (["eval.harness.tasks=[arc_easy]"], "eval.harness.tasks=[arc_easy] needs eval.harness.backend=lm_eval"),
]


@pytest.mark.parametrize("overrides,message", INVALID, ids=[" ".join(o) for o, _ in INVALID])
def test_invalid_values_are_one_line_config_errors(overrides, message):
    with pytest.raises(ConfigError) as err:
        plan(composed(*overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


CLOSED = [("schedule", "sequential, joint, evaluate"), ("checkpoint.keep", "all, last, none"),
          ("logger.mode", "offline, online, disabled"), ("model.dtype", "auto, bf16, fp16, fp32"),
          ("order.name", "default, reverse, shuffled"), ("logger.name", "wandb, none"),
          ("filter.name", "none, rif"), ("launcher.name", "local, torchrun")]


@pytest.mark.parametrize("key,allowed", [*CLOSED, ("paradigm.kl_reference", "base, previous"),
                                         ("paradigm.estimator", "grpo, rloo"),
                                         ("paradigm.scale_rewards", "group, batch, none"),
                                         ("filter.keep", "solvable, nonzero_variance")])
def test_closed_choices_are_rejected_at_compose_time(key, allowed):
    group = {"paradigm": "paradigm=rft", "filter": "filter=rif"}.get(key.split(".")[0])
    with pytest.raises(ConfigCompositionException) as err:
        composed(*([group] if group else []), f"{key}=bogus")
    assert f"Invalid value 'bogus', expected one of [{allowed}]" in str(err.value.__cause__)


@pytest.mark.slow
@pytest.mark.parametrize("override,message", [
    ("paradigm.learning_rate=-1", "paradigm.learning_rate must be > 0, not -1.0"),
    ("benchmark.train_size=0", "benchmark.train_size must be > 0, not 0"),
    ("model.path=/nonexistent", "model.path=/nonexistent would be ignored: model=tiny is the built-in model 'tiny'; "
                                "to load a folder or hub id add model.builtin=null"),
])
def test_cli_invalid_value_fails_in_one_line_before_any_model(tmp_path, override, message):
    res = run_cli(override, f"hydra.run.dir={tmp_path / 'run'}", f"model.cache_dir={tmp_path / 'cache'}",
                  "logger=none")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == f"cpt-bench: error: {message}"
    assert not (tmp_path / "cache").exists(), "no model may be built for a bad config"
