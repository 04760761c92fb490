"""Settings that a run would silently ignore, refused in one line before any model.

A value given for a node its choice does not read (`filter.keep` under `filter=none`, `order.tasks`
beside `order=reverse`) would be recorded in run.json as if it had been used, and a report over
such runs would group them by a setting that changed nothing. Each rule compares with the
schema's default, so a preset that spells a default out stays valid, and what a valid run records
is unchanged (the recorded config decides whether a run directory resumes). `checkpoints`
without schedule=evaluate is refused by the run's plan (run/plan.py)."""

from __future__ import annotations

from dataclasses import fields

from cpt_bench.choices import FilterName, HarnessBackend, OrderName, PeftMethod
from cpt_bench.errors import ConfigError


def _default(node):
    """The schema's default instance of a dataclass node (its own type, built with no arguments)."""
    return type(node)()


def _changed(node, skip: tuple[str, ...] = ("name",)) -> list[str]:
    """The fields of a dataclass node that differ from its schema's default."""
    default = _default(node)
    return [f.name for f in fields(node) if f.name not in skip and getattr(node, f.name) != getattr(default, f.name)]


def _show(value) -> str:
    return f"[{','.join(map(str, value))}]" if isinstance(value, list | tuple) else str(value)


def refuse_ignored(cfg) -> None:
    """`cfg`: the typed `Config` (its validate() calls this; the schemas import this module)."""
    order = cfg.order
    if order.tasks is not None and order.name != OrderName.default:
        raise ConfigError(f"order.tasks={_show(order.tasks)} is an explicit order, which order={order.name} would "
                          f"not draw: drop one of them (run.json would record order.name={order.name})")
    if order.seed != _default(order).seed and (order.name != OrderName.shuffled or order.tasks is not None):
        raise ConfigError(f"order.seed={order.seed} draws order=shuffled only; this order is "
                          f"{'order.tasks' if order.tasks is not None else f'order={order.name}'}")
    if cfg.filter.name == FilterName.none and (changed := _changed(cfg.filter)):
        key = changed[0]
        raise ConfigError(f"filter.{key}={_show(getattr(cfg.filter, key))} applies to filter=rif, "
                          "not filter=none")
    if cfg.peft.name == PeftMethod.none and (changed := _changed(cfg.peft)):
        key = changed[0]
        raise ConfigError(f"peft.{key}={_show(getattr(cfg.peft, key))} applies to peft=lora or olora, "
                          "not peft=none")
    if cfg.peft.name == PeftMethod.lora and cfg.peft.orthogonality != _default(cfg.peft).orthogonality:
        raise ConfigError(f"peft.orthogonality={cfg.peft.orthogonality} applies to peft=olora, not peft=lora")
    if cfg.replay.max_items is not None and not cfg.replay.fraction:
        raise ConfigError(f"replay.max_items={cfg.replay.max_items} needs replay.fraction > 0 (no item is "
                          "replayed at 0)")
    harness = cfg.eval.harness
    if harness.backend == HarnessBackend.none and harness.tasks:
        raise ConfigError(f"eval.harness.tasks={_show(harness.tasks)} needs eval.harness.backend=lm_eval or "
                          "lmms_eval (none runs no harness)")
